"""Seeded simulation of coordinate-based studies, written as SDM folders.

Published meta-analyses rarely come with their studies' peak coordinates, and tests need
studies whose truth is known. This module draws peaks for a table of studies (real sample
sizes, thresholds and peak counts, or a synthetic table from
:func:`~daskmeta.testing.synthetic.simulate_table`) around planted :class:`TrueEffect` locations and
writes the SDM folder of docs/methods.md, section 1 (with :func:`~daskmeta.io.sdm_writer.write_studyset`).

The generative model [C, chosen here; every number is a parameter]:

1. **Peak count**: the table's ``n_peaks`` (0 = a null study, ``STUDY.no_peaks.txt``); a
   missing count is the median of the studies of the same ``modality``, rounded half up.
2. **Threshold**: the table's ``t_thr``, else :func:`threshold_t` of its ``threshold`` text.
3. **True effects**: each :class:`TrueEffect` of the study's modality (or without a modality
   filter) is reported with probability ``1 - (1 - probability) ** (n_eff / reference_n)``,
   ``n_eff = 1 / (1/n1 + 1/n2)`` (``n1`` one-sample): larger studies detect more often, as
   independent chances accumulate; a study of ``n_eff = reference_n`` (12.5: 25 vs 25)
   reports it with exactly ``probability``. If more effects are reported than the study has
   peaks, a random subset is kept. The peak is the location plus Gaussian jitter of
   ``jitter_mm`` per axis (4 mm: mean 3-D displacement 6.4 mm, about the between-study
   spatial uncertainty of Eickhoff et al. 2009), redrawn until its voxel is in the mask.
4. **Spurious peaks**: the rest are mask voxels drawn uniformly, at least
   ``min_distance_mm`` (8 mm, SPM's peak separation) from the study's other peaks when
   possible, with a random sign.
5. **Peak values**: ``|t| = t_thr + e / (J * sqrt(1/n1 + 1/n2))``, where ``e``, the excess
   of the peak's Hedges g over the threshold's, is exponential of scale ``true_excess_g``
   (0.3) or ``spurious_excess_g`` (0.1) truncated at 3 scales: a 25 vs 25 study at t_thr
   3.27 (g 0.91) reports true peaks of g ~ 1.15, never above 1.81. ``t_thr`` is written
   with 4 decimals and ``|t|`` rounded up to 2, so ``|t| >= t_thr`` holds in the files.
   The sign is the effect's (+: patients > controls).
6. **Space**: peaks are drawn in SPM-MNI and written as integers to ``STUDY.spm_mni.txt``;
   studies whose ``space`` is Talairach go to ``STUDY.other_tal.txt`` through Lancaster's
   ``icbm_spm`` (the inverse of the reader's ``other_tal`` transform), with 2 decimals.

Randomness: study ``s`` draws from
``default_rng(SeedSequence(seed, spawn_key=(crc32(s),)))``, so its peaks depend only on the
seed, its name and its row: editing, adding or removing a study leaves the others alone,
and the same seed writes a byte-identical folder.

References
----------
Eickhoff SB et al. (2009). Coordinate-based activation likelihood estimation meta-analysis
of neuroimaging data: a random-effects approach based on empirical estimates of spatial
uncertainty. Hum Brain Mapp 30:2907-2926.
Lancaster JL et al. (2007). Bias between MNI and Talairach coordinates analyzed using the
ICBM-152 brain template. Hum Brain Mapp 28:1194-1205.
"""

from __future__ import annotations

import functools
import math
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from daskmeta.errors import plain
from daskmeta.io.sdm_writer import write_studyset
from daskmeta.model.coordinates import mni_to_tal, to_spm_mni
from daskmeta.model.grid import Mask, MaskName, ijk_to_mm, in_grid, load_mask, mm_to_ijk
from daskmeta.model.studyset import StudySet
from daskmeta.stats.effect_size import degrees_of_freedom, hedges_j, sampling_term, t_from_p

#: Columns of a simulation table that steer the simulation and are not written as covariates.
CONTROL_COLUMNS = ("study", "n1", "n2", "t_thr", "threshold", "space", "n_peaks")
#: Voxel-level one-tailed p assumed for a study whose threshold text says "corrected".
CORRECTED_VOXEL_P = 0.001

_SPACES = {"mni": "spm_mni", "talairach": "other_tal"}
_CORRECTED = re.compile(r"\b(corrected|fwe|fdr|grf|alphasim|tfce|monte\s*carlo)\b", re.I)
_UNCORRECTED = re.compile(r"\b(uncorrected|unc)\b", re.I)
_P_VALUE = re.compile(r"p\s*(?:<=|<|=|≤)\s*((?:\d+\.?\d*|\.\d+)(?:e-?\d+)?)", re.I)


@dataclass(frozen=True)
class TrueEffect:
    """A planted effect: a location that studies report with some probability.

    Attributes
    ----------
    x, y, z : float
        Location in SPM-MNI mm.
    sign : {+1, -1}
        Direction (+1: patients > controls).
    modality : str or None
        Only studies whose ``modality`` equals it report the effect; None = every study.
    probability : float
        Probability that a study of effective sample size ``reference_n`` reports it.
    name : str
        Label used in :attr:`StudySet.peaks` ``effect`` column.
    """

    x: float
    y: float
    z: float
    sign: int = 1
    modality: str | None = None
    probability: float = 0.8
    name: str = "effect"

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise ValueError(f"TrueEffect sign must be +1 or -1; {plain(self.sign)!r} was provided")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(
                f"TrueEffect probability must lie in [0, 1]; {plain(self.probability)!r} was provided"
            )

    @property
    def xyz(self) -> NDArray[np.float64]:
        """The location as an array of shape (3,)."""
        return np.array([self.x, self.y, self.z], dtype=np.float64)


def threshold_t(
    threshold: str, n1: float, n2: float | None = None, corrected_p: float = CORRECTED_VOXEL_P
) -> float:
    """The t a study's peaks had to exceed, from the threshold text of a study table (chosen here).

    * ``"... uncorrected"`` with ``p < X``: the t of one-tailed ``p = X`` (SPM's t contrasts
      are one-tailed, and docs/methods.md, section 1.4, converts ``p_thr`` the same way).
    * ``"... corrected"`` (also FWE, FDR, GRF, AlphaSim, TFCE, Monte Carlo): the corrected p
      is cluster- or family-wise, not the voxel threshold peaks must pass; the usual
      cluster-forming threshold, one-tailed ``p = corrected_p`` (0.001), is assumed.

    Parameters
    ----------
    threshold : str
        E.g. ``"p<0.05 corrected"`` or ``"p<0.001 uncorrected"``.
    n1, n2 : float
        Sample sizes (``n2`` NaN or None for a one-sample study) giving the degrees of freedom.
    corrected_p : float, default 0.001
        Voxel-level one-tailed p assumed for a corrected threshold.

    Returns
    -------
    float
        The positive threshold t.

    Examples
    --------
    >>> round(threshold_t("p<0.05 corrected", 25, 26), 4)
    3.2651
    >>> round(threshold_t("p<0.05 uncorrected", 13, 13), 4)
    1.7109
    """
    if not isinstance(threshold, str):
        raise TypeError(f"threshold must be a str; {type(threshold).__name__} was provided")
    df = degrees_of_freedom(n1, n2)
    if _UNCORRECTED.search(threshold):
        match = _P_VALUE.search(threshold)
        if match is None:
            raise ValueError(
                f"threshold {threshold!r} says uncorrected but gives no 'p<X'; "
                "write e.g. 'p<0.001 uncorrected' or give a t_thr column"
            )
        p = float(match.group(1))
    elif _CORRECTED.search(threshold):
        p = corrected_p
    else:
        raise ValueError(
            f"threshold {threshold!r} is neither 'corrected' nor 'uncorrected'; "
            "write e.g. 'p<0.05 corrected' or 'p<0.001 uncorrected', or give a t_thr column"
        )
    if not 0.0 < p < 1.0:
        raise ValueError(f"threshold {threshold!r}: p must lie in (0, 1), got {p}")
    return float(t_from_p(p, df))


@functools.cache
def _voxel_tree(mask: Mask) -> cKDTree:
    return cKDTree(mask.xyz)


def _jittered_voxel(
    rng: np.random.Generator, centre: NDArray[np.float64], jitter_mm: float, mask: Mask
) -> NDArray[np.float64]:
    """The mask voxel of ``centre`` + N(0, jitter_mm^2 I), drawn again until it is in the mask.

    Redrawing keeps the displacement Gaussian, restricted to the mask; after 100 misses the
    last point is snapped to the nearest mask voxel.
    """
    for _attempt in range(100):
        point = centre + rng.normal(0.0, jitter_mm, 3)
        ijk = mm_to_ijk(point)
        if in_grid(ijk)[0] and mask.volume[tuple(ijk[0])]:
            return ijk_to_mm(ijk)[0]
    return mask.xyz[_voxel_tree(mask).query(point)[1]]


def _fill_n_peaks(table: pd.DataFrame) -> pd.Series:
    counts = pd.to_numeric(table["n_peaks"], errors="coerce")
    groups = table["modality"] if "modality" in table else pd.Series("", index=table.index)
    for idx in counts[counts.isna()].index:
        known = counts[(groups == groups[idx]) & counts.notna()]
        if known.empty:
            raise ValueError(
                f"n_peaks of study {plain(table.at[idx, 'study'])!r} is missing and no study of its "
                "modality has one to take the median of; give n_peaks"
            )
        counts[idx] = math.floor(float(known.median()) + 0.5)
    if (counts < 0).any() or (counts % 1 != 0).any():
        bad = table.loc[(counts < 0) | (counts % 1 != 0), "study"].iloc[0]
        raise ValueError(f"n_peaks of study {plain(bad)!r} must be a whole number >= 0")
    return counts.astype(np.int64)


def _study_thresholds(table: pd.DataFrame, corrected_p: float) -> pd.Series:
    given = (pd.to_numeric(table["t_thr"], errors="coerce") if "t_thr" in table
             else pd.Series(np.nan, index=table.index))
    out = {}
    for idx, row in table.iterrows():
        if pd.notna(given[idx]):
            out[idx] = float(given[idx])
        elif "threshold" in table and isinstance(row["threshold"], str):
            out[idx] = threshold_t(row["threshold"], row["n1"], row["n2"], corrected_p)
        else:
            raise ValueError(
                f"study {row['study']!r} has neither t_thr nor threshold text; give one"
            )
    return pd.Series(out).round(4)


def _check_table(table: pd.DataFrame, effects: Sequence[TrueEffect]) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas.DataFrame; {type(table).__name__} was provided")
    missing = [c for c in ("study", "n1", "n_peaks") if c not in table]
    if missing:
        raise ValueError(f"table lacks columns {missing}; it has {list(table.columns)}")
    table = table.reset_index(drop=True).copy()
    if "n2" not in table:
        table["n2"] = np.nan
    for column in ("n1", "n2"):
        sizes = pd.to_numeric(table[column], errors="coerce")
        bad = table[column].notna() & ~(sizes > 0) | (column == "n1") & sizes.isna()
        if bad.any():
            raise ValueError(
                f"{column} of study {plain(table.loc[bad, 'study'].iloc[0])!r} must be a positive "
                f"number; {table.loc[bad, column].iloc[0]} was provided"
            )
        table[column] = sizes
    names = table["study"]
    bad = [n for n in names if not isinstance(n, str) or not n or re.search(r"[/\\\s]", n)]
    if bad:
        raise ValueError(f"study names must be non-empty without spaces or slashes; got {plain(bad[0])!r}")
    if names.duplicated().any():
        raise ValueError(f"duplicate study name {plain(names[names.duplicated()].iloc[0])!r}")
    if any(e.modality is not None for e in effects) and "modality" not in table:
        raise ValueError("an effect has a modality filter but the table has no 'modality' column")
    if "space" in table:
        spaces = table["space"].fillna("MNI").astype(str).str.lower()
        unknown = sorted(set(spaces) - set(_SPACES))
        if unknown:
            raise ValueError(f"space must be one of ['MNI', 'Talairach']; got {unknown}")
    return table


def _excess_g(rng: np.random.Generator, mean: float) -> float:
    """Exponential draw of scale ``mean`` truncated at ``3 * mean`` (inverse CDF)."""
    return float(-mean * np.log1p(-rng.random() * (1.0 - np.exp(-3.0))))


def _draw_study(
    rng: np.random.Generator,
    row: pd.Series,
    n_peaks: int,
    t_thr: float,
    effects: Sequence[TrueEffect],
    mask: Mask,
    opts: dict[str, float],
) -> list[tuple[NDArray[np.float64], float, str]]:
    n2 = row["n2"] if pd.notna(row["n2"]) else np.nan
    term = float(sampling_term(row["n1"], n2))
    t_per_g = 1.0 / (float(hedges_j(degrees_of_freedom(row["n1"], n2))) * math.sqrt(term))
    applicable = [e for e in effects if e.modality is None or e.modality == row.get("modality")]
    chance = [1.0 - (1.0 - e.probability) ** (1.0 / term / opts["reference_n"])
              for e in applicable]
    reported = [e for e, p in zip(applicable, chance, strict=True) if rng.random() < p]
    if len(reported) > n_peaks:
        keep = np.sort(rng.choice(len(reported), n_peaks, replace=False))
        reported = [reported[i] for i in keep]
    voxels = mask.xyz
    peaks: list[tuple[NDArray[np.float64], float, str]] = []
    for effect in reported:
        excess = _excess_g(rng, opts["true_excess_g"]) * t_per_g
        peaks.append((_jittered_voxel(rng, effect.xyz, opts["jitter_mm"], mask),
                      effect.sign * (t_thr + excess), effect.name))
    for _ in range(n_peaks - len(reported)):
        for _attempt in range(100):
            xyz = voxels[rng.integers(len(voxels))]
            if all(np.linalg.norm(xyz - p[0]) >= opts["min_distance_mm"] for p in peaks):
                break
        sign = 1.0 if rng.random() < 0.5 else -1.0
        excess = _excess_g(rng, opts["spurious_excess_g"]) * t_per_g
        peaks.append((xyz, sign * (t_thr + excess), ""))
    return peaks


def _round_t(t: float) -> float:
    """``t`` rounded away from zero to 2 decimals, so ``|t| >= t_thr`` survives rounding.

    The inner round keeps ``3.27 * 100 = 327.00000000000006`` from becoming 3.28.
    """
    return math.copysign(math.ceil(round(abs(t) * 100, 6)) / 100, t)


def simulate_studyset(
    table: pd.DataFrame,
    effects: Sequence[TrueEffect] | None,
    seed: int,
    mask: MaskName | Mask = "gray_matter",
    *,
    jitter_mm: float = 4.0,
    reference_n: float = 12.5,
    true_excess_g: float = 0.3,
    spurious_excess_g: float = 0.1,
    min_distance_mm: float = 8.0,
    corrected_p: float = CORRECTED_VOXEL_P,
    covariates: Sequence[str] | None = None,
) -> StudySet:
    """Simulate the peaks of a table of studies in memory (model in the module docs).

    Parameters
    ----------
    table : pandas.DataFrame
        One row per study: ``study`` (unique, no spaces or slashes), ``n1``, ``n2`` (NaN:
        one-sample), ``n_peaks`` (NaN: the modality's median), ``t_thr`` or ``threshold``
        text, optional ``space`` (``MNI`` or ``Talairach``) and ``modality``, covariates.
    effects : list of TrueEffect or None
        Planted effects; None or ``[]`` for null studies (every peak spurious).
    seed : int
        Seed of every draw.
    mask : {'gray_matter', 'white_matter', 'brain'} or Mask, default 'gray_matter'
        Peaks are voxel centres of this mask.
    jitter_mm : float, default 4.0
        Standard deviation per axis (mm) of a true-effect peak around its location.
    reference_n : float, default 12.5
        Effective sample size at which a study reports an effect with its ``probability``.
    true_excess_g, spurious_excess_g : float, default 0.3 and 0.1
        Scale of the exponential excess (truncated at 3x) of a peak's Hedges g over
        the study's threshold g.
    min_distance_mm : float, default 8.0
        Least distance of a spurious peak from the study's other peaks.
    corrected_p : float, default 0.001
        Voxel-level one-tailed p of a "corrected" threshold (:func:`threshold_t`).
    covariates : sequence of str, optional
        Table columns written after ``t_thr``, in this order; default every column not in
        :data:`CONTROL_COLUMNS`.

    Returns
    -------
    StudySet
        ``studies``: ``study, n1, n2, t_thr``, covariates. ``peaks``: what a reader of the
        written folder returns (``x, y, z`` SPM-MNI; ``x_orig, y_orig, z_orig``, ``space``,
        ``source``, ``line`` as written), by decreasing ``|t|`` within a study, plus
        ``effect``: the name of the true effect a peak reports, ``""`` if spurious.

    Examples
    --------
    >>> from daskmeta.testing.synthetic import simulate_table
    >>> effect = TrueEffect(-4, -56, 30, sign=-1, probability=0.9, name="pcc")
    >>> len(simulate_studyset(simulate_table(5, seed=0), [effect], seed=1))
    5
    """
    effects = list(effects or [])
    table = _check_table(table, effects)
    mask = mask if isinstance(mask, Mask) else load_mask(mask)
    opts = {"jitter_mm": jitter_mm, "reference_n": reference_n, "true_excess_g": true_excess_g,
            "spurious_excess_g": spurious_excess_g, "min_distance_mm": min_distance_mm}
    n_peaks = _fill_n_peaks(table)
    t_thr = _study_thresholds(table, corrected_p)
    if covariates is None:
        covariates = [c for c in table.columns if c not in CONTROL_COLUMNS]
    unknown = [c for c in covariates if c not in table]
    if unknown:
        raise ValueError(f"covariates {unknown} are not table columns {list(table.columns)}")
    studies = table[["study", "n1", "n2"]].assign(t_thr=t_thr)
    studies = pd.concat([studies, table[list(covariates)]], axis=1)
    rows = []
    for idx, row in table.iterrows():
        name = row["study"]
        rng = np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),))
        )
        space = row.get("space")
        token = _SPACES[str(space).lower()] if pd.notna(space) else "spm_mni"
        drawn = _draw_study(rng, row, int(n_peaks[idx]), t_thr[idx], effects, mask, opts)
        drawn.sort(key=lambda peak: -abs(peak[1]))
        for line, (xyz, t, label) in enumerate(drawn, start=1):
            written = mni_to_tal(xyz, "spm").round(2) if token == "other_tal" else xyz
            mni = to_spm_mni(written, token)
            rows.append({
                "study": name, "x": mni[0], "y": mni[1], "z": mni[2],
                "t": _round_t(t),
                "x_orig": written[0], "y_orig": written[1], "z_orig": written[2],
                "space": token, "source": f"{name}.{token}.txt", "line": line, "effect": label,
            })
    columns = ["study", "x", "y", "z", "t", "x_orig", "y_orig", "z_orig", "space", "source",
               "line", "effect"]
    peaks = pd.DataFrame(rows, columns=columns)
    log = [f"simulated by daskmeta.testing.simulate with seed {seed}, mask {mask.name!r}, "
           f"{len(effects)} true effects ({', '.join(e.name for e in effects) or 'null'})"]
    return StudySet(studies, peaks, source=f"simulate(seed={seed})", log=log)


def simulate_studies(
    table: pd.DataFrame,
    effects: Sequence[TrueEffect] | None,
    out_dir: str | os.PathLike,
    seed: int,
    mask: MaskName | Mask = "gray_matter",
    *,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Simulate peaks for a table of studies and write them as an SDM folder.

    Writes ``sdm_table.txt`` (tab-separated ``study, n1, n2, t_thr``, covariates; missing
    ``n2`` empty, other missing values ``NA``) and per study ``STUDY.spm_mni.txt``,
    ``STUDY.other_tal.txt`` (Talairach studies) or ``STUDY.no_peaks.txt``, with lines
    ``x<TAB>y<TAB>z<TAB>t`` (docs/methods.md, section 1.2). Same arguments, byte-identical files.

    Parameters
    ----------
    table, effects, seed, mask
        As in :func:`simulate_studyset`.
    out_dir : path
        As in :func:`~daskmeta.io.sdm_writer.write_studyset`.
    overwrite : bool, default False
        Replace an existing non-empty folder.
    **options
        The other parameters of :func:`simulate_studyset` (``jitter_mm``, ``reference_n``,
        ``true_excess_g``, ``spurious_excess_g``, ``min_distance_mm``, ``corrected_p``,
        ``covariates``).

    Returns
    -------
    Path
        ``out_dir``.
    """
    studyset = simulate_studyset(table, effects, seed, mask, **options)
    return write_studyset(studyset, out_dir, overwrite=overwrite)
