"""How conservative the family-wise error corrections of a mean are on null meta-analyses.

A mean analysis (:func:`daskmeta.analyses.means.mean`) gives two family-wise error (FWE)
corrected p-values:

- **voxel** (docs/methods.md, section 5.3): the observed extreme z against the maxima
  ``null_peak_max_z`` (minima ``null_peak_min_z``) of the cluster-extent null's maps where it
  ran, else against ``null_max_z`` (``null_min_z``) of the voxel-relocation null (section 5.1);
- **cluster** (section 5.4): the observed largest cluster above the voxel null's ``p <
  voxel_p`` thresholds against the largest clusters ``null_max_cluster_pos`` /
  ``null_max_cluster_neg`` of the cluster-extent null, which relocates each study's peaks and
  recreates its map with the kernel of section 3.2.

This module runs ``R`` null meta-analyses: random-peak studies (peaks uniform over grey
matter, random signs, no true effect; :mod:`daskmeta.testing.simulate`) recreated with the
kernel of sections 3.2-3.4 at a chosen ``anisotropy``, pooled by :func:`mean`, and records per
replicate and direction the smallest FWE p of each kind, which is the p of the largest
cluster (resp. the extreme z). Everything goes through the public functions, so a change to
the nulls shows here without a change to this module.

**The yardstick.** A calibrated test's smallest p is uniform on ``{1/(1+B), ..., 1}`` up to
ties; what "calibrated" gives with the nulls' own ties and discreteness is measured from the
null itself: randomization ``b``'s own largest cluster (extreme z) judged against the other
``B - 1``, ``(1 + #{b' != b: null_b' >= null_b}) / B``. These leave-one-out p-values are
exchangeable with what an observed map would get if it were distributed like a randomization;
their mean and median are what the observed smallest p should show if the test is exact.
Observed p-values well above them mean the correction is conservative (section 5.3 expects it of
the voxel correction on smooth maps); a rejection rate at ``alpha`` above its binomial bound
(:func:`rejection_limit`) would mean it is invalid. ``benchmarks/cluster_calibration.py`` prints
the table (:func:`summarize`); ``benchmarks/README.md`` has the figures.

Randomness: replicate ``r`` of seed ``s`` draws its study table, its peaks and its null from
the three words of ``SeedSequence(s, spawn_key=(r,))`` (:func:`replicate_seeds`), so a
replicate depends only on ``(s, r)``, not on how many replicates are run.

Examples
--------
>>> from daskmeta.testing.calibration import fwe_p, leave_one_out_p
>>> fwe_p([3, 0], [1, 3, 5, 0]).tolist()        # (1 + #{null >= obs}) / (1 + B); 0 gives 1
[0.6, 1.0]
>>> leave_one_out_p([1, 3, 5, 0]).tolist()      # each against the 3 others, (1 + count) / B
[0.75, 0.5, 0.25, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from daskmeta.analyses.means import mean
from daskmeta.analyses.recreate import recreate
from daskmeta.model.grid import load_mask
from daskmeta.stats.labelling import largest_cluster
from daskmeta.stats.pvalues import z_threshold_for_p
from daskmeta.testing.simulate import simulate_studyset
from daskmeta.testing.synthetic import simulate_table

__all__ = [
    "COLUMNS",
    "KINDS",
    "calibration_run",
    "cluster_thresholds",
    "fwe_p",
    "leave_one_out_p",
    "null_meta_analysis",
    "rejection_limit",
    "replicate_rows",
    "replicate_seeds",
    "summarize",
]

Tail = Literal["upper", "lower"]

#: The two FWE corrections: ``cluster`` (docs/methods.md, section 5.4), ``voxel`` (section 5.3).
KINDS = ("cluster", "voxel")
#: Directions, each with the tail of its statistic (a cluster's size is always "upper").
DIRECTIONS = ("positive", "negative")
#: Parameter columns of every row (one configuration of :func:`calibration_run`).
CONFIG_COLUMNS = ("n_studies", "permutations", "anisotropy", "voxel_p")
#: Columns of :func:`replicate_rows` and :func:`calibration_run`, in order.
COLUMNS = (
    "replicate", "seed", *CONFIG_COLUMNS, "n_peaks", "kind", "direction", "threshold",
    "observed", "p", "null_median", "yardstick_mean", "yardstick_median", "yardstick_rejection",
)
#: Summary statistics of :func:`summarize`, in order.
SUMMARY_COLUMNS = (
    "n", "mean_p", "median_p", "yardstick_mean", "yardstick_median", "rejections", "rate",
    "rate_upper", "yardstick_rate", "rejection_limit",
)


def _tail(tail: str) -> Tail:
    if tail not in ("upper", "lower"):
        raise ValueError(f"tail must be 'upper' or 'lower'; {tail!r} was provided")
    return tail  # type: ignore[return-value]


def fwe_p(observed: ArrayLike, null: ArrayLike, tail: Tail = "upper") -> NDArray[np.float64]:
    """Family-wise corrected p of observed statistics against per-randomization extremes.

    ``(1 + #{b: null_b >= obs}) / (1 + B)`` for the upper tail (a cluster's size, the largest
    z), ``(1 + #{b: null_b <= obs}) / (1 + B)`` for the lower tail (the smallest z); an
    observation that is not beyond 0 (a cluster of 0 voxels, a largest z <= 0, a smallest
    z >= 0) gets 1 (docs/methods.md, sections 5.3 and 5.4; the form of
    :func:`daskmeta.stats.pvalues.cluster_p_fwe` and :func:`~daskmeta.stats.pvalues.p_fwe`).

    Parameters
    ----------
    observed : array_like
        Observed statistics, any shape.
    null : array_like, shape (B,)
        The extreme of each randomization (``null_max_cluster_pos``, ``null_max_z``, ...).
    tail : {'upper', 'lower'}, default 'upper'

    Returns
    -------
    ndarray of float64
        p-values, the shape of ``observed``.

    Examples
    --------
    >>> fwe_p(-2.5, [-1.0, -3.0, -2.5], tail="lower").item()
    0.75
    """
    tail = _tail(tail)
    null = np.sort(np.asarray(null, dtype=np.float64).ravel())
    if null.size == 0:
        raise ValueError("null must hold at least one randomization")
    observed = np.asarray(observed, dtype=np.float64)
    if tail == "upper":
        count = null.size - np.searchsorted(null, observed, side="left")
        beyond = observed > 0
    else:
        count = np.searchsorted(null, observed, side="right")
        beyond = observed < 0
    return np.where(beyond, (1.0 + count) / (1.0 + null.size), 1.0)


def leave_one_out_p(null: ArrayLike, tail: Tail = "upper") -> NDArray[np.float64]:
    """Each randomization's extreme judged against the other ``B - 1``: a calibrated test's p.

    ``p_b = (1 + #{b' != b: null_b' >= null_b}) / B`` (upper tail; ``<=`` for the lower), 1
    where ``null_b`` is not beyond 0, as :func:`fwe_p`. Under the null, an observed map is one
    more draw exchangeable with the randomizations, so these p-values have the distribution
    (ties and discreteness included) that :func:`fwe_p` of an exact test has with ``B - 1``
    randomizations: the yardstick of :func:`summarize`.

    Parameters
    ----------
    null : array_like, shape (B,), B >= 2
    tail : {'upper', 'lower'}, default 'upper'

    Returns
    -------
    ndarray of float64, shape (B,)
    """
    tail = _tail(tail)
    values = np.asarray(null, dtype=np.float64).ravel()
    if values.size < 2:
        raise ValueError(f"leave-one-out needs at least 2 randomizations; {values.size} were given")
    ordered = np.sort(values)
    if tail == "upper":
        count = values.size - np.searchsorted(ordered, values, side="left") - 1
        beyond = values > 0
    else:
        count = np.searchsorted(ordered, values, side="right") - 1
        beyond = values < 0
    return np.where(beyond, (1.0 + count) / values.size, 1.0)


def cluster_thresholds(null_hist: ArrayLike, voxel_p: float) -> tuple[float, float]:
    """The z thresholds the cluster-extent null labels at (docs/methods.md, sections 5.2, 5.4).

    ``p < voxel_p`` strictly, as the observed map is thresholded: the z at which the voxel
    null's one-tailed p first drops to ``nextafter(voxel_p, 0)`` or below
    (:func:`~daskmeta.stats.pvalues.z_threshold_for_p`; the same numbers as
    ``daskmeta.null.randomization._thresholds``, which the tests check).

    Returns
    -------
    z_pos, z_neg : float
        Positive clusters are ``z >= z_pos``, negative ones ``z <= z_neg``.
    """
    return z_threshold_for_p(np.asarray(null_hist), float(np.nextafter(voxel_p, 0.0)))


def replicate_seeds(seed: int, replicate: int) -> tuple[int, int, int]:
    """Seeds of replicate ``replicate``: study table, peaks, null (``SeedSequence(seed, (r,))``)."""
    words = np.random.SeedSequence(seed, spawn_key=(replicate,)).generate_state(3)
    return int(words[0]), int(words[1]), int(words[2])


def null_meta_analysis(
    seed: int,
    replicate: int = 0,
    n_studies: int = 20,
    permutations: int = 200,
    anisotropy: float = 1.0,
    voxel_p: float = 0.005,
) -> tuple[xr.Dataset, int]:
    """One computed null meta-analysis: random-peak studies, recreated, pooled, judged.

    :func:`~daskmeta.testing.synthetic.simulate_table` (``n_studies`` rows, its defaults: 1-10
    peaks per study, ``p < 0.001`` thresholds) and
    :func:`~daskmeta.testing.simulate.simulate_studyset` with no true effect (peaks uniform over
    grey matter, random signs); :func:`~daskmeta.analyses.recreate.recreate` at ``anisotropy``
    (docs/methods.md, sections 3.2-3.4; FWHM 20 mm, grey-matter mask); then
    :func:`~daskmeta.analyses.means.mean` with ``permutations`` randomizations and the
    cluster-extent null at ``voxel_p`` (sections 4-5), computed with the threaded scheduler.

    Returns
    -------
    result : xarray.Dataset
        The computed mean.
    n_peaks : int
        The peaks of all studies.
    """
    table_seed, peak_seed, null_seed = replicate_seeds(seed, replicate)
    studies = simulate_studyset(simulate_table(n_studies, seed=table_seed), [], seed=peak_seed)
    maps = recreate(studies, anisotropy=anisotropy).persist(scheduler="threads")
    result = mean(maps, permutations=permutations, seed=null_seed, voxel_p=voxel_p)
    return result.compute(scheduler="threads"), len(studies.peaks)


def replicate_rows(result: xr.Dataset, replicate: int = 0, seed: int = 0,
                   n_peaks: int = -1) -> pd.DataFrame:
    """The smallest FWE p of each kind and direction of one computed mean, with its yardstick.

    For each direction: the **cluster** row holds the largest 26-connected cluster of ``z >=
    z_pos`` (``z <= z_neg``) at the cluster-extent null's own thresholds
    (:func:`cluster_thresholds` of ``null_hist`` and ``attrs['voxel_p']``), its p from
    :func:`fwe_p` against ``null_max_cluster_pos`` (``_neg``), which is the smallest
    ``cluster_p_fwe`` of that direction (docs/methods.md, section 5.4); the **voxel** row the
    largest (smallest) z and its ``p_fwe`` from the result (section 5.3), 1 where no z is of
    that sign. Both carry the mean, the median and the fraction ``<= 0.05`` of
    :func:`leave_one_out_p` of their null.

    Parameters
    ----------
    result : xarray.Dataset
        A computed :func:`~daskmeta.analyses.means.mean` whose cluster-extent null ran
        (``attrs['cluster_null']``).
    replicate, seed, n_peaks : int
        Recorded in the rows.

    Returns
    -------
    pandas.DataFrame
        Four rows (cluster and voxel, positive and negative), columns :data:`COLUMNS`.
    """
    if not result.attrs.get("cluster_null", False):
        raise ValueError("the result has no cluster-extent null (attrs['cluster_null'] is false); "
                         "run mean() with voxel_p and peak-recreated maps")
    voxel_p = float(result.attrs["voxel_p"])
    mask = load_mask(result.attrs["mask"])
    z = np.asarray(result["z"].values, dtype=np.float64)
    p_fwe = np.asarray(result["p_fwe"].values, dtype=np.float64)
    thresholds = cluster_thresholds(result["null_hist"].values, voxel_p)
    config = {"n_studies": int(result.attrs["n_studies"]),
              "permutations": int(result.attrs["permutations"]),
              "anisotropy": float(result.attrs["preprocess"]["anisotropy"]),
              "voxel_p": voxel_p}
    rows = []
    for direction, z_thr in zip(DIRECTIONS, thresholds, strict=True):
        positive = direction == "positive"
        supra = z >= z_thr if positive else z <= z_thr
        null = result["null_max_cluster_pos" if positive else "null_max_cluster_neg"].values
        size = largest_cluster(supra, mask)
        cluster = (z_thr, size, float(fwe_p(size, null)), null, "upper")
        extreme = int(np.argmax(z) if positive else np.argmin(z))
        signed = z[extreme] > 0 if positive else z[extreme] < 0
        # the extremes p_fwe was computed from (the peak-relocation null's where it ran)
        prefix = "null_peak_" if "null_peak_max_z" in result else "null_"
        voxel_null = result[prefix + ("max_z" if positive else "min_z")].values
        voxel = (np.nan, float(z[extreme]), float(p_fwe[extreme]) if signed else 1.0, voxel_null,
                 "upper" if positive else "lower")
        for kind, (threshold, observed, p, kind_null, tail) in zip(KINDS, (cluster, voxel),
                                                                   strict=True):
            yardstick = leave_one_out_p(kind_null, tail)
            rows.append({
                "replicate": replicate, "seed": seed, **config, "n_peaks": n_peaks,
                "kind": kind, "direction": direction, "threshold": float(threshold),
                "observed": float(observed), "p": p,
                "null_median": float(np.median(kind_null)),
                "yardstick_mean": float(yardstick.mean()),
                "yardstick_median": float(np.median(yardstick)),
                "yardstick_rejection": float(np.mean(yardstick <= 0.05)),
            })
    return pd.DataFrame(rows, columns=list(COLUMNS))


def calibration_run(
    replicates: int,
    n_studies: int = 20,
    permutations: int = 200,
    anisotropy: float = 1.0,
    seed: int = 0,
    voxel_p: float = 0.005,
    progress: Callable[[int, pd.DataFrame], object] | None = None,
) -> pd.DataFrame:
    """Run ``replicates`` null meta-analyses and record their smallest FWE p-values.

    Replicate ``r`` is :func:`null_meta_analysis` with the seeds of
    :func:`replicate_seeds` ``(seed, r)``; its rows are :func:`replicate_rows`. The same
    arguments give the same frame.

    Parameters
    ----------
    replicates : int
        Null meta-analyses (``R``).
    n_studies : int, default 20
        Studies per meta-analysis.
    permutations : int, default 200
        Randomizations of each null (``B``; the smallest p is ``1 / (1 + B)``).
    anisotropy : float, default 1.0
        Of the recreated study maps (docs/methods.md, section 3.2); the cluster-extent null
        recreates relocated peaks with its own kernel (section 5.4).
    seed : int, default 0
    voxel_p : float, default 0.005
        Cluster-forming threshold (docs/methods.md, section 6).
    progress : callable, optional
        Called as ``progress(r, rows)`` after each replicate.

    Returns
    -------
    pandas.DataFrame
        ``4 R`` rows, columns :data:`COLUMNS`: one per replicate, kind and direction.
    """
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1; {replicates!r} was provided")
    if permutations < 2:
        raise ValueError(f"permutations must be >= 2 (leave-one-out); {permutations!r} was provided")
    frames = []
    for replicate in range(replicates):
        result, n_peaks = null_meta_analysis(seed, replicate, n_studies, permutations,
                                             anisotropy, voxel_p)
        rows = replicate_rows(result, replicate, seed, n_peaks)
        del result
        if progress is not None:
            progress(replicate, rows)
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def rejection_limit(n: int, alpha: float = 0.05, quantile: float = 0.999) -> int:
    """The most rejections a valid level-``alpha`` test makes in ``n`` trials, bar ``1 - quantile``.

    The ``quantile`` of Binomial(n, alpha): a valid test's smallest p is ``<= alpha`` with
    probability at most ``alpha``, so more rejections than this happen with probability below
    ``1 - quantile`` (0.1 %).
    """
    return int(stats.binom.ppf(quantile, n, alpha))


def _upper_bound(rejections: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound of a binomial rate."""
    if rejections >= n:
        return 1.0
    return float(stats.beta.ppf(confidence, rejections + 1, n - rejections))


def _summary_row(rows: pd.DataFrame, alpha: float, confidence: float,
                 quantile: float) -> dict[str, float]:
    n = len(rows)
    rejections = int((rows["p"] <= alpha).sum())
    return {
        "n": n,
        "mean_p": float(rows["p"].mean()),
        "median_p": float(rows["p"].median()),
        # every replicate's leave-one-out p-values are B of them: the mean of means is the
        # pooled mean, the rate likewise; the median is the median of the replicates' medians
        "yardstick_mean": float(rows["yardstick_mean"].mean()),
        "yardstick_median": float(rows["yardstick_median"].median()),
        "rejections": rejections,
        "rate": rejections / n,
        "rate_upper": _upper_bound(rejections, n, confidence),
        "yardstick_rate": float(rows["yardstick_rejection"].mean()),
        "rejection_limit": rejection_limit(n, alpha, quantile),
    }


def summarize(frame: pd.DataFrame, alpha: float = 0.05, confidence: float = 0.95,
              quantile: float = 0.999) -> pd.DataFrame:
    """Per configuration, FWE kind and direction: the smallest p against its yardstick.

    Rows per ``(n_studies, permutations, anisotropy, voxel_p)`` and ``kind``: ``positive``,
    ``negative``, and ``pooled`` (both directions' rows together, ``2 R``, treated as
    independent: the directions' peaks are).

    Parameters
    ----------
    frame : pandas.DataFrame
        From :func:`calibration_run` (or :func:`replicate_rows`, concatenated).
    alpha : float, default 0.05
        FWE level of the rejection rate.
    confidence : float, default 0.95
        Of the one-sided Clopper-Pearson upper bound ``rate_upper`` of the rate.
    quantile : float, default 0.999
        Of :func:`rejection_limit`.

    Returns
    -------
    pandas.DataFrame
        Index ``(*CONFIG_COLUMNS, kind, direction)``; columns: ``n`` (replicates),
        ``mean_p``, ``median_p`` (of the smallest p), ``yardstick_mean``,
        ``yardstick_median`` (of :func:`leave_one_out_p`), ``rejections`` (``p <= alpha``),
        ``rate``, ``rate_upper``, ``yardstick_rate`` (the yardstick's rate: the size an
        exact test has with these ties), ``rejection_limit`` (:func:`rejection_limit`).
        A valid correction has ``rejections <= rejection_limit``; a calibrated one has
        ``median_p`` near ``yardstick_median``.
    """
    records = []
    for key, group in frame.groupby([*CONFIG_COLUMNS, "kind"], sort=True):
        by_direction: Iterable[tuple[str, pd.DataFrame]] = [
            *((d, group[group["direction"] == d]) for d in DIRECTIONS), ("pooled", group)]
        for direction, rows in by_direction:
            if len(rows):
                records.append({**dict(zip([*CONFIG_COLUMNS, "kind"], key, strict=True)),
                                "direction": direction,
                                **_summary_row(rows, alpha, confidence, quantile)})
    summary = pd.DataFrame(records)
    if summary.empty:
        raise ValueError("frame has no rows to summarize")
    return summary.set_index([*CONFIG_COLUMNS, "kind", "direction"])[list(SUMMARY_COLUMNS)]
