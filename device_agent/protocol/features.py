"""Feature encoding a device can do with numpy alone, from the manifest's ``preprocessing``.

The workstation fits the encoding (vocabularies, fill values) on the training split and writes it
into the model manifest; the host encodes its training data with these same functions, so a
device that feeds raw values through :func:`encode_columns` / :func:`encode_records` gets
exactly the features the model was trained on. Numeric scaling is not done here: it lives
inside the model graph.

``preprocessing`` layout (all keys written by ``edgeml train``)::

    {
      "layout": "features" | "NHWC",       # flat feature vector, or an image
      "image_shape": [8, 8, 1],             # NHWC only: one sample's shape
      "columns": [                          # raw columns, in order
        {"name": "age", "kind": "numeric", "fill": 37.0},
        {"name": "color", "kind": "categorical", "vocabulary": ["blue", "red"]}
      ],
      "feature_names": ["age", "color=blue", "color=red"]   # the encoded vector, in order
    }

Encoding rules: a numeric column gives one float (missing -> its ``fill``, the training
median); a categorical column gives one 0/1 value per vocabulary entry (missing or unknown
value -> all zeros). Missing means ``None``, NaN or the empty string.

Image reference profiles summarise a few pooled statistics instead of every pixel; see
:func:`pooled_statistics` for the exact recipe named by ``ReferenceProfile.pooling``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from device_agent.errors import DataError

LAYOUTS = ("features", "NHWC")


def is_missing(value: Any) -> bool:
    """True for ``None``, NaN and the empty (or blank) string."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, (float, np.floating)):
        return math.isnan(float(value))
    return False


def category_key(value: Any) -> str:
    """The string a categorical value is compared by (``3``, ``3.0`` and ``"3"`` are all ``"3"``)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def encoded_feature_names(preprocessing: Mapping[str, Any]) -> list[str]:
    """Names of the encoded features in order (``col`` or ``col=value`` for one-hot entries).

    Raises DataError if ``preprocessing`` has no valid ``columns``.
    """
    names: list[str] = []
    for col in _columns(preprocessing):
        if col["kind"] == "categorical":
            names.extend(f"{col['name']}={v}" for v in col["vocabulary"])
        else:
            names.append(str(col["name"]))
    return names


def encode_columns(columns: Mapping[str, Sequence[Any]], preprocessing: Mapping[str, Any]) -> np.ndarray:
    """Encode raw columns (``{name: values}``, all the same length) into a float32 feature matrix.

    Columns the model does not use are ignored. Returns shape ``(n, n_features)`` for layout
    ``features`` or ``(n, *image_shape)`` for ``NHWC``.
    Raises DataError for a missing column, unequal lengths or a non-numeric numeric value.
    """
    specs = _columns(preprocessing)
    lengths = {len(columns[c["name"]]) for c in specs if c["name"] in columns}
    missing = [c["name"] for c in specs if c["name"] not in columns]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(f"input lacks {len(missing)} column(s) the model needs: {shown}")
    if len(lengths) > 1:
        raise DataError(f"input columns have different lengths: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    parts: list[np.ndarray] = []
    for col in specs:
        values = columns[col["name"]]
        if col["kind"] == "categorical":
            vocab = {v: i for i, v in enumerate(col["vocabulary"])}
            block = np.zeros((n, len(vocab)), dtype=np.float32)
            for row, value in enumerate(values):
                if not is_missing(value):
                    idx = vocab.get(category_key(value))
                    if idx is not None:
                        block[row, idx] = 1.0
            parts.append(block)
        else:
            fill = float(col.get("fill", 0.0))
            out = np.empty((n, 1), dtype=np.float32)
            for row, value in enumerate(values):
                if is_missing(value):
                    out[row, 0] = fill
                    continue
                try:
                    out[row, 0] = float(value)
                except (TypeError, ValueError) as exc:
                    raise DataError(
                        f"column {col['name']!r} row {row}: {value!r} is not a number",
                        hint="send numbers (or leave the value empty to use the training median)",
                    ) from exc
            parts.append(out)
    matrix = np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), dtype=np.float32)
    return to_model_input(matrix, preprocessing)


def encode_records(records: Sequence[Mapping[str, Any]], preprocessing: Mapping[str, Any]) -> np.ndarray:
    """Encode a list of ``{column: raw value}`` records (absent keys count as missing).

    Raises DataError like :func:`encode_columns`.
    """
    specs = _columns(preprocessing)
    columns = {c["name"]: [r.get(c["name"]) for r in records] for c in specs}
    return encode_columns(columns, preprocessing)


def to_model_input(matrix: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """Reshape an ``(n, n_features)`` float matrix to the model's input layout (float32).

    Raises DataError if the feature count does not match the layout.
    """
    x = np.asarray(matrix, dtype=np.float32)
    layout = preprocessing.get("layout", "features")
    if layout not in LAYOUTS:
        raise DataError(f"preprocessing layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if layout == "NHWC":
        shape = [int(d) for d in preprocessing.get("image_shape", [])]
        size = int(np.prod(shape)) if shape else 0
        if x.ndim != 2 or x.shape[1] != size:
            raise DataError(f"image input needs {size} values per sample ({shape}), got shape {list(x.shape)}")
        return x.reshape((x.shape[0], *shape))
    if x.ndim != 2:
        raise DataError(f"feature input must be 2-D (samples, features), got shape {list(x.shape)}")
    return x


POOLING_GRID_MEAN = "grid_mean"


def pooled_statistics(x: np.ndarray, pooling: str) -> np.ndarray:
    """Compute the pooled statistics a ``feature_kind="pooled"`` reference profile is built on.

    ``pooling`` is ``"grid_mean:RxC"`` (e.g. ``"grid_mean:2x2"``): each NHWC sample (raw values,
    before the in-graph normalisation) is split along height into R and along width into C
    nearly-equal bands with ``np.array_split``; statistic ``r * C + c`` is the mean of cell
    ``(r, c)`` over its pixels and channels. Equivalent code::

        rows = np.array_split(np.arange(H), R); cols = np.array_split(np.arange(W), C)
        stats[:, r*C + c] = x[:, rows[r]][:, :, cols[c]].mean(axis=(1, 2, 3))

    Returns float64 shape ``(n, R*C)``. Raises DataError for an unknown pooling or a non-4-D input.
    """
    kind, _, grid = pooling.partition(":")
    if kind != POOLING_GRID_MEAN:
        raise DataError(f"unknown pooling {pooling!r}", hint="this agent understands 'grid_mean:RxC'")
    try:
        n_rows, n_cols = (int(p) for p in grid.split("x"))
    except ValueError as exc:
        raise DataError(f"pooling {pooling!r}: grid must look like 2x2") from exc
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise DataError(f"pooling {pooling!r} needs NHWC input, got shape {list(arr.shape)}")
    if n_rows < 1 or n_cols < 1 or n_rows > arr.shape[1] or n_cols > arr.shape[2]:
        raise DataError(f"pooling {pooling!r} does not fit an image of shape {list(arr.shape[1:])}")
    rows = np.array_split(np.arange(arr.shape[1]), n_rows)
    cols = np.array_split(np.arange(arr.shape[2]), n_cols)
    out = np.empty((arr.shape[0], n_rows * n_cols), dtype=np.float64)
    for r, rr in enumerate(rows):
        band = arr[:, rr]
        for c, cc in enumerate(cols):
            out[:, r * n_cols + c] = band[:, :, cc].mean(axis=(1, 2, 3))
    return out


def pooled_feature_names(pooling: str) -> list[str]:
    """Names for the statistics of :func:`pooled_statistics` (``cell_r0_c0_mean``, ...)."""
    _, _, grid = pooling.partition(":")
    n_rows, n_cols = (int(p) for p in grid.split("x"))
    return [f"cell_r{r}_c{c}_mean" for r in range(n_rows) for c in range(n_cols)]


def _columns(preprocessing: Mapping[str, Any]) -> list[dict[str, Any]]:
    cols = preprocessing.get("columns")
    if not isinstance(cols, list):
        raise DataError("preprocessing has no 'columns' list", hint="re-create the model with `edgeml train`")
    out: list[dict[str, Any]] = []
    for col in cols:
        if not isinstance(col, dict) or "name" not in col:
            raise DataError(f"preprocessing column {col!r} has no name")
        kind = col.get("kind", "numeric")
        if kind not in ("numeric", "categorical"):
            raise DataError(f"preprocessing column {col['name']!r}: unknown kind {kind!r}")
        if kind == "categorical" and not isinstance(col.get("vocabulary"), list):
            raise DataError(f"preprocessing column {col['name']!r}: categorical without a vocabulary")
        out.append(dict(col, kind=kind))
    return out
