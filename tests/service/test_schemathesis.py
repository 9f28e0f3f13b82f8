"""Schemathesis against a real server: generated requests (bounded, seeded) get no
5xx, no status the OpenAPI document does not list, and bodies and headers that
match it."""

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")  # the dev extra
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

from hegnn_serve.service.app import create_app  # noqa: E402

from .conftest import make_settings, running_server  # noqa: E402

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
# The document does not depend on the models loaded: build it without loading any.
SPEC = create_app(make_settings(Path("unused"))).openapi()
schema = schemathesis.openapi.from_dict(SPEC)


@pytest.fixture(scope="module")
def fuzz_url(checkpoint_dir):
    # Small step limits: generated /md and /trajectory requests stay short.
    with running_server(make_settings(checkpoint_dir, max_steps=20)) as url:
        yield url


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_match_the_document(case, fuzz_url) -> None:
    case.call_and_validate(base_url=fuzz_url, checks=CHECKS)
