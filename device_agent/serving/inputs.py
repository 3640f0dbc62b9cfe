"""Input checks against the manifest's input spec. Pure: bytes/values in, an array or an
:class:`InputError` (with the HTTP status to answer) out. The model never sees bad input."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from device_agent.errors import DataError
from device_agent.protocol.manifest import TensorSpec


class InputError(DataError):
    """Bad predict input. ``status`` is 400 (malformed) or 413 (too large)."""

    def __init__(self, message: str, hint: str = "", status: int = 400) -> None:
        super().__init__(message, hint)
        self.status = status


_SHAPES: dict[tuple[int, ...], tuple[tuple[int, ...], int]] = {}


def sample_shape(spec: TensorSpec) -> tuple[int, ...]:
    return _shape_size(spec)[0]


def _shape_size(spec: TensorSpec) -> tuple[tuple[int, ...], int]:
    key = tuple(spec.shape)
    hit = _SHAPES.get(key)
    if hit is None:
        shape = tuple(max(d, 1) for d in spec.shape[1:])
        size = 1
        for d in shape:
            size *= d
        hit = _SHAPES[key] = (shape, size)
    return hit


def all_finite(a: np.ndarray) -> bool:
    """True when no value is NaN or infinite (never warns). For a few values a Python sum is
    cheaper than numpy's per-call overhead; the exact ``np.isfinite`` check runs when the sum is
    not finite, and for larger arrays."""
    if a.dtype.kind != "f":
        return True
    if a.size <= 64:
        s = sum(a.ravel().tolist())
        return s - s == 0.0 or bool(np.isfinite(a).all())
    return bool(np.isfinite(a).all())


_finite = all_finite


def check_batch(x: np.ndarray, spec: TensorSpec, max_batch: int) -> tuple[np.ndarray, bool]:
    """Coerce ``x`` to a float32 batch ``(n, *sample_shape)``. Returns (batch, was_single).

    Accepts one sample (its sample shape, or flattened) or a batch of them. Raises InputError
    for a wrong shape, an empty or oversized batch, a non-numeric dtype, or NaN/inf values.
    """
    shape, size = _shape_size(spec)
    if x.dtype.kind not in "fiub":
        raise InputError(f"input dtype {x.dtype} is not numeric", hint=f"send numbers ({spec.dtype})")
    single = False
    if x.shape == shape or (x.ndim == 1 and x.shape[0] == size and len(shape) != 1):
        x = x.reshape((1, *shape))
        single = True
    elif x.ndim >= 1 and x.shape[1:] == shape:
        pass
    elif x.ndim == 2 and x.shape[1] == size:
        x = x.reshape((x.shape[0], *shape))
    else:
        raise InputError(
            f"input shape {list(x.shape)} does not match the model input {list(shape)}",
            hint=f"send one sample shaped {list(shape)} (or {size} numbers) or a list of them",
        )
    n = x.shape[0]
    if n == 0:
        raise InputError("empty batch", hint="send at least one sample")
    if n > max_batch:
        raise InputError(f"batch of {n} exceeds the limit of {max_batch}", hint="split the batch", status=413)
    if x.dtype != np.float32:
        if x.dtype.kind == "f" and _finite(x) and np.abs(x).max() > np.finfo(np.float32).max:
            raise InputError("input values overflow float32", hint="scale the input to the model's range")
        x = x.astype(np.float32)
    if not _finite(x):
        raise InputError("input contains NaN or infinite values", hint="send finite numbers")
    return x, single


def parse_json_body(body: bytes, spec: TensorSpec, max_batch: int) -> tuple[np.ndarray, bool]:
    """``{"inputs": one sample or a list of samples}`` (``"input"`` is accepted too).
    Raises InputError."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"body is not valid JSON: {exc}", hint='send {"inputs": [[...], ...]}') from exc
    except RecursionError as exc:
        raise InputError("body is nested too deeply to be an input", hint='send {"inputs": [[...], ...]}') from exc
    if not isinstance(doc, dict):
        raise InputError(f"expected a JSON object, got {type(doc).__name__}", hint='send {"inputs": [[...], ...]}')
    data: Any = doc.get("inputs", doc.get("input"))
    if data is None:
        raise InputError("missing 'inputs'", hint='send {"inputs": [[...], ...]}')
    if not isinstance(data, list):
        raise InputError("'inputs' must be a list of numbers or a list of samples")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.asarray(data, dtype=np.float32)
        if not _finite(x):
            x = np.asarray(data, dtype=np.float64)  # say whether it was NaN/inf or an overflow
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(
            "'inputs' must be a (nested) list of numbers with a regular shape",
            hint=f"each sample has shape {list(sample_shape(spec))}",
        ) from exc
    return check_batch(x, spec, max_batch)


def parse_raw_body(body: bytes, spec: TensorSpec, max_batch: int) -> tuple[np.ndarray, bool]:
    """Raw little-endian float32 bytes: one sample or a batch. Raises InputError."""
    shape = sample_shape(spec)
    size = int(np.prod(shape)) if shape else 1
    if len(body) == 0 or len(body) % (4 * size):
        raise InputError(
            f"raw body of {len(body)} bytes is not a whole number of samples ({4 * size} bytes each)",
            hint="send float32 little-endian values, sample after sample",
        )
    x = np.frombuffer(body, dtype="<f4").reshape((-1, *shape))
    batch, _ = check_batch(x, spec, max_batch)
    return batch, x.shape[0] == 1
