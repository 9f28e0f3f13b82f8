"""The OpenAPI document matches the server: every status a route answers with the
error schema; bearer auth and 401 only when HEGNN_API_KEYS is set."""

import pytest

from hegnn_serve.service.app import create_app

from .conftest import make_settings

ERROR_REF = "#/components/schemas/ErrorMessage"


def spec_of(checkpoint_dir, **overrides) -> dict:
    return create_app(make_settings(checkpoint_dir, **overrides)).openapi()


def test_every_error_status_has_the_error_schema(checkpoint_dir) -> None:
    spec = spec_of(checkpoint_dir)
    assert "securitySchemes" not in spec.get("components", {})
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            assert "security" not in operation, (path, method)
            for status, response in operation["responses"].items():
                assert status != "401", (path, method)
                if status.startswith(("4", "5")) and status != "422":
                    schema = response["content"]["application/json"]["schema"]
                    if path != "/readyz":
                        assert schema == {"$ref": ERROR_REF}, (path, status)
    md = spec["paths"]["/v1/models/{name}/md"]["post"]["responses"]
    assert "Retry-After" in md["503"]["headers"]
    assert "HEGNN_JOB_TIMEOUT_S" in md["504"]["description"]


def test_auth_is_documented_when_keys_are_set(checkpoint_dir) -> None:
    spec = spec_of(checkpoint_dir, api_keys=["k"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path in ("/v1/models", "/v1/models/{name}/forces", "/v1/models/{name}/md"):
        operation = next(iter(spec["paths"][path].values()))
        assert operation["security"] == [{"HTTPBearer": []}], path
        assert "401" in operation["responses"], path
    health = spec["paths"]["/healthz"]["get"]
    assert "security" not in health


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{not json", 422), (b"{}", 422), (b"\xff", 400)],
)
def test_unreadable_bodies_get_documented_statuses(http, body, status) -> None:
    r = http.post("/v1/models/tiny-ff/forces", content=body)
    assert r.status_code == status, r.text
    spec = http.get("/openapi.json").json()
    responses = spec["paths"]["/v1/models/{name}/forces"]["post"]["responses"]
    assert str(status) in responses
    if status == 400:
        assert isinstance(r.json()["detail"], str)  # ErrorMessage


def test_unknown_model_is_a_documented_404(http) -> None:
    r = http.get("/v1/models/nope")
    assert r.status_code == 404 and isinstance(r.json()["detail"], str)
