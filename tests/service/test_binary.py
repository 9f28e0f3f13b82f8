"""The msgpack form of /forces (service/codec.py): the same answers as JSON, bit for
bit; an unreadable binary body is a JSON 4xx naming the field, never a 5xx."""

import json

import httpx
import msgpack
import numpy as np
import pytest
from ase.build import molecule

from hegnn_serve.service.client import HEGNNClient
from hegnn_serve.service.codec import MSGPACK, pack, unpack

from .conftest import POTENTIAL

URL = f"/v1/models/{POTENTIAL}/forces"
BINARY = {"content-type": MSGPACK, "accept": MSGPACK}
WATER = {
    "numbers": [8, 1, 1],
    "positions": [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]],
}


def floats(rows: list) -> bytes:
    return np.asarray(rows, dtype="<f8").tobytes()


def test_the_client_answers_equal_json_answers_exactly(server_url: str) -> None:
    atoms = [molecule("CH3CH2OH"), molecule("H2O"), molecule("CH4")]
    for atoms_ in atoms:
        atoms_.rattle(0.01, seed=1)
    with (
        HEGNNClient(server_url) as binary,
        HEGNNClient(server_url, binary=False) as text,
    ):
        assert binary.binary and not text.binary  # msgpack is the default
        for one, other in (  # one structure per request; one request of three
            (
                [binary.forces(POTENTIAL, a) for a in atoms],
                [text.forces(POTENTIAL, a) for a in atoms],
            ),
            (binary.forces(POTENTIAL, atoms), text.forces(POTENTIAL, atoms)),
        ):
            for a, b in zip(one, other, strict=True):
                assert a.energy == b.energy
                np.testing.assert_array_equal(a.forces, b.forces)
                assert a.forces.dtype == np.float64 and a.forces.flags.writeable


def test_msgpack_answers_have_the_json_fields(http: httpx.Client) -> None:
    body = {**WATER, "positions": floats(WATER["positions"])}
    response = http.post(URL, content=pack(body), headers=BINARY)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == MSGPACK
    answer = unpack(response.content)
    expected = http.post(URL, json=WATER).json()
    assert answer.keys() == expected.keys()
    assert answer["energy"] == expected["energy"]
    forces = np.frombuffer(answer["forces"], "<f8").reshape(-1, 3)
    np.testing.assert_array_equal(forces, expected["forces"])
    # A msgpack body with list fields, answered in JSON without the Accept header.
    lists = msgpack.packb(WATER)
    plain = http.post(URL, content=lists, headers={"content-type": MSGPACK})
    assert plain.json() == expected


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (b"\xc1garbage", ["body"], "msgpack"),
        (msgpack.packb(WATER) + b"\x00", ["body"], "msgpack"),
        ({**WATER, "positions": b"\x00" * 50}, ["body", "positions"], "50 bytes"),
        ({**WATER, "cell": b"\x00" * 16, "pbc": True}, ["body", "cell"], "16 bytes"),
        (
            {"structures": [WATER, {**WATER, "positions": b"\x00" * 8}]},
            ["body", "structures", 1, "positions"],
            "8 bytes",
        ),
        (
            {**WATER, "positions": floats([[0, 0, 0.1], [0, 1, 0], [np.nan, 0, 0]])},
            ["body", "positions", 2, 0],
            "finite",
        ),
        (
            {**WATER, "positions": floats([[0, 0, 0], [0, 0.8, 0]])},
            ["body", "numbers"],
            "3",
        ),
        ({**WATER, "numbers": b"\x08\x01\x01"}, ["body"], "bin only"),
        ({**WATER, "pbc": msgpack.ExtType(5, b"x")}, ["body"], "msgpack values"),
        ([1, 2, 3], ["body"], "object"),
    ],
    ids=[
        "garbage",
        "trailing-bytes",
        "positions-length",
        "cell-length",
        "structure-1",
        "nan",
        "atom-count",
        "binary-numbers",
        "ext-type",
        "not-a-map",
    ],
)
def test_an_unreadable_binary_body_is_a_json_422_naming_the_field(
    http: httpx.Client, body: object, loc: list, words: str
) -> None:
    raw = body if isinstance(body, bytes) else msgpack.packb(body)
    response = http.post(URL, content=raw, headers=BINARY)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert any(error["loc"] == loc for error in detail), detail
    assert any(words in error["msg"] for error in detail), detail
    assert http.get("/healthz").json() == {"status": "ok"}


def test_other_endpoints_read_msgpack_bodies_too(http: httpx.Client) -> None:
    body = {**WATER, "positions": floats(WATER["positions"]), "steps": 2}
    response = http.post(
        f"/v1/models/{POTENTIAL}/md", content=pack(body), headers=BINARY
    )
    assert response.status_code == 200, response.text
    as_json = http.post(f"/v1/models/{POTENTIAL}/md", json={**WATER, "steps": 2})
    assert response.json() == as_json.json()


def test_the_openapi_document_names_the_binary_form(http: httpx.Client) -> None:
    operation = http.get("/openapi.json").json()["paths"]["/v1/models/{name}/forces"]
    assert MSGPACK in operation["post"]["requestBody"]["content"]
    assert MSGPACK in operation["post"]["responses"]["200"]["content"]
    assert json.dumps(operation).count("little-endian") >= 2
