"""``edgeml train``: load and validate data, fit a recipe from ``models/``, write the model folder.

The folder (see docs/INTERFACES.md §1) holds the model (``model.keras`` or ``model.joblib``),
``train.json``, ``metrics.json``, ``profile.json``, ``golden.json``, ``lineage.json`` and
``data.npz``. It is written atomically: a failed run leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeml.errors import UsageError
from edgeml.pipeline import data as data_mod
from edgeml.pipeline.hostinfo import package_versions
from edgeml.pipeline.outputs import atomic_dir, write_json
from edgeml.pipeline.profile import classification_metrics, golden_indices, golden_vectors, reference_profile

TRAIN_MARKER = "train.json"
FORMAT = "edgeml-train/1"

Progress = Callable[[str], None]


def train(
    dataset: str,
    out_dir: str | Path,
    recipe: str | None = None,
    seed: int = 0,
    target: str | None = None,
    params: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train ``recipe`` on ``dataset`` and write the model folder ``out_dir``; return a summary.

    ``params`` overrides recipe defaults (e.g. ``{"epochs": 5}``). Same seed, same result.
    Raises InputDataError for bad data, UsageError for an unknown recipe/parameter or an unusable
    ``out_dir``.
    """
    from models import registry

    say = progress or (lambda _msg: None)
    name = data_mod.dataset_name(dataset)
    recipe_name = recipe or (registry.default_for(dataset) if dataset in data_mod.BUILTIN else "mlp")
    rec = registry.get(recipe_name)
    resolved = rec.params(params)
    if rec.inputs == "image" and dataset != "digits":
        raise UsageError(
            f"recipe {rec.name!r} needs image input (8x8x1 digits); {name!r} is tabular",
            hint="use --recipe mlp, random_forest or logistic",
        )
    say(f"loading {dataset}")
    prepared = data_mod.load(dataset, target=target, seed=seed, image=rec.inputs == "image")
    t0 = time.perf_counter()
    say(f"training {rec.name} on {len(prepared.y_train)} rows")
    if rec.framework == "keras":
        model, fit_info, probs = _fit_keras(rec, prepared, resolved, seed)
    else:
        model, fit_info, probs = _fit_sklearn(rec, prepared, resolved, seed)
    fit_info["seconds"] = round(time.perf_counter() - t0, 2)

    metrics = classification_metrics(prepared.y_test, probs["test"], prepared.labels)
    metrics["val"] = {
        k: v
        for k, v in classification_metrics(prepared.y_val, probs["val"], prepared.labels).items()
        if k in ("accuracy", "f1_macro", "roc_auc", "n")
    }
    profile = reference_profile(
        prepared.x_train, prepared.feature_names, prepared.labels, probs["test"], prepared.is_image
    )
    gi = golden_indices(prepared.y_test)
    golden = golden_vectors(prepared.x_test[gi], probs["test"][gi])
    input_shape = [-1, *prepared.x_train.shape[1:]]
    train_info = {
        "format": FORMAT,
        "name": prepared.name,
        "dataset": dataset,
        "recipe": rec.name,
        "framework": rec.framework,
        "params": resolved,
        "fit": fit_info,
        "seed": seed,
        "target": target,
        "input_shape": input_shape,
        "feature_names": prepared.feature_names,
        "labels": prepared.labels,
        "vocabularies": prepared.preprocessing["vocabularies"],
        "preprocessing": prepared.preprocessing,
        "data_report": prepared.report,
        "warnings": prepared.warnings,
    }
    lineage = {
        "dataset": prepared.source,
        "dataset_sha256": prepared.source.get("sha256"),
        "recipe": rec.name,
        "params": resolved,
        "best_params": fit_info.get("best_params"),
        "seed": seed,
        "split": prepared.report.get("split"),
        "packages": package_versions(),
    }
    say(f"writing {out_dir}")
    with atomic_dir(Path(out_dir), TRAIN_MARKER) as tmp:
        if rec.framework == "keras":
            model.save(tmp / "model.keras")
        else:
            import joblib

            joblib.dump(model, tmp / "model.joblib")
        np.savez_compressed(tmp / "data.npz", **prepared.arrays())  # type: ignore[arg-type]
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "profile.json", profile.to_dict())
        write_json(tmp / "golden.json", {"golden": [g.to_dict() for g in golden], "indices": gi})
        write_json(tmp / "lineage.json", lineage)
        write_json(tmp / TRAIN_MARKER, train_info)  # last: the marker of a complete folder
    return {
        "model_dir": str(out_dir),
        "name": prepared.name,
        "recipe": rec.name,
        "framework": rec.framework,
        "seed": seed,
        "rows": prepared.report.get("split"),
        "features": len(prepared.feature_names),
        "labels": prepared.labels,
        "metrics": {k: metrics[k] for k in ("accuracy", "f1_macro", "roc_auc")},
        "fit": fit_info,
        "warnings": prepared.warnings,
    }


def _fit_keras(
    rec: Any, prepared: data_mod.PreparedData, params: dict[str, Any], seed: int
) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # noqa: BLE001 - older TF: determinism is best effort
        pass
    model = rec.build(tuple(prepared.x_train.shape[1:]), prepared.n_classes, prepared.x_train, params)
    callbacks = []
    if params.get("patience"):
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=int(params["patience"]), restore_best_weights=True
            )
        )
    history = model.fit(
        prepared.x_train,
        prepared.y_train,
        validation_data=(prepared.x_val, prepared.y_val),
        epochs=int(params["epochs"]),
        batch_size=int(params["batch_size"]),
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    probs = {
        "val": np.asarray(model.predict(prepared.x_val, verbose=0, batch_size=256), dtype=np.float32),
        "test": np.asarray(model.predict(prepared.x_test, verbose=0, batch_size=256), dtype=np.float32),
    }
    info = {
        "epochs_run": len(history.history.get("loss", [])),
        "final_val_loss": round(float(history.history["val_loss"][-1]), 6),
    }
    return model, info, probs


def _fit_sklearn(
    rec: Any, prepared: data_mod.PreparedData, params: dict[str, Any], seed: int
) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    search = rec.build(params, seed)
    search.fit(prepared.x_train, prepared.y_train)
    model = search.best_estimator_
    probs = {
        "val": np.asarray(model.predict_proba(prepared.x_val), dtype=np.float32),
        "test": np.asarray(model.predict_proba(prepared.x_test), dtype=np.float32),
    }
    best = {k.replace("clf__", ""): v for k, v in search.best_params_.items()}
    info = {"best_params": best, "cv_score": round(float(search.best_score_), 6), "scoring": params["scoring"]}
    return model, info, probs
