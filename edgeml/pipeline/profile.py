"""Reference profile for drift and golden vectors, computed from the training data and a model's outputs.

- Tabular inputs: one :class:`FeatureProfile` per encoded feature (``feature_kind="raw"``), with
  interior bin edges on training deciles and the training frequency of each bin; bins follow
  :class:`device_agent.protocol.Histogram` (value ``v`` goes to bin ``searchsorted(edges, v, "left")``).
- Image inputs: profiles of a few pooled statistics (``feature_kind="pooled"``,
  ``pooling="grid_mean:2x2"``), computed exactly as :func:`device_agent.protocol.features.pooled_statistics`.
- ``classes``: frequency of each predicted label on the held-out test split.
- ``confidence_*``: histogram of the top-class probability on the test split on
  :data:`device_agent.protocol.CONFIDENCE_EDGES`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from device_agent.protocol import CONFIDENCE_EDGES, FeatureProfile, GoldenVector, ReferenceProfile
from device_agent.protocol.features import pooled_feature_names, pooled_statistics

N_BINS = 10
IMAGE_POOLING = "grid_mean:2x2"
N_GOLDEN = 4


def feature_profiles(values: np.ndarray, names: list[str], n_bins: int = N_BINS) -> list[FeatureProfile]:
    """Per-column bin edges on training quantiles (deduplicated) and the training frequency per bin."""
    out = []
    for j, name in enumerate(names):
        col = np.asarray(values[:, j], dtype=np.float64)
        qs = np.quantile(col, np.linspace(0, 1, n_bins + 1)[1:-1])
        edges = np.unique(np.round(qs, 6))
        bins = np.searchsorted(edges, col, side="left")
        counts = np.bincount(bins, minlength=len(edges) + 1)
        freqs = counts / max(1, counts.sum())
        out.append(FeatureProfile(name, [float(e) for e in edges], [round(float(f), 6) for f in freqs]))
    return out


def reference_profile(
    x_train: np.ndarray, feature_names: list[str], labels: list[str], test_probs: np.ndarray, image: bool
) -> ReferenceProfile:
    """Build the drift reference from raw training inputs and the model's test-split probabilities."""
    if image:
        stats = pooled_statistics(x_train, IMAGE_POOLING)
        features = feature_profiles(stats, pooled_feature_names(IMAGE_POOLING))
        kind, pooling = "pooled", IMAGE_POOLING
    else:
        features = feature_profiles(np.asarray(x_train), feature_names)
        kind, pooling = "raw", None
    pred = np.argmax(test_probs, axis=1)
    classes = {lab: round(float(np.mean(pred == i)), 6) for i, lab in enumerate(labels)}
    conf = np.max(test_probs, axis=1)
    edges = list(CONFIDENCE_EDGES)
    counts = np.bincount(np.searchsorted(edges, conf, side="left"), minlength=len(edges) + 1)
    freqs = [round(float(c / max(1, counts.sum())), 6) for c in counts]
    return ReferenceProfile(features, classes, edges, freqs, kind, pooling)


def golden_indices(y_test: np.ndarray, n: int = N_GOLDEN) -> list[int]:
    """Indices of ``n`` test samples, from different classes where possible (deterministic)."""
    chosen: list[int] = []
    for cls in np.unique(y_test):
        if len(chosen) >= n:
            break
        chosen.append(int(np.flatnonzero(y_test == cls)[0]))
    for i in range(len(y_test)):
        if len(chosen) >= n:
            break
        if i not in chosen:
            chosen.append(i)
    return chosen


def golden_vectors(inputs: np.ndarray, outputs: np.ndarray) -> list[GoldenVector]:
    """Golden vectors: each input is ONE sample without the batch dimension (feed ``input[None]``),
    each output the model's probabilities for it."""
    return [
        GoldenVector(np.asarray(x, dtype=np.float32).tolist(), [float(v) for v in np.asarray(y).ravel()])
        for x, y in zip(inputs, outputs)
    ]


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, ROC AUC (binary, or one-vs-rest macro where defined), confusion matrix, per-class report."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, roc_auc_score

    pred = np.argmax(probs, axis=1)
    idx = list(range(len(labels)))
    out: dict[str, Any] = {
        "accuracy": round(float(accuracy_score(y_true, pred)), 6),
        "f1_macro": round(float(f1_score(y_true, pred, average="macro", labels=idx, zero_division=0)), 6),
        "n": int(len(y_true)),
    }
    try:
        if len(labels) == 2:
            out["roc_auc"] = round(float(roc_auc_score(y_true, probs[:, 1])), 6)
        else:
            p = np.clip(probs, 1e-12, None)
            out["roc_auc"] = round(
                float(roc_auc_score(y_true, p / p.sum(axis=1, keepdims=True), multi_class="ovr", labels=idx)), 6
            )
    except ValueError:
        out["roc_auc"] = None
    out["confusion_matrix"] = confusion_matrix(y_true, pred, labels=idx).tolist()
    out["per_class"] = classification_report(
        y_true, pred, labels=idx, target_names=labels, output_dict=True, zero_division=0
    )
    return out
