"""API keys: off by default; when HEGNN_API_KEYS is set, /v1 needs a Bearer key."""

from collections.abc import Iterator

import httpx
import pytest

from .conftest import POTENTIAL, make_settings, running_server

KEYS = ["first-key", "second-key"]
WATER = {"numbers": [8, 1], "positions": [[0, 0, 0], [0, 0, 0.97]]}


@pytest.fixture(scope="module")
def secured(checkpoint_dir) -> Iterator[str]:
    with running_server(make_settings(checkpoint_dir, api_keys=KEYS)) as url:
        yield url


def test_without_keys_no_auth_is_needed(http) -> None:
    assert http.get("/v1/models").status_code == 200
    response = http.post(f"/v1/models/{POTENTIAL}/forces", json=WATER)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", "Bearer first-key-and-more", "Basic Zmlyc3Qta2V5", ""],
)
@pytest.mark.parametrize(
    "method, path", [("GET", "/v1/models"), ("POST", f"/v1/models/{POTENTIAL}/forces")]
)
def test_a_missing_or_wrong_key_is_refused(
    secured, authorization, method: str, path: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = httpx.request(method, secured + path, json=WATER, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]


@pytest.mark.parametrize("key", KEYS)
def test_each_configured_key_is_accepted(secured, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{secured}/v1/models", headers=headers).status_code == 200
    url = f"{secured}/v1/models/{POTENTIAL}/forces"
    assert httpx.post(url, json=WATER, headers=headers).status_code == 200


def test_probes_metrics_and_docs_stay_open(secured) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert httpx.get(secured + path).status_code == 200, path
