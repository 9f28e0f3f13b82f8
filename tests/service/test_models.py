"""Health, model cards, metrics, request ids and logs, and the OpenAPI examples."""

import json
import logging

from .conftest import NBODY, POTENTIAL


def test_health_and_readiness(http) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "models": [POTENTIAL, NBODY],
        "failed": {},
    }


def test_models_list_summaries(http) -> None:
    body = http.get("/v1/models").json()
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {POTENTIAL, NBODY} and body["unavailable"] == []
    ff, nbody = by_name[POTENTIAL], by_name[NBODY]
    assert ff["task"] == "potential" and ff["species"] == [1, 6, 8]
    assert ff["units"] == {"energy": "eV", "forces": "eV/Å", "positions": "Å"}
    assert ff["model"]["lmax"] == 2 and ff["metrics"] == {}
    assert nbody["task"] == "dynamics" and nbody["features"] == "nbody"
    assert nbody["delta_t"] == 1.0 and nbody["species"] is None


def test_one_model_card_is_the_card_json(http, checkpoint_dir) -> None:
    card = http.get(f"/v1/models/{POTENTIAL}").json()
    on_disk = json.loads((checkpoint_dir / POTENTIAL / "card.json").read_text())
    assert card["weights_sha256"] == on_disk["weights_sha256"]
    assert card["model"] == on_disk["model"] and card["name"] == POTENTIAL


def test_unknown_model_is_404_listing_the_known_ones(http) -> None:
    response = http.get("/v1/models/nope")
    assert response.status_code == 404
    assert response.json() == {
        "detail": f"unknown model 'nope'; known: ['{POTENTIAL}', '{NBODY}']"
    }


def test_metrics_are_prometheus_text(http) -> None:
    http.post(
        f"/v1/models/{POTENTIAL}/forces",
        json={"numbers": [8, 1], "positions": [[0, 0, 0], [0, 0, 0.97]]},
    )
    response = http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    route = "/v1/models/{name}/forces"
    assert f'hegnn_requests_total{{method="POST",route="{route}",status="200"}}' in text
    for name in (
        "hegnn_request_duration_seconds_bucket",
        "hegnn_batch_structures_bucket",
        "hegnn_batch_atoms_bucket",
        "hegnn_queue_wait_seconds_bucket",
        "hegnn_compute_seconds_bucket",
        "hegnn_atoms_total",
        "hegnn_atoms_per_second",
        'hegnn_models{state="loaded"} 2.0',
    ):
        assert name in text, name


def test_each_request_logs_one_json_line_with_its_id(http, caplog) -> None:
    body = {"numbers": [8, 1], "positions": [[0, 0, 0], [0, 0, 0.97]]}
    with caplog.at_level(logging.INFO, logger="service.access"):
        response = http.post(
            f"/v1/models/{POTENTIAL}/forces",
            json=body,
            headers={"X-Request-ID": "abc-123"},
        )
    assert response.headers["x-request-id"] == "abc-123"
    lines = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "service.access"
    ]
    (line,) = [x for x in lines if x["request_id"] == "abc-123"]
    assert line["model"] == POTENTIAL and line["atoms"] == 2
    assert line["structures"] == 1 and line["status"] == 200 and line["ms"] > 0
    fresh = {http.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(fresh) == 3  # a new id per request without X-Request-ID


def openapi_examples(spec: dict, path: str) -> dict:
    body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return {name: example["value"] for name, example in body["examples"].items()}


def test_openapi_examples_work_when_pasted(http) -> None:
    spec = http.get("/openapi.json").json()
    forces = openapi_examples(spec, "/v1/models/{name}/forces")
    trajectory = openapi_examples(spec, "/v1/models/{name}/trajectory")
    md = openapi_examples(spec, "/v1/models/{name}/md")
    assert set(forces) == {"water", "batch", "periodic"}
    assert set(md) == {"nve", "langevin", "batch"}
    for endpoint, model, examples in [
        ("forces", POTENTIAL, forces),
        ("md", POTENTIAL, md),
        ("trajectory", NBODY, {"n-body": trajectory["n-body"]}),  # md17: checkpoints
    ]:
        for name, example in examples.items():
            response = http.post(f"/v1/models/{model}/{endpoint}", json=example)
            assert response.status_code == 200, (endpoint, name, response.text)
    assert http.get("/docs").status_code == 200


def test_openapi_bodies_are_tight_and_mark_required_fields(http) -> None:
    spec = http.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    required = {
        "ForcesRequest": ["positions", "numbers"],
        "ForcesBatchRequest": ["structures"],
        "TrajectoryRequest": ["positions", "velocities", "steps"],
        "TrajectoryBatchRequest": ["structures", "steps"],
        "DynamicsStructure": ["positions", "velocities"],
        "MDRequest": ["positions", "numbers", "steps"],
        "MDBatchRequest": ["structures", "steps"],
        "MDStructure": ["positions", "numbers"],
    }
    for name, fields in required.items():
        assert schemas[name]["required"] == fields, name
        assert schemas[name]["additionalProperties"] is False, name
    trajectory = set(schemas["TrajectoryRequest"]["properties"])
    md = set(schemas["MDRequest"]["properties"])
    assert not trajectory & {"timestep_fs", "temperature", "cell", "return_forces"}
    assert "charges" not in md and {"temperature", "cell", "velocities"} <= md
    for endpoint in ("forces", "trajectory", "md"):
        post = spec["paths"][f"/v1/models/{{name}}/{endpoint}"]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert len(body["oneOf"]) == 2 and post["requestBody"]["required"]
        statuses = {"400", "404", "408", "413", "422", "500", "503"}
        if endpoint != "forces":
            statuses.add("504")  # a job past HEGNN_JOB_TIMEOUT_S
        assert statuses <= set(post["responses"]), endpoint
        # No API keys on this server: no auth, no 401 (see test_openapi.py).
        assert "401" not in post["responses"] and "security" not in post
