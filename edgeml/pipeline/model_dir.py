"""Reading a model folder written by ``edgeml train`` (and refusing anything else clearly)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import InputDataError
from edgeml.pipeline.train import FORMAT, TRAIN_MARKER

REQUIRED = (TRAIN_MARKER, "metrics.json", "profile.json", "golden.json", "lineage.json", "data.npz")


@dataclass
class TrainedModel:
    """A trained model folder: its metadata, data splits and (lazily) the model itself."""

    path: Path
    info: dict[str, Any]
    metrics: dict[str, Any]
    profile: dict[str, Any]
    golden: dict[str, Any]
    lineage: dict[str, Any]
    data: dict[str, np.ndarray]

    @property
    def framework(self) -> str:
        return str(self.info["framework"])

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def labels(self) -> list[str]:
        return list(self.info["labels"])

    @property
    def model_file(self) -> Path:
        return self.path / ("model.keras" if self.framework == "keras" else "model.joblib")

    def load_model(self) -> Any:
        """The Keras or scikit-learn model. Raises InputDataError if it cannot be loaded."""
        try:
            if self.framework == "keras":
                import keras

                return keras.models.load_model(self.model_file, compile=False)
            import joblib

            return joblib.load(self.model_file)
        except Exception as exc:  # noqa: BLE001 - any loader failure means a broken folder
            raise InputDataError(
                f"cannot load {self.model_file}: {exc}", hint="re-create the folder with `edgeml train`"
            ) from exc

    def predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        """Class probabilities of the trained (unconverted) model."""
        if self.framework == "keras":
            return np.asarray(model.predict(x, verbose=0, batch_size=256), dtype=np.float32)
        return np.asarray(model.predict_proba(x), dtype=np.float32)


def open_model_dir(path: str | Path) -> TrainedModel:
    """Open and check a folder produced by ``edgeml train``.

    Raises InputDataError if it is missing, incomplete, of another format, or corrupt.
    """
    p = Path(path)
    hint = "pass a folder written by `edgeml train --out DIR`"
    if not p.is_dir():
        raise InputDataError(f"model folder {str(p)!r} does not exist", hint=hint)
    missing = [f for f in REQUIRED if not (p / f).is_file()]
    if TRAIN_MARKER in missing:
        raise InputDataError(f"{p} is not a folder produced by `edgeml train` (no {TRAIN_MARKER})", hint=hint)
    try:
        info = json.loads((p / TRAIN_MARKER).read_text())
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{p / TRAIN_MARKER} is not valid JSON: {exc}", hint=hint) from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise InputDataError(
            f"{p / TRAIN_MARKER} has format {info.get('format') if isinstance(info, dict) else None!r},"
            f" expected {FORMAT!r}",
            hint="re-train with this version of edgeml",
        )
    model_file = "model.keras" if info.get("framework") == "keras" else "model.joblib"
    if not (p / model_file).is_file():
        missing.append(model_file)
    if missing:
        raise InputDataError(f"{p} is incomplete: missing {', '.join(missing)}", hint=hint)
    try:
        meta = {k: json.loads((p / f"{k}.json").read_text()) for k in ("metrics", "profile", "golden", "lineage")}
        with np.load(p / "data.npz") as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{p} has an unreadable file: {exc}", hint=hint) from exc
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key not in data:
            raise InputDataError(f"{p / 'data.npz'} lacks {key}", hint=hint)
    return TrainedModel(p, info, meta["metrics"], meta["profile"], meta["golden"], meta["lineage"], data)
