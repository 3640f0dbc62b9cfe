"""A runtime shared by request threads with different batch sizes never fails a request."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from device_agent.runtime import load_runtime


def test_mixed_batch_sizes_from_many_threads(tiny_models: dict[str, Path]) -> None:
    rt = load_runtime(tiny_models["good1"], "tflite", "auto", 1, [4])
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 4)).astype(np.float32) for n in (1, 4, 1, 7, 1, 2)]
    expected = [rt.run(b) for b in batches]
    errors: list[BaseException] = []
    wrong: list[int] = []

    def worker(k: int) -> None:
        for i in range(300):
            j = (k + i) % len(batches)
            try:
                y = rt.run(batches[j])
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)
                return
            if y.shape != expected[j].shape or not np.allclose(y, expected[j], atol=1e-6):
                wrong.append(j)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert not wrong
