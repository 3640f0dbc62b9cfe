"""Loading and validating training data: built-in scikit-learn datasets or a CSV file.

The result is a :class:`PreparedData`: stratified train/validation/test splits of float32 raw
features (categoricals one-hot encoded with the vocabulary fitted on the training split,
missing numeric values filled with the training median), the labels, and the ``preprocessing``
spec that a device feeds to :mod:`device_agent.protocol.features` to do the same encoding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device_agent.protocol.features import category_key, encode_columns, encoded_feature_names, is_missing
from edgeml.errors import InputDataError

BUILTIN = ("digits", "breast_cancer", "wine", "iris")
MIN_ROWS = 30
MIN_ROWS_PER_CLASS = 10
MAX_VOCABULARY = 50
IMBALANCE_RATIO = 0.1
SPLIT = (0.6, 0.2, 0.2)  # train, validation, test


@dataclass
class PreparedData:
    """Splits and everything needed to reproduce the encoding on a device."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]
    preprocessing: dict[str, Any]
    source: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def is_image(self) -> bool:
        return self.preprocessing.get("layout") == "NHWC"

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def feature_names(self) -> list[str]:
        return list(self.preprocessing["feature_names"])

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "x_train": self.x_train,
            "y_train": self.y_train,
            "x_val": self.x_val,
            "y_val": self.y_val,
            "x_test": self.x_test,
            "y_test": self.y_test,
        }


def dataset_name(dataset: str) -> str:
    """The model name a dataset gives: the built-in name or the CSV's file stem."""
    if dataset in BUILTIN:
        return dataset
    return Path(dataset).stem.replace(" ", "_") or "model"


def load(dataset: str, target: str | None = None, seed: int = 0, image: bool | None = None) -> PreparedData:
    """Load, validate, split and encode ``dataset`` (a built-in name or a CSV path).

    ``image`` keeps digits as 8x8x1 images (default: True for digits). Raises InputDataError for
    an unknown dataset, an unreadable CSV, a missing target, too few rows or rows per class.
    """
    if dataset in BUILTIN:
        if target is not None:
            raise InputDataError(
                f"--target is only for CSV files; the built-in dataset {dataset!r} has its own target",
                hint="drop --target, or pass a CSV path with --dataset",
            )
        columns, y_raw, source, label_names = _load_builtin(dataset)
        if image is None:
            image = dataset == "digits"
        image_shape = [8, 8, 1] if (image and dataset == "digits") else None
        if image and image_shape is None:
            raise InputDataError(f"{dataset} is tabular: it cannot be fed to an image recipe", hint="use --recipe mlp")
    elif dataset.lower().endswith(".csv") or Path(dataset).exists():
        columns, y_raw, source = _load_csv(Path(dataset), target)
        label_names = None
        image_shape = None
        if image:
            raise InputDataError("CSV data is tabular: it cannot be fed to an image recipe", hint="use --recipe mlp")
    else:
        raise InputDataError(
            f"unknown dataset {dataset!r}",
            hint=f"use one of {', '.join(BUILTIN)} or the path of a CSV file (with --target COLUMN)",
        )
    return _prepare(dataset_name(dataset), columns, y_raw, source, label_names, image_shape, seed)


def _load_builtin(name: str) -> tuple[dict[str, list[Any]], list[Any], dict[str, Any], list[str] | None]:
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    bunch = loader()
    x = np.asarray(bunch.data, dtype=np.float64)
    names = [str(n).replace(" ", "_") for n in bunch.feature_names]
    columns = {n: list(x[:, i]) for i, n in enumerate(names)}
    label_names = [str(t) for t in bunch.target_names]
    y = [label_names[int(t)] for t in bunch.target]
    source = {"kind": "builtin", "name": name, "sha256": _hash_arrays(x, np.asarray(bunch.target))}
    return columns, y, source, label_names


def _load_csv(path: Path, target: str | None) -> tuple[dict[str, list[Any]], list[Any], dict[str, Any]]:
    import pandas as pd

    if not path.is_file():
        raise InputDataError(f"CSV file {str(path)!r} does not exist", hint="check the path passed to --dataset")
    if not target:
        raise InputDataError(f"no target column given for {path.name}", hint="pass --target COLUMN")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise InputDataError(
            f"cannot read {path.name} as CSV: {str(exc).strip() or type(exc).__name__}",
            hint="the file must be comma-separated UTF-8 text with a header row",
        ) from exc
    if target not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:12])) + (" ..." if len(frame.columns) > 12 else "")
        raise InputDataError(
            f"target column {target!r} is not in {path.name}", hint=f"choose --target from its columns: {shown}"
        )
    if frame.shape[1] < 2:
        raise InputDataError(f"{path.name} has no feature columns besides the target {target!r}")
    columns = {str(c): frame[c].tolist() for c in frame.columns if c != target}
    y = frame[target].tolist()
    source = {"kind": "csv", "path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return columns, y, source


def _prepare(
    name: str,
    columns: dict[str, list[Any]],
    y_raw: list[Any],
    source: dict[str, Any],
    label_names: list[str] | None,
    image_shape: list[int] | None,
    seed: int,
) -> PreparedData:
    from sklearn.model_selection import train_test_split

    warnings: list[str] = []
    report: dict[str, Any] = {"rows": len(y_raw)}
    keep = [i for i, v in enumerate(y_raw) if not is_missing(v)]
    dropped = len(y_raw) - len(keep)
    report["rows_dropped_missing_target"] = dropped
    if dropped:
        warnings.append(f"dropped {dropped} row(s) with a missing target value")
    y_str = np.asarray([category_key(y_raw[i]) for i in keep])
    columns = {k: [v[i] for i in keep] for k, v in columns.items()}
    n = len(y_str)
    if n < MIN_ROWS:
        raise InputDataError(
            f"only {n} usable row(s); at least {MIN_ROWS} are needed to train and evaluate",
            hint="add rows to the CSV (rows with a missing target are dropped)",
        )
    labels = label_names if label_names is not None else sorted(set(y_str.tolist()), key=_label_sort_key)
    counts = {lab: int((y_str == lab).sum()) for lab in labels}
    report["class_counts"] = counts
    if len(labels) < 2:
        raise InputDataError(f"the target has only one class ({labels[0]!r})", hint="a classifier needs two or more")
    small = {k: v for k, v in counts.items() if v < MIN_ROWS_PER_CLASS}
    if small:
        shown = ", ".join(f"{k!r}: {v}" for k, v in list(small.items())[:8])
        raise InputDataError(
            f"{len(small)} class(es) have fewer than {MIN_ROWS_PER_CLASS} rows ({shown})",
            hint="add rows for those classes, merge them, or drop them from the CSV",
        )
    if min(counts.values()) < IMBALANCE_RATIO * max(counts.values()):
        warnings.append(
            f"class imbalance: smallest class has {min(counts.values())} rows, largest {max(counts.values())};"
            " watch macro-F1 rather than accuracy"
        )
    y = np.asarray([labels.index(v) for v in y_str], dtype=np.int64)

    idx = np.arange(n)
    train_frac, val_frac, test_frac = SPLIT
    idx_train, idx_rest = train_test_split(idx, train_size=train_frac, stratify=y, random_state=seed)
    idx_val, idx_test = train_test_split(
        idx_rest, test_size=test_frac / (val_frac + test_frac), stratify=y[idx_rest], random_state=seed
    )
    preprocessing = _fit_encoding(columns, idx_train, warnings, report, image_shape)
    x = encode_columns(columns, preprocessing)
    report["features"] = len(preprocessing["feature_names"])
    report["split"] = {"train": len(idx_train), "val": len(idx_val), "test": len(idx_test), "seed": seed}
    return PreparedData(
        name=name,
        x_train=x[idx_train],
        y_train=y[idx_train],
        x_val=x[idx_val],
        y_val=y[idx_val],
        x_test=x[idx_test],
        y_test=y[idx_test],
        labels=[str(lab) for lab in labels],
        preprocessing=preprocessing,
        source=source,
        report=report,
        warnings=warnings,
    )


def _fit_encoding(
    columns: dict[str, list[Any]],
    idx_train: np.ndarray,
    warnings: list[str],
    report: dict[str, Any],
    image_shape: list[int] | None,
) -> dict[str, Any]:
    specs: list[dict[str, Any]] = []
    constant: list[str] = []
    missing_counts: dict[str, int] = {}
    categorical: list[str] = []
    train_set = set(idx_train.tolist())
    for name, values in columns.items():
        n_missing = sum(1 for v in values if is_missing(v))
        if n_missing:
            missing_counts[name] = n_missing
        present_train = [v for i, v in enumerate(values) if i in train_set and not is_missing(v)]
        numeric = _as_floats(present_train)
        if image_shape is not None:  # pixels: keep every column, even the constant ones
            specs.append({"name": name, "kind": "numeric", "fill": float(np.median(numeric)) if numeric else 0.0})
            continue
        if numeric is not None:
            if len(set(numeric)) <= 1:
                constant.append(name)
                continue
            specs.append({"name": name, "kind": "numeric", "fill": float(np.median(numeric))})
        else:
            vocab = sorted({category_key(v) for v in present_train})
            if len(vocab) <= 1:
                constant.append(name)
                continue
            if len(vocab) > MAX_VOCABULARY:
                raise InputDataError(
                    f"column {name!r} is not numeric and has {len(vocab)} distinct values"
                    f" (more than {MAX_VOCABULARY} for a one-hot encoding)",
                    hint="drop the column (an identifier?) or bucket it into fewer categories",
                )
            categorical.append(name)
            specs.append({"name": name, "kind": "categorical", "vocabulary": vocab})
    if not specs:
        raise InputDataError("no usable feature columns (all are constant)", hint="check the CSV's columns")
    if constant:
        warnings.append(f"dropped {len(constant)} constant column(s): {', '.join(constant[:10])}")
    if missing_counts:
        total = sum(missing_counts.values())
        warnings.append(
            f"imputed {total} missing value(s) in {len(missing_counts)} column(s)"
            " (numeric: training median; categorical: all-zero one-hot)"
        )
    if categorical:
        warnings.append(f"one-hot encoded {len(categorical)} categorical column(s): {', '.join(categorical)}")
    report.update({"missing_values": missing_counts, "constant_columns": constant, "categorical_columns": categorical})
    preprocessing: dict[str, Any] = {
        "layout": "NHWC" if image_shape is not None else "features",
        "columns": specs,
        "missing": "numeric -> training median ('fill'); categorical missing or unknown -> all-zero one-hot",
        "encoder": "device_agent.protocol.features.encode_records",
    }
    if image_shape is not None:
        preprocessing["image_shape"] = list(image_shape)
    preprocessing["vocabularies"] = {c["name"]: c["vocabulary"] for c in specs if c["kind"] == "categorical"}
    preprocessing["feature_names"] = encoded_feature_names(preprocessing)
    return preprocessing


def _as_floats(values: list[Any]) -> list[float] | None:
    out: list[float] = []
    for v in values:
        if isinstance(v, bool):
            return None
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            return None
    return out


def _label_sort_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _hash_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
