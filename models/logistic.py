"""Logistic regression (standardised inside the pipeline) with a GridSearchCV over C (cv=5, f1_macro)."""

from __future__ import annotations

from typing import Any

from models.registry import Recipe


def build(params: dict[str, Any], seed: int) -> Any:
    """An unfitted ``GridSearchCV`` over ``StandardScaler -> LogisticRegression``; the scaler converts
    to ONNX with the model, so devices feed raw features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=2000, random_state=seed))])
    return GridSearchCV(
        pipe,
        param_grid={f"clf__{k}": v for k, v in dict(params["grid"]).items()},
        cv=StratifiedKFold(n_splits=int(params["cv"]), shuffle=True, random_state=seed),
        scoring=params["scoring"],
        n_jobs=1,
    )


RECIPE = Recipe(
    name="logistic",
    framework="sklearn",
    inputs="tabular",
    summary="standardise + logistic regression, GridSearchCV(C; cv=5; f1_macro)",
    build=build,
    defaults={"grid": {"C": [0.1, 1.0, 10.0]}, "cv": 5, "scoring": "f1_macro"},
)
