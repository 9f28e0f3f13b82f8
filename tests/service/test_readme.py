"""The README's curl example works when pasted (against the test server's model)."""

import json
import re
from pathlib import Path

import httpx

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_curl_body_is_answered(server_url: str) -> None:
    body = re.search(r"-d '(\{.*?\})'", README.read_text()).group(1)
    response = httpx.post(
        f"{server_url}/v1/models/tiny-ff/forces", json=json.loads(body), timeout=30
    )
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["units"]["energy"] == "eV" and len(out["forces"]) == 3
