"""Reference profile and golden vectors (pure numpy, no frameworks)."""

from __future__ import annotations

import numpy as np

from device_agent.protocol import CONFIDENCE_EDGES, Histogram, psi
from edgeml.pipeline.profile import feature_profiles, golden_indices, golden_vectors, reference_profile


def test_feature_bins_match_the_device_histogram_and_have_zero_psi_on_training_data() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=500), rng.integers(0, 2, size=500), np.full(500, 3.0)])
    profiles = feature_profiles(x, ["a", "onehot", "const"])
    for j, p in enumerate(profiles):
        assert sorted(p.edges) == p.edges and len(set(p.edges)) == len(p.edges)
        assert abs(sum(p.freqs) - 1) < 1e-4
        h = Histogram.zero(p.edges)
        for v in x[:, j]:
            h.add(float(v))
        np.testing.assert_allclose(h.frequencies(), p.freqs, atol=1e-5)
        assert (psi(p.freqs, h.counts) or 0.0) < 1e-6
    assert len(profiles[0].edges) == 9  # deciles
    assert len(profiles[1].edges) <= 2 and len(profiles[2].edges) == 1


def test_reference_profile_classes_and_confidence() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45], [0.05, 0.95]], dtype=np.float32)
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    ref = reference_profile(x, ["f0", "f1"], ["neg", "pos"], probs, image=False)
    assert ref.classes == {"neg": 0.5, "pos": 0.5}
    assert ref.confidence_edges == list(CONFIDENCE_EDGES)
    assert abs(sum(ref.confidence_freqs) - 1) < 1e-6
    h = Histogram.zero(CONFIDENCE_EDGES)
    for c in probs.max(axis=1):
        h.add(float(c))  # what a device computes from the same float32 outputs
    assert ref.confidence_freqs == h.frequencies()
    assert ref.confidence_freqs[-1] == 0.25 and ref.confidence_freqs[5] == 0.25
    assert ref.feature_kind == "raw" and [f.name for f in ref.features] == ["f0", "f1"]


def test_golden_vectors_cover_classes_and_drop_the_batch_dimension() -> None:
    y = np.array([2, 2, 0, 1, 1, 0])
    idx = golden_indices(y, n=4)
    assert len(idx) == 4 and {int(y[i]) for i in idx[:3]} == {0, 1, 2}
    x = np.zeros((6, 8, 8, 1), dtype=np.float32)
    g = golden_vectors(x[idx], np.eye(3)[y[idx]])
    assert np.asarray(g[0].input).shape == (8, 8, 1) and len(g[0].output) == 3
