"""Synthetic study tables and ready-made synthetic SDM folders for tests and calibration.

:func:`simulate_table` draws a table of made-up studies (sample sizes, peak counts,
thresholds, spaces, modalities, covariates) for :func:`~daskmeta.testing.simulate.simulate_studies`
and :func:`~daskmeta.testing.simulate.simulate_studyset`; :func:`null_studies` and
:func:`planted_studies` write such a table's simulated peaks as an SDM folder, with no true
effect or one planted effect. The generative model of the peaks is documented in
:mod:`daskmeta.testing.simulate`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from daskmeta.errors import plain
from daskmeta.testing.simulate import TrueEffect, simulate_studies


def simulate_table(
    n_studies: int,
    n1_range: tuple[int, int] = (15, 40),
    seed: int = 0,
    *,
    n2_range: tuple[int, int] | None = None,
    one_sample: bool = False,
    n_peaks_range: tuple[int, int] = (1, 10),
    threshold: str = "p<0.001 uncorrected",
    modalities: Sequence[str] | None = None,
    covariates: Mapping[str, tuple[float, float]] | None = None,
    talairach_fraction: float = 0.0,
    prefix: str = "study",
) -> pd.DataFrame:
    """A synthetic study table for :func:`simulate_studies` and :func:`simulate_studyset`.

    Parameters
    ----------
    n_studies : int
        Number of rows, named ``{prefix}01``, ``{prefix}02``, ...
    n1_range, n2_range : (int, int)
        Inclusive ranges of the uniform integer sample sizes (``n2_range``: ``n1_range``).
    seed : int, default 0
        Seed of the table's draws.
    one_sample : bool, default False
        Leave ``n2`` missing (one-sample studies).
    n_peaks_range : (int, int), default (1, 10)
        Inclusive range of peak counts; include 0 to get null studies.
    threshold : str, default 'p<0.001 uncorrected'
        Threshold text of every study (:func:`~daskmeta.testing.simulate.threshold_t`).
    modalities : sequence of str, optional
        Assigned in turn to the studies as a ``modality`` column.
    covariates : mapping of str to (float, float), optional
        Columns drawn uniformly in ``[low, high)``, rounded to 2 decimals.
    talairach_fraction : float, default 0.0
        Probability that a study reports Talairach coordinates.
    prefix : str, default 'study'

    Returns
    -------
    pandas.DataFrame
        ``study, n1, n2, threshold, space, n_peaks``, then ``modality`` and covariates.

    Examples
    --------
    >>> simulate_table(3, seed=1, covariates={"age": (20, 60)}).columns.tolist()
    ['study', 'n1', 'n2', 'threshold', 'space', 'n_peaks', 'age']
    """
    if n_studies < 1:
        raise ValueError(f"n_studies must be >= 1; {plain(n_studies)!r} was provided")
    for label, (low, high) in {"n1_range": n1_range, "n_peaks_range": n_peaks_range}.items():
        if low > high or low < 0:
            raise ValueError(
                f"{label} must be (low, high) with 0 <= low <= high; got {(low, high)}"
            )
    rng = np.random.default_rng(seed)
    width = max(2, len(str(n_studies)))
    n1 = rng.integers(n1_range[0], n1_range[1] + 1, n_studies)
    low2, high2 = n2_range or n1_range
    n2 = rng.integers(low2, high2 + 1, n_studies).astype(np.float64)
    if one_sample:
        n2[:] = np.nan
    table = pd.DataFrame({
        "study": [f"{prefix}{i + 1:0{width}d}" for i in range(n_studies)],
        "n1": n1,
        "n2": n2,
        "threshold": threshold,
        "space": np.where(rng.random(n_studies) < talairach_fraction, "Talairach", "MNI"),
        "n_peaks": rng.integers(n_peaks_range[0], n_peaks_range[1] + 1, n_studies),
    })
    if modalities:
        table["modality"] = [modalities[i % len(modalities)] for i in range(n_studies)]
    for name, (low, high) in (covariates or {}).items():
        table[name] = np.round(rng.uniform(low, high, n_studies), 2)
    return table


def null_studies(
    out_dir: str | os.PathLike, n_studies: int = 20, seed: int = 0, **table_options: Any
) -> Path:
    """Write an SDM folder of ``n_studies`` synthetic studies with only spurious peaks.

    For null calibration: peaks spread uniformly over grey matter, no true effect.
    ``table_options`` go to :func:`simulate_table`.
    """
    table = simulate_table(n_studies, seed=seed, **table_options)
    return simulate_studies(table, None, out_dir, seed)


def planted_studies(
    out_dir: str | os.PathLike,
    location: Sequence[float] = (-4.0, -56.0, 30.0),
    n_studies: int = 20,
    seed: int = 0,
    sign: int = 1,
    probability: float = 0.9,
    **table_options: Any,
) -> Path:
    """Write an SDM folder where most studies report a peak near ``location``.

    One :class:`TrueEffect` named ``planted`` at ``location`` (SPM-MNI mm) with ``sign`` and
    ``probability``; with the defaults about two studies in three report a peak within
    8 mm of it (72% of jittered peaks land within 8 mm). ``table_options`` go to
    :func:`simulate_table`.
    """
    effect = TrueEffect(*location, sign=sign, probability=probability, name="planted")
    table = simulate_table(n_studies, seed=seed, **table_options)
    return simulate_studies(table, [effect], out_dir, seed)
