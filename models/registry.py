"""The recipe registry: every model recipe in ``models/`` and the default per dataset.

A recipe is either a Keras model builder (``framework="keras"``: ``build(input_shape, n_classes,
x_train, params)`` returns a compiled model whose first layer normalises raw features) or a
scikit-learn search (``framework="sklearn"``: ``build(params, seed)`` returns an unfitted
``GridSearchCV``). The pipeline does the fitting, so recipes stay small.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from edgeml.errors import UsageError


@dataclass(frozen=True)
class Recipe:
    """One model recipe: its name, framework, input kind ("tabular" or "image"), defaults and builder."""

    name: str
    framework: str
    inputs: str
    summary: str
    build: Callable[..., Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with ``overrides``. Raises UsageError for an unknown parameter."""
        out = dict(self.defaults)
        for key, value in (overrides or {}).items():
            if key not in out:
                raise UsageError(
                    f"recipe {self.name!r} has no parameter {key!r}",
                    hint=f"its parameters: {', '.join(sorted(out))}",
                )
            out[key] = value
        return out


def recipes() -> dict[str, Recipe]:
    """All recipes by name."""
    from models import cnn, logistic, mlp, random_forest

    return {r.name: r for r in (mlp.RECIPE, cnn.RECIPE, random_forest.RECIPE, logistic.RECIPE)}


def get(name: str) -> Recipe:
    """The recipe called ``name``. Raises UsageError for an unknown name."""
    table = recipes()
    if name not in table:
        raise UsageError(f"unknown recipe {name!r}", hint=f"choose one of: {', '.join(sorted(table))}")
    return table[name]


def default_for(dataset: str) -> str:
    """The default recipe for a dataset: the CNN for digits (8x8x1 images), the MLP otherwise."""
    return "cnn" if dataset == "digits" else "mlp"
