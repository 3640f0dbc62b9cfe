"""Random forest with a GridSearchCV over n_estimators, max_depth and min_samples_split (cv=5, f1_macro)."""

from __future__ import annotations

from typing import Any

from models.registry import Recipe


def build(params: dict[str, Any], seed: int) -> Any:
    """An unfitted ``GridSearchCV`` over a ``RandomForestClassifier`` (single-threaded, seeded)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    return GridSearchCV(
        RandomForestClassifier(random_state=seed, n_jobs=1),
        param_grid=dict(params["grid"]),
        cv=StratifiedKFold(n_splits=int(params["cv"]), shuffle=True, random_state=seed),
        scoring=params["scoring"],
        n_jobs=1,
    )


RECIPE = Recipe(
    name="random_forest",
    framework="sklearn",
    inputs="tabular",
    summary="random forest, GridSearchCV(n_estimators, max_depth, min_samples_split; cv=5; f1_macro)",
    build=build,
    defaults={
        "grid": {"n_estimators": [50, 100], "max_depth": [None, 8], "min_samples_split": [2, 4]},
        "cv": 5,
        "scoring": "f1_macro",
    },
)
