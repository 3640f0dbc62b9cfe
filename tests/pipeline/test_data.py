"""Data loading and validation: clear errors with counts, encoding fitted on the training split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_agent.protocol.features import encode_records
from edgeml.errors import InputDataError
from edgeml.pipeline.data import load
from tests.pipeline.csvdata import write_sensor_csv


def test_builtin_digits_is_an_image_and_splits_are_stratified() -> None:
    d = load("digits", seed=0)
    assert d.is_image and d.x_train.shape[1:] == (8, 8, 1) and d.x_train.dtype == np.float32
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 1797
    assert set(np.unique(d.y_test)) == set(range(10))
    again = load("digits", seed=0)
    np.testing.assert_array_equal(d.x_test, again.x_test)
    other = load("digits", seed=1)
    assert not np.array_equal(d.y_test, other.y_test)


def test_csv_with_categorical_and_missing_values(tmp_path: Path) -> None:
    d = load(str(write_sensor_csv(tmp_path / "sensors.csv")), target="state")
    cols = {c["name"]: c for c in d.preprocessing["columns"]}
    assert cols["site"]["kind"] == "categorical" and cols["site"]["vocabulary"] == ["east", "north", "south"]
    assert d.preprocessing["vocabularies"] == {"site": ["east", "north", "south"]}
    assert "firmware" not in cols  # constant column dropped
    assert d.feature_names == ["temp", "vibration", "site=east", "site=north", "site=south"]
    assert d.report["missing_values"] == {"temp": 12, "site": 7}
    assert d.report["constant_columns"] == ["firmware"]
    assert any("imputed 19 missing value(s)" in w for w in d.warnings)
    assert not np.isnan(d.x_train).any()
    assert d.labels == ["fault", "idle", "run"]
    # the device-side encoder reproduces the training encoding from raw values
    raw = {"temp": None, "vibration": 0.7, "site": "south"}
    np.testing.assert_allclose(encode_records([raw], d.preprocessing)[0], [cols["temp"]["fill"], 0.7, 0, 0, 1])


def test_imbalance_warning(tmp_path: Path) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    y = ["a"] * 200 + ["b"] * 12
    pd.DataFrame({"x": rng.normal(size=212), "y": y}).to_csv(tmp_path / "imb.csv", index=False)
    d = load(str(tmp_path / "imb.csv"), target="y")
    assert any("class imbalance" in w for w in d.warnings)


@pytest.mark.parametrize(
    ("content", "target", "message"),
    [
        (None, "state", "does not exist"),
        ("a,b\n1,x\n", "nope", "target column 'nope' is not in"),
        ("a,state\n" + "1,x\n" * 10, "state", "only 10 usable row"),
        ("a,state\n" + "".join(f"{i},{'x' if i % 10 else 'y'}\n" for i in range(60)), "state", "fewer than 10 rows"),
        ("a,state\n" + "".join(f"id{i},{i % 2}\n" for i in range(200)), "state", "distinct values"),
        ("a,state\n" + "1,0\n" * 40, "state", "only one class"),
        ("\x00\xff\xfe garbage", "state", "cannot read"),
    ],
)
def test_bad_csv_inputs_raise_clear_errors(tmp_path: Path, content: str | None, target: str, message: str) -> None:
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content.encode("latin-1"))
    with pytest.raises(InputDataError, match=message) as info:
        load(str(path), target=target)
    assert info.value.hint


def test_unknown_dataset_and_misplaced_target() -> None:
    with pytest.raises(InputDataError, match="unknown dataset 'mnist'") as info:
        load("mnist")
    assert "digits" in info.value.hint
    with pytest.raises(InputDataError, match="--target is only for CSV"):
        load("iris", target="species")
