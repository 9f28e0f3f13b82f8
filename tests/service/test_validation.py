"""A battery of malformed requests: each gets its 4xx naming the field, and the
server stays healthy after each."""

import json
from typing import Any, NamedTuple

import numpy as np
import pytest

from .conftest import NBODY, POTENTIAL

WATER = {
    "numbers": [8, 1, 1],
    "positions": [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]],
}
BODIES = {
    "positions": [[0.5, -1.1, 0.3], [-1.2, 0.4, 0.8], [0.9, 1.3, -0.6]],
    "velocities": [[0.2, -0.1, 0.4], [-0.3, 0.5, 0.1], [0.1, 0.2, -0.6]],
    "charges": [1.0, -1.0, 1.0],
    "steps": 2,
}
CELL = [[6.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 6.0]]
MD = {**WATER, "steps": 4}


NAN, INF = float("nan"), float("inf")


def chain(n: int, spacing: float = 1.0) -> dict:
    """n carbon atoms on a line."""
    return {"numbers": [6] * n, "positions": [[spacing * k, 0, 0] for k in range(n)]}


def water(**changes: Any) -> dict:
    return {**WATER, **changes}


def bodies(**changes: Any) -> dict:
    return {k: v for k, v in {**BODIES, **changes}.items() if v is not None}


def md(**changes: Any) -> dict:
    return {**MD, **changes}


def bad_first(value: Any) -> list:
    """Water positions whose first coordinate is ``value``."""
    return [[value, 0, 0], [1, 0, 0], [0, 1, 0]]


def literal(body: Any) -> bytes:
    """JSON as Python writes it: NaN and Infinity as bare literals."""
    return json.dumps(body).encode()


class Case(NamedTuple):
    name: str
    target: tuple[str, str]  # model, endpoint
    body: Any  # a JSON value, or bytes sent as they are
    status: int
    field: str  # must appear in the error's loc (422) or message (others)


F = (POTENTIAL, "forces")
MD_ = (POTENTIAL, "md")
NB = (NBODY, "trajectory")
FLAT_CELL = [[6, 0, 0], [0, 6, 0], [0, 0, 0]]
THIN_CELL = [[6, 0, 0], [0, 6, 0], [0, 0, 0.2]]

# fmt: off
CASES = [
    # non-finite numbers: Python's json writes NaN/Infinity literals; strings too
    Case("nan literal", F, literal(water(positions=bad_first(NAN))), 422, "positions"),
    Case("inf literal", F, literal(water(positions=bad_first(INF))), 422, "positions"),
    Case("nan string", F, water(positions=bad_first("nan")), 422, "positions"),
    Case("number as string", F, water(positions=bad_first("1.0")), 422, "positions"),
    Case("huge coordinate", F, water(positions=bad_first(1e9)), 422, "positions"),
    Case("nan in cell", F, literal(water(cell=bad_first(NAN), pbc=True)), 422, "cell"),
    Case("nan velocity", NB, literal(bodies(velocities=[[NAN, 0, 0]] * 3)), 422,
         "velocities"),
    # shapes
    Case("row of two", F, water(positions=[[0, 0], [1, 0, 0], [0, 1, 0]]), 422,
         "positions"),
    Case("ragged rows", F, water(positions=[[0, 0, 0], [1, 0, 0, 0], [0, 1, 0]]), 422,
         "positions"),
    Case("flat positions", F, water(positions=[0, 0, 0, 1, 0, 0, 0, 1, 0]), 422,
         "positions"),
    Case("positions a string", F, water(positions="water"), 422, "positions"),
    Case("cell 2x3", F, water(cell=[[6, 0, 0], [0, 6, 0]], pbc=True), 422, "cell"),
    Case("pbc of two", F, water(cell=CELL, pbc=[True, False]), 422, "pbc"),
    Case("pbc a string", F, water(cell=CELL, pbc="yes"), 422, "pbc"),
    # lengths
    Case("numbers too short", F, water(numbers=[8, 1]), 422, "numbers"),
    Case("velocities too long", NB, bodies(velocities=BODIES["velocities"] * 2), 422,
         "velocities"),
    Case("charges too short", NB, bodies(charges=[1.0]), 422, "charges"),
    # atomic numbers and species
    Case("fractional Z", F, water(numbers=[8, 1.5, 1]), 422, "numbers"),
    Case("Z = 0", F, water(numbers=[8, 0, 1]), 422, "numbers"),
    Case("Z as symbol", F, water(numbers=["O", "H", "H"]), 422, "numbers"),
    Case("unknown species", F, water(numbers=[9, 1, 1]), 422, "numbers"),
    Case("zero atoms", F, {"numbers": [], "positions": []}, 422, "numbers"),
    Case("numbers missing", F, {"positions": WATER["positions"]}, 422, "numbers"),
    Case("positions missing", F, {"numbers": [8, 1, 1]}, 422, "positions"),
    # geometry
    Case("atoms too close", F, chain(3, 0.2), 422, "positions"),
    Case("coincident atoms", F, chain(2, 0.0), 422, "positions"),
    Case("coincident bodies", NB, bodies(positions=[[0, 0, 0]] * 3), 422, "positions"),
    Case("pbc without cell", F, water(pbc=True), 422, "cell"),
    Case("flat cell", F, water(cell=FLAT_CELL, pbc=True), 422, "cell"),
    Case("cell thinner than atoms", F, water(cell=THIN_CELL, pbc=True), 422, "cell"),
    Case("cell to dynamics", NB, bodies(cell=CELL, pbc=True), 422, "cell"),
    # the wrong inputs or task for the model
    Case("forces of dynamics", (NBODY, "forces"), WATER, 422, "name"),
    Case("charges to forces", F, water(charges=[1, 1, 1]), 422, "charges"),
    Case("charges to MD", MD_, md(charges=[1, -1, 1]), 422, "charges"),
    Case("N-body without charges", NB, bodies(charges=None), 422, "charges"),
    Case("N-body without velocities", NB, bodies(velocities=None), 422, "velocities"),
    Case("N-body with numbers", NB, bodies(numbers=[6, 6, 6]), 422, "numbers"),
    Case("N-body with timestep", NB, bodies(timestep_fs=1.0), 422, "timestep_fs"),
    Case("N-body with temperature", NB, bodies(temperature=300.0), 422,
         "temperature"),
    Case("velocities to forces", F, water(velocities=[[0, 0, 0]] * 3), 422,
         "velocities"),
    Case("MD with a dynamics model", (NBODY, "md"), md(), 422, "name"),
    Case("rollout of a potential model", (POTENTIAL, "trajectory"), bodies(), 422,
         "name"),
    # request form
    Case("structures and numbers", F, water(structures=[WATER]), 422, "structures"),
    Case("empty structures", F, {"structures": []}, 422, "structures"),
    Case("MD structures and positions", MD_,
         {"structures": [WATER], "positions": WATER["positions"], "steps": 2}, 422,
         "structures"),
    Case("bad second structure", F, {"structures": [WATER, water(numbers=[8, 1, 99])]},
         422, "structures"),
    Case("body is a list", F, [WATER], 422, "body"),
    Case("invalid JSON", F, b'{"numbers": [8, 1,', 422, "body"),
    Case("empty body", F, b"", 422, "body"),
    # run parameters
    Case("steps zero", MD_, md(steps=0), 422, "steps"),
    Case("steps negative", NB, bodies(steps=-3), 422, "steps"),
    Case("steps fractional", NB, bodies(steps=1.5), 422, "steps"),
    Case("steps missing", MD_, WATER, 422, "steps"),
    Case("every zero", MD_, md(every=0), 422, "every"),
    Case("every beyond steps", MD_, md(every=5), 422, "every"),
    Case("timestep zero", MD_, md(timestep_fs=0), 422, "timestep_fs"),
    Case("negative temperature", MD_, md(temperature=-5), 422, "temperature"),
    # limits -> 413 (test server: 100 atoms, 16 structures, 100 steps and frames,
    # 256 KiB)
    Case("too many atoms", F, chain(101), 413, "positions"),
    Case("too many structures", F, {"structures": [WATER] * 17}, 413, "structures"),
    Case("too many steps", NB, bodies(steps=101), 413, "steps"),
    Case("too many MD steps", MD_, md(steps=101, every=10), 413, "steps"),
    Case("too many frames", MD_, md(steps=100), 413, "every"),  # 101 with step 0
    Case("body too large", F, literal(water(pad="x" * 300_000)), 413, "body"),
    # unknown model: the message lists the known ones
    Case("unknown model", ("no-such-model", "forces"), WATER, 404, "tiny-ff"),
]
# fmt: on


def test_the_battery_is_large_and_named_uniquely() -> None:
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_malformed_request_gets_a_4xx_naming_the_field(http, case: Case) -> None:
    model, endpoint = case.target
    url = f"/v1/models/{model}/{endpoint}"
    if isinstance(case.body, bytes):
        headers = {"content-type": "application/json"}
        response = http.post(url, content=case.body, headers=headers)
    else:
        response = http.post(url, json=case.body)
    assert response.status_code == case.status, response.text
    detail = response.json()["detail"]
    if isinstance(detail, list):
        assert all(error["msg"] for error in detail)
        locs = [[str(part) for part in error["loc"]] for error in detail]
        assert any(case.field in loc for loc in locs), detail
    else:
        assert case.field in detail, detail
    assert http.get("/healthz").json() == {"status": "ok"}


def test_errors_locate_the_structure(http) -> None:
    body = {"structures": [WATER, {**WATER, "numbers": [8, 1, 9]}]}
    response = http.post(f"/v1/models/{POTENTIAL}/forces", json=body)
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "structures", 1, "numbers"]
    assert "[9]" in error["msg"] and "[1, 6, 8]" in error["msg"]


@pytest.mark.parametrize(
    ("model", "endpoint", "body", "right"),
    [
        (POTENTIAL, "trajectory", BODIES, "md"),  # a rollout body, as a user would
        (NBODY, "md", MD, "trajectory"),
        (NBODY, "forces", WATER, "trajectory"),
    ],
)
def test_the_wrong_kind_of_model_names_the_right_endpoint(
    http, model: str, endpoint: str, body: dict, right: str
) -> None:
    """Checked before the body: the endpoint's schema would not fit the body."""
    response = http.post(f"/v1/models/{model}/{endpoint}", json=body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["path", "name"]
    assert f"POST /v1/models/{model}/{right}" in error["msg"], error["msg"]


def test_a_body_of_both_forms_is_one_error_at_structures(http) -> None:
    body = {**MD, "structures": [WATER]}
    response = http.post(f"/v1/models/{POTENTIAL}/md", json=body)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "structures"]
    assert "numbers, positions" in error["msg"]


def test_a_streamed_body_over_the_limit_is_413(http) -> None:
    def chunks():  # no Content-Length: the server counts while it reads
        yield b'{"numbers": [8, 1, 1], "pad": "'
        for _ in range(40):
            yield b"x" * 8192
        yield b'"}'

    response = http.post(f"/v1/models/{POTENTIAL}/forces", content=chunks())
    assert response.status_code == 413
    assert "body" in response.json()["detail"]
    assert http.get("/healthz").status_code == 200


def test_a_form_encoded_body_is_read_as_json(http) -> None:
    """``curl -d '{...}' URL`` sends application/x-www-form-urlencoded."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    body = json.dumps(WATER).encode()
    response = http.post(f"/v1/models/{POTENTIAL}/forces", content=body, headers=form)
    assert response.status_code == 200, response.text


ODD_VALUES = [None, "x", -1, 0, 1e300, -1e-300, [], [[]], {}, True, [1, 2], [[1, 2, 3]]]
ODD_VALUES += [[[0, 0, 0]] * 3, [[NAN, 0, 0]] * 3, [6, 6, 6], [[1e5, 0, 0]] * 3]


def test_no_random_mutation_gets_a_5xx(http) -> None:
    """Each field of valid bodies set to odd values: always an answer below 500."""
    rng = np.random.default_rng(0)
    bases = [(F, WATER), (MD_, MD), (NB, BODIES), ((NBODY, "forces"), BODIES)]
    bases += [((NBODY, "md"), MD), ((POTENTIAL, "trajectory"), BODIES)]
    for _ in range(60):
        (model, endpoint), base = bases[rng.integers(len(bases))]
        body = dict(base)
        for field in rng.choice(sorted(body) + ["cell", "pbc", "steps"], 2):
            body[str(field)] = ODD_VALUES[rng.integers(len(ODD_VALUES))]
        response = http.post(
            f"/v1/models/{model}/{endpoint}",
            content=literal(body),
            headers={"content-type": "application/json"},
        )
        assert response.status_code < 500, (body, response.text)
    assert http.get("/healthz").status_code == 200
