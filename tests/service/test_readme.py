"""The README's curl examples and client snippet work when pasted (against the test
server's models: "tiny-ff" for /forces and /md, "tiny-nbody" for /trajectory)."""

import json
import re
from pathlib import Path

import httpx

README = Path(__file__).resolve().parents[2] / "README.md"
TEST_MODEL = {"forces": "tiny-ff", "md": "tiny-ff", "trajectory": "tiny-nbody"}
CURL = re.compile(r"/v1/models/[\w.-]+/(\w+) \\\n.*?\n\s+-d '(\{.*?\})'", re.DOTALL)


def test_readme_curl_bodies_are_answered(server_url: str) -> None:
    examples = CURL.findall(README.read_text())
    assert {endpoint for endpoint, _ in examples} == set(TEST_MODEL)
    for endpoint, body in examples:
        url = f"{server_url}/v1/models/{TEST_MODEL[endpoint]}/{endpoint}"
        response = httpx.post(url, json=json.loads(body), timeout=30)
        assert response.status_code == 200, (endpoint, response.text)
        out = response.json()
        assert out["units"], endpoint
        if endpoint == "forces":
            assert out["units"]["energy"] == "eV" and len(out["forces"]) == 3


def test_readme_client_snippet_runs(server_url: str) -> None:
    text = README.read_text()
    start = text.index("from hegnn_serve.service.client import HEGNNClient\n\nwater")
    code = text[start : text.index("```", start)]
    code = code.replace("http://127.0.0.1:8000", server_url)
    code = code.replace('"md17-ethanol-ff-hegnn"', '"tiny-ff"')
    code = code.replace("steps=200", "steps=4").replace("every=10", "every=2")
    exec(compile(code, "README.md", "exec"), {"print": lambda *args: None})
