"""Synthetic CSV data for the pipeline tests: numeric + categorical columns, missing values."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_sensor_csv(path: Path, rows: int = 240, seed: int = 0, missing: bool = True) -> Path:
    """A learnable 3-class CSV: two numeric columns, a categorical ``site``, a constant column,
    a target ``state``; with ``missing`` some numeric and categorical cells are blank."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    state = rng.choice(["idle", "run", "fault"], size=rows, p=[0.4, 0.4, 0.2])
    temp = np.where(state == "fault", 80.0, np.where(state == "run", 55.0, 30.0)) + rng.normal(0, 4, rows)
    vib = np.where(state == "idle", 0.1, 1.0) * rng.uniform(0.5, 1.5, rows)
    site = np.where(state == "fault", rng.choice(["north", "east"], rows), rng.choice(["north", "south", "east"], rows))
    frame = pd.DataFrame({"temp": temp, "vibration": vib, "site": site, "firmware": "1.2", "state": state})
    if missing:
        frame.loc[rng.choice(rows, 12, replace=False), "temp"] = np.nan
        frame.loc[rng.choice(rows, 7, replace=False), "site"] = None
    frame.to_csv(path, index=False)
    return path
