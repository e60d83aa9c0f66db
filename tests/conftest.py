"""Shared fixtures: seeded generators and small synthetic study sets built in memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from daskmeta.model.grid import load_mask
from daskmeta.model.studyset import StudySet


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)


def random_studyset(
    n_studies: int = 6, peaks_per_study: int = 3, seed: int = 0, null_studies: int = 1
) -> StudySet:
    """Studies with peaks at random grey-matter voxels (the last ``null_studies`` have none)."""
    gen = np.random.default_rng(seed)
    mask = load_mask("gray_matter")
    rows, peaks = [], []
    for s in range(n_studies):
        n2 = np.nan if s % 3 == 2 else float(gen.integers(15, 40))
        rows.append({"study": f"study{s:02d}", "n1": float(gen.integers(15, 40)), "n2": n2,
                     "t_thr": 3.2, "age": float(gen.uniform(20, 60)),
                     "modality": "A" if s % 2 else "B"})
        if s >= n_studies - null_studies:
            continue
        for line, voxel in enumerate(gen.integers(0, mask.n_voxels, peaks_per_study), start=1):
            x, y, z = mask.xyz[voxel]
            t = float(gen.choice([-1, 1]) * (3.2 + gen.exponential(1.5)))
            peaks.append({"study": f"study{s:02d}", "x": x, "y": y, "z": z, "t": t,
                          "x_orig": x, "y_orig": y, "z_orig": z, "space": "spm_mni",
                          "source": "memory", "line": line})
    columns = ["study", "x", "y", "z", "t", "x_orig", "y_orig", "z_orig", "space", "source", "line"]
    return StudySet(pd.DataFrame(rows), pd.DataFrame(peaks, columns=columns), source="memory")


@pytest.fixture
def small_studies() -> StudySet:
    return random_studyset()


@pytest.fixture(scope="session")
def make_studyset():
    """The :func:`random_studyset` factory, for tests that need their own sizes or seeds."""
    return random_studyset


class CountingScheduler:
    """A Dask scheduler that counts its calls: a graph builder must not compute."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, dsk, keys, **kwargs):
        import dask

        self.count += 1
        return dask.get(dsk, keys, **kwargs)


@pytest.fixture
def counting_scheduler():
    """A fresh :class:`CountingScheduler`; use it with ``dask.config.set(scheduler=...)``."""
    return CountingScheduler()
