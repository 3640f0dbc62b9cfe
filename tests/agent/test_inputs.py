"""Input checks against the manifest spec (pure)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from device_agent.protocol.manifest import TensorSpec
from device_agent.serving.inputs import InputError, check_batch, parse_json_body, parse_raw_body

IMG = TensorSpec("x", [-1, 8, 8, 1])
TAB = TensorSpec("x", [-1, 4])


def test_single_batch_and_flattened_forms() -> None:
    x, single = parse_json_body(json.dumps({"inputs": [1, 2, 3, 4]}).encode(), TAB, 8)
    assert single and x.shape == (1, 4) and x.dtype == np.float32
    x, single = parse_json_body(json.dumps({"inputs": [[1, 2, 3, 4]] * 3}).encode(), TAB, 8)
    assert not single and x.shape == (3, 4)
    x, single = check_batch(np.zeros(64), IMG, 8)
    assert single and x.shape == (1, 8, 8, 1)
    x, single = check_batch(np.zeros((2, 64)), IMG, 8)
    assert not single and x.shape == (2, 8, 8, 1)
    x, single = parse_raw_body(np.ones((5, 64), "<f4").tobytes(), IMG, 8)
    assert x.shape == (5, 8, 8, 1) and not single


@pytest.mark.parametrize(
    ("body", "status", "match"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1,2,3,4]", 400, "JSON object"),
        (b'{"x": 1}', 400, "missing 'inputs'"),
        (b'{"inputs": 5}', 400, "list"),
        (b'{"inputs": [1, 2, 3]}', 400, "shape"),
        (b'{"inputs": [[1, 2], [3]]}', 400, "regular shape"),
        (b'{"inputs": ["a", "b", "c", "d"]}', 400, "numbers"),
        (b'{"inputs": [1, 2, 3, NaN]}', 400, "NaN"),
        (b'{"inputs": [1, 2, 3, 1e309]}', 400, "NaN or infinite"),
        (b'{"inputs": [1, 2, 3, 1e300]}', 400, "overflow"),
        (b'{"inputs": []}', 400, "shape"),
        (json.dumps({"inputs": [[0, 0, 0, 0]] * 9}).encode(), 413, "exceeds"),
    ],
)
def test_bad_json_names_the_problem(body: bytes, status: int, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        parse_json_body(body, TAB, 8)
    assert info.value.status == status


def test_bad_raw_bodies() -> None:
    with pytest.raises(InputError, match="whole number of samples"):
        parse_raw_body(b"\x00" * 10, TAB, 8)
    with pytest.raises(InputError, match="whole number"):
        parse_raw_body(b"", TAB, 8)
    with pytest.raises(InputError, match="NaN"):
        parse_raw_body(np.array([1, 2, np.nan, 4], "<f4").tobytes(), TAB, 8)
    with pytest.raises(InputError) as info:
        parse_raw_body(np.zeros((9, 4), "<f4").tobytes(), TAB, 8)
    assert info.value.status == 413
