"""device_agent.protocol.features: the numpy-only encoder a device uses (pure unit tests)."""

from __future__ import annotations

import numpy as np
import pytest

from device_agent.errors import DataError
from device_agent.protocol.features import (
    encode_columns,
    encode_records,
    encoded_feature_names,
    pooled_feature_names,
    pooled_statistics,
    to_model_input,
)

PRE = {
    "layout": "features",
    "columns": [
        {"name": "temp", "kind": "numeric", "fill": 20.5},
        {"name": "site", "kind": "categorical", "vocabulary": ["north", "south"]},
        {"name": "level", "kind": "categorical", "vocabulary": ["1", "2"]},
    ],
}


def test_feature_names_follow_columns_and_vocabularies() -> None:
    assert encoded_feature_names(PRE) == ["temp", "site=north", "site=south", "level=1", "level=2"]


def test_encode_records_one_hot_fill_and_unknown() -> None:
    x = encode_records(
        [
            {"temp": 18.0, "site": "south", "level": 2},
            {"temp": None, "site": "east", "level": 1.0},  # missing numeric, unknown category
            {"site": "", "level": "2", "extra": "ignored"},  # absent numeric, blank category
            {"temp": float("nan"), "site": "north", "level": None},
        ],
        PRE,
    )
    assert x.dtype == np.float32
    np.testing.assert_array_equal(
        x,
        [
            [18.0, 0, 1, 0, 1],
            [20.5, 0, 0, 1, 0],
            [20.5, 0, 0, 0, 1],
            [20.5, 1, 0, 0, 0],
        ],
    )


def test_encode_columns_errors_are_data_errors() -> None:
    with pytest.raises(DataError, match="lacks 1 column"):
        encode_columns({"temp": [1.0], "site": ["north"]}, PRE)
    with pytest.raises(DataError, match="different lengths"):
        encode_columns({"temp": [1.0, 2.0], "site": ["north"], "level": [1]}, PRE)
    with pytest.raises(DataError, match="not a number"):
        encode_columns({"temp": ["hot"], "site": ["north"], "level": [1]}, PRE)
    with pytest.raises(DataError, match="no 'columns'"):
        encode_columns({}, {"layout": "features"})


def test_image_layout_reshapes_and_checks_size() -> None:
    pre = {"layout": "NHWC", "image_shape": [2, 2, 1], "columns": [{"name": f"p{i}"} for i in range(4)]}
    x = encode_columns({f"p{i}": [i, i + 10] for i in range(4)}, pre)
    assert x.shape == (2, 2, 2, 1)
    assert x[1, 1, 1, 0] == 13 and x[0, 1, 0, 0] == 2  # row-major pixels
    with pytest.raises(DataError, match="needs 4 values"):
        to_model_input(np.zeros((1, 3)), pre)


def test_pooled_statistics_grid_mean_matches_manual_means() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 16, size=(5, 8, 8, 1))
    stats = pooled_statistics(x, "grid_mean:2x2")
    assert stats.shape == (5, 4)
    np.testing.assert_allclose(stats[:, 0], x[:, :4, :4].mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(stats[:, 3], x[:, 4:, 4:].mean(axis=(1, 2, 3)))
    assert pooled_feature_names("grid_mean:2x2") == [
        "cell_r0_c0_mean",
        "cell_r0_c1_mean",
        "cell_r1_c0_mean",
        "cell_r1_c1_mean",
    ]
    # odd sizes split like np.array_split; 3-D input gets a channel axis
    odd = pooled_statistics(np.arange(9, dtype=float).reshape(1, 3, 3), "grid_mean:2x2")
    np.testing.assert_allclose(odd[0], [np.mean([0, 1, 3, 4]), np.mean([2, 5]), np.mean([6, 7]), 8.0])


@pytest.mark.parametrize("pooling", ["max:2x2", "grid_mean:2by2", "grid_mean:9x9"])
def test_pooled_statistics_rejects_bad_specs(pooling: str) -> None:
    with pytest.raises(DataError):
        pooled_statistics(np.zeros((1, 8, 8, 1)), pooling)
