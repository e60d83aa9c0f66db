"""Randomization null of SDM-Z and the p-values judged against it (spec section 5).

Pure NumPy kernels for one block of randomizations and for combining blocks. The Dask layer
maps :func:`randomization_block` over block indices (one task per block, each with its own
``SeedSequence`` spawned by (analysis, block)) and tree-reduces with :func:`combine`.

The null is kept as

- a histogram of every null z on fixed bins (:data:`BINS`: width 0.001 on [-15, 15) plus an
  underflow and an overflow count), so blocks combine by integer addition and the
  uncorrected p-value of spec section 5 needs no stored null values;
- per-randomization ``max z``, ``min z`` and largest positive/negative cluster sizes, for
  family-wise error (FWE) corrected voxel and cluster p-values.

References
----------
Radua J et al. (2012). A new meta-analytic method for neuroimaging studies that combines
reported peak coordinates and statistical parametric maps. Eur Psychiatry 27:605-611
(randomization of voxel locations).
Nichols TE, Holmes AP (2002). Nonparametric permutation tests for functional neuroimaging.
Hum Brain Mapp 15:1-25 (maximum statistics for FWE control).
Phipson B, Smyth GK (2010). Permutation p-values should never be zero. Stat Appl Genet Mol
Biol 9:39 (the ``(1 + count) / (1 + N)`` form).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.stats.random_effects import _pooled_z

__all__ = [
    "BINS",
    "BINS_PER_UNIT",
    "BIN_WIDTH",
    "N_BINS",
    "N_HIST",
    "Z_MAX",
    "Z_MIN",
    "ClusterSize",
    "NullSummary",
    "bin_index",
    "cluster_p_fwe",
    "combine",
    "histogram",
    "p_fwe",
    "p_from_histogram",
    "randomization_block",
    "relocate",
    "z_threshold_for_p",
]

#: Lower and upper limits of the binned z range; values outside go to under/overflow.
Z_MIN: float = -15.0
Z_MAX: float = 15.0
#: Bins per unit of z; bin membership is ``floor(BINS_PER_UNIT * z)`` (exact integer scale).
BINS_PER_UNIT: int = 1000
BIN_WIDTH: float = 1.0 / BINS_PER_UNIT
_LO_INT = int(round(Z_MIN * BINS_PER_UNIT))  # -15000
_HI_INT = int(round(Z_MAX * BINS_PER_UNIT))  # 15000
#: Number of regular bins (30000).
N_BINS: int = _HI_INT - _LO_INT
#: Length of a histogram: underflow (index 0), the regular bins, overflow (index -1).
N_HIST: int = N_BINS + 2
#: Edges of the regular bins, ``Z_MIN, Z_MIN + 0.001, ..., Z_MAX`` (read-only, float64).
#: Regular bin ``i`` (histogram index ``i + 1``) holds ``BINS[i] <= z < BINS[i + 1]``.
BINS: NDArray[np.float64] = np.arange(_LO_INT, _HI_INT + 1, dtype=np.float64) / BINS_PER_UNIT
BINS.flags.writeable = False

#: ``cluster_size(z, z_threshold) -> (largest_positive, largest_negative)`` for one map.
ClusterSize = Callable[[NDArray[np.float64], Any], tuple[int, int]]


class NullSummary(NamedTuple):
    """Summaries of a block (or a combination of blocks) of randomizations.

    Attributes
    ----------
    hist : ndarray of int64, shape (N_HIST,)
        Counts of all null z (every voxel of every randomization) on :data:`BINS`; index 0
        is the underflow (``z < Z_MIN``), index ``N_HIST - 1`` the overflow (``z >= Z_MAX``).
    max_z, min_z : ndarray of float64, shape (n_randomizations,)
        Maximum and minimum z of each randomization, in randomization order.
    max_cluster_pos, max_cluster_neg : ndarray of int64, shape (n_randomizations,)
        Largest positive and negative cluster of each randomization (zeros when no cluster
        function was given).
    """

    hist: NDArray[np.int64]
    max_z: NDArray[np.float64]
    min_z: NDArray[np.float64]
    max_cluster_pos: NDArray[np.int64]
    max_cluster_neg: NDArray[np.int64]

    @property
    def n_randomizations(self) -> int:
        """Number of randomizations summarized."""
        return int(self.max_z.shape[0])


def bin_index(z: ArrayLike) -> NDArray[np.intp]:
    """Histogram index of each z: 0 underflow, 1..N_BINS regular bins, N_BINS + 1 overflow.

    Computed as ``clip(floor(1000 z), -15001, 15000) + 15001``: monotone non-decreasing in
    ``z``, which is what makes the histogram p-values conservative. NaN is not allowed.
    """
    scaled = np.floor(np.asarray(z, dtype=np.float64) * BINS_PER_UNIT)
    scaled = np.clip(scaled, _LO_INT - 1, _HI_INT, out=scaled if scaled.ndim else None)
    return (scaled - (_LO_INT - 1)).astype(np.intp)


def histogram(z: ArrayLike) -> NDArray[np.int64]:
    """Counts of ``z`` on :data:`BINS` with underflow and overflow, any shape flattened.

    Parameters
    ----------
    z : array_like
        Null z values; NaN values are not counted, ``+-inf`` go to over/underflow.

    Returns
    -------
    ndarray of int64, shape (N_HIST,)
        Index 0 counts ``z < -15``, index ``i`` in ``1..N_BINS`` counts
        ``BINS[i - 1] <= z < BINS[i]``, the last index counts ``z >= 15``.
    """
    z = np.asarray(z, dtype=np.float64).ravel()
    nan = np.isnan(z)
    if nan.any():
        z = z[~nan]
    return np.bincount(bin_index(z), minlength=N_HIST).astype(np.int64, copy=False)


def _check_study_maps(
    effect: ArrayLike, variance: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    effect = np.asarray(effect)
    variance = np.asarray(variance)
    if effect.ndim != 2 or effect.shape != variance.shape:
        raise ValueError(
            "'effect' and 'variance' must be 2-d arrays of the same shape (study, voxel); got "
            f"{effect.shape} and {variance.shape}."
        )
    if effect.shape[0] < 2:
        raise ValueError(
            f"The randomization null needs at least 2 studies; {effect.shape[0]} was provided."
        )
    if effect.shape[1] < 1:
        raise ValueError("'effect' has no voxels; the mask is empty.")
    return (
        np.ascontiguousarray(effect, dtype=np.float64),
        np.ascontiguousarray(variance, dtype=np.float64),
    )


def _check_count(n_randomizations: int) -> int:
    if isinstance(n_randomizations, bool) or not isinstance(n_randomizations, int | np.integer):
        raise TypeError(
            f"'n_randomizations' must be an int; {type(n_randomizations).__name__} was provided."
        )
    if n_randomizations < 0:
        raise ValueError(f"'n_randomizations' must be >= 0; {n_randomizations} was provided.")
    return int(n_randomizations)


def _relocated_z(
    effect: NDArray[np.float64], variance: NDArray[np.float64], rng: np.random.Generator
) -> NDArray[np.float64]:
    """SDM-Z of one randomization: one ``rng.integers`` call of shape (study, voxel)."""
    n_studies, n_voxels = effect.shape
    source = rng.integers(0, n_voxels, size=(n_studies, n_voxels))
    source += np.arange(0, n_studies * n_voxels, n_voxels)[:, None]
    return _pooled_z(effect.take(source), variance.take(source))


def relocate(
    effect: ArrayLike,
    variance: ArrayLike,
    rng: np.random.Generator,
    n_randomizations: int,
) -> NDArray[np.float64]:
    """SDM-Z maps of randomizations that relocate every study's voxels (dense reference).

    For each randomization ``b`` (in order) one call
    ``rng.integers(0, n_voxels, size=(n_studies, n_voxels))`` draws, for every study ``s``
    and target voxel ``v``, an independent uniform source voxel (with replacement) [C: spec
    section 5 allows a permutation or uniform draws; daskmeta uses uniform draws]. Study
    ``s``'s (effect, variance) pair at the source voxel is moved to ``v`` and the relocated
    maps are pooled with DerSimonian-Laird (:func:`~daskmeta.stats.dersimonian_laird`).

    Parameters
    ----------
    effect, variance : array_like, shape (n_studies, n_voxels)
        Study maps over the mask voxels (any float dtype; pooled in float64).
    rng : numpy.random.Generator
        Source of the relocations; advanced by ``n_randomizations`` draws of the shape above.
    n_randomizations : int
        Number of randomizations.

    Returns
    -------
    ndarray of float64, shape (n_randomizations, n_voxels)
        The null z maps. Memory grows with ``n_randomizations * n_voxels``: callers keep
        blocks small, or use :func:`randomization_block`, which summarizes one map at a time.

    References
    ----------
    Radua et al. (2012); spec section 5.
    """
    y, v = _check_study_maps(effect, variance)
    n_randomizations = _check_count(n_randomizations)
    z = np.empty((n_randomizations, y.shape[1]), dtype=np.float64)
    for b in range(n_randomizations):
        z[b] = _relocated_z(y, v, rng)
    return z


def _generators(
    seed_sequence: np.random.SeedSequence | Sequence[np.random.SeedSequence],
    n_randomizations: int,
) -> list[np.random.Generator]:
    """One shared generator per block, or one per randomization from a list of seeds."""
    if isinstance(seed_sequence, np.random.SeedSequence):
        return [np.random.default_rng(seed_sequence)] * n_randomizations
    seeds = list(seed_sequence) if isinstance(seed_sequence, Sequence) else None
    if seeds is None or not all(isinstance(s, np.random.SeedSequence) for s in seeds):
        raise TypeError(
            "'seed_sequence' must be a numpy.random.SeedSequence (e.g. "
            "np.random.SeedSequence(seed, spawn_key=(analysis, block))) or a sequence of them, "
            f"one per randomization; {type(seed_sequence).__name__} was provided."
        )
    if len(seeds) != n_randomizations:
        raise ValueError(
            f"'seed_sequence' holds {len(seeds)} seeds; expected one per randomization "
            f"(n_randomizations={n_randomizations})."
        )
    return [np.random.default_rng(s) for s in seeds]


def randomization_block(
    effect: ArrayLike,
    variance: ArrayLike,
    seed_sequence: np.random.SeedSequence | Sequence[np.random.SeedSequence],
    n_randomizations: int,
    cluster_size: ClusterSize | None = None,
    z_threshold: Any = None,
) -> NullSummary:
    """Summaries of one block of randomizations, reproducible from its ``SeedSequence``.

    With one ``SeedSequence`` the z maps are exactly those of ``relocate(effect, variance,
    np.random.default_rng(seed_sequence), n_randomizations)``; with one ``SeedSequence`` per
    randomization, map ``b`` is ``relocate(effect, variance,
    np.random.default_rng(seed_sequence[b]), 1)[0]``, so results do not even depend on how
    randomizations are grouped into blocks. Each map is summarized as soon as it is computed,
    so memory stays at a few (study, voxel) arrays whatever the block size.

    Parameters
    ----------
    effect, variance : array_like, shape (n_studies, n_voxels)
        Study maps over the mask voxels.
    seed_sequence : numpy.random.SeedSequence or sequence of them
        The block's seed, spawned by (analysis, block index) so that results do not depend on
        chunking, worker count or retries (spec section 5); or ``n_randomizations`` seeds,
        one per randomization (spawned by (analysis, randomization index)).
    n_randomizations : int
        Randomizations in this block.
    cluster_size : callable, optional
        ``cluster_size(z, z_threshold) -> (largest_positive, largest_negative)`` for one z map
        of shape (n_voxels,); the caller supplies it because it needs the voxel grid. Without
        it the cluster maxima are zeros.
    z_threshold : any, optional
        Passed unchanged to ``cluster_size``, typically the ``(z_pos, z_neg)`` pair of
        :func:`z_threshold_for_p`. Required when ``cluster_size`` is given.

    Returns
    -------
    NullSummary

    Raises
    ------
    TypeError
        If ``seed_sequence`` is not a ``numpy.random.SeedSequence`` or a sequence of them.
    ValueError
        If a sequence of seeds does not hold ``n_randomizations`` of them, if
        ``cluster_size`` is given without ``z_threshold``, or for bad study maps.
    """
    if cluster_size is not None and z_threshold is None:
        raise ValueError(
            "'z_threshold' is required when 'cluster_size' is given; pass the (z_pos, z_neg) "
            "pair from z_threshold_for_p."
        )
    y, v = _check_study_maps(effect, variance)
    n_randomizations = _check_count(n_randomizations)
    generators = _generators(seed_sequence, n_randomizations)
    hist = np.zeros(N_HIST, dtype=np.int64)
    max_z = np.empty(n_randomizations, dtype=np.float64)
    min_z = np.empty(n_randomizations, dtype=np.float64)
    cluster_pos = np.zeros(n_randomizations, dtype=np.int64)
    cluster_neg = np.zeros(n_randomizations, dtype=np.int64)
    for b in range(n_randomizations):
        z = _relocated_z(y, v, generators[b])
        hist += histogram(z)
        max_z[b] = z.max()
        min_z[b] = z.min()
        if cluster_size is not None:
            cluster_pos[b], cluster_neg[b] = cluster_size(z, z_threshold)
    return NullSummary(hist, max_z, min_z, cluster_pos, cluster_neg)


def combine(summaries: Iterable[NullSummary]) -> NullSummary:
    """Combine block summaries: histograms add, per-randomization arrays concatenate.

    Associative (``combine([combine([a, b]), c]) == combine([a, combine([b, c])])``), so a
    Dask tree reduction may group blocks in any way. Maxima are concatenated in the order
    given: callers pass blocks in block-index order (as Dask's reductions keep them), so the
    stored arrays do not depend on scheduling. The p-values depend only on the multiset of
    maxima and on the summed histogram, so they are order-independent in any case.

    Parameters
    ----------
    summaries : iterable of NullSummary
        At least one.

    Returns
    -------
    NullSummary
    """
    summaries = list(summaries)
    if not summaries:
        raise ValueError("'summaries' is empty; combine needs at least one NullSummary.")
    for i, summary in enumerate(summaries):
        if np.shape(summary.hist) != (N_HIST,):
            raise ValueError(
                f"summaries[{i}].hist has shape {np.shape(summary.hist)}; expected ({N_HIST},)."
            )
    return NullSummary(
        hist=np.sum([s.hist for s in summaries], axis=0, dtype=np.int64),
        max_z=np.concatenate([s.max_z for s in summaries]).astype(np.float64, copy=False),
        min_z=np.concatenate([s.min_z for s in summaries]).astype(np.float64, copy=False),
        max_cluster_pos=np.concatenate([s.max_cluster_pos for s in summaries]).astype(np.int64),
        max_cluster_neg=np.concatenate([s.max_cluster_neg for s in summaries]).astype(np.int64),
    )


def _check_hist(hist: ArrayLike) -> tuple[NDArray[np.int64], int]:
    hist = np.asarray(hist)
    if hist.shape != (N_HIST,) or not np.issubdtype(hist.dtype, np.integer):
        raise ValueError(
            f"'hist' must be integer counts of shape ({N_HIST},) from histogram(); got "
            f"{hist.dtype} of shape {hist.shape}."
        )
    hist = hist.astype(np.int64, copy=False)
    total = int(hist.sum())
    if total <= 0:
        raise ValueError("'hist' is empty; run at least one randomization.")
    return hist, total


def _tail_p(hist: NDArray[np.int64], total: int) -> tuple[NDArray[np.float64], ...]:
    """p of a z in each bin: upper tail ``(1 + #{bin >= i}) / (1 + N)``, lower with ``<=``."""
    upper = np.cumsum(hist[::-1])[::-1]
    lower = np.cumsum(hist)
    return (1.0 + upper) / (1.0 + total), (1.0 + lower) / (1.0 + total)


def _signed_p(
    z: NDArray[np.float64], p_pos: NDArray[np.float64], p_neg: NDArray[np.float64]
) -> NDArray[np.float64]:
    p = np.where(z > 0, p_pos, p_neg)
    p[z == 0] = 1.0
    p[np.isnan(z)] = np.nan
    return p


def p_from_histogram(z: ArrayLike, hist: ArrayLike) -> NDArray[np.float64]:
    """One-tailed randomization p-value of each z against a binned null (spec section 5).

    ``p = (1 + #{null >= z}) / (1 + N)`` for ``z > 0`` and ``(1 + #{null <= z}) / (1 + N)``
    for ``z < 0``, with ``N = hist.sum()``. Counting is conservative: the whole bin holding
    ``z`` counts as beyond it (and the overflow beyond any positive z, the underflow beyond
    any negative z), so the result lies between the exact empirical p at ``z`` and at
    ``z -+ BIN_WIDTH``. ``z == 0`` gives ``p = 1`` (neither direction); NaN gives NaN.

    Parameters
    ----------
    z : array_like
        Observed SDM-Z, any shape.
    hist : array_like of int, shape (N_HIST,)
        Null histogram from :func:`histogram` or a :class:`NullSummary`.

    Returns
    -------
    ndarray of float64
        p-values, the shape of ``z``.
    """
    hist, total = _check_hist(hist)
    z = np.asarray(z, dtype=np.float64)
    index = bin_index(np.nan_to_num(z, nan=0.0))
    p_pos, p_neg = _tail_p(hist, total)
    return _signed_p(z, p_pos[index], p_neg[index])


def p_fwe(z: ArrayLike, max_z: ArrayLike, min_z: ArrayLike) -> NDArray[np.float64]:
    """Family-wise corrected voxel p-values from per-randomization extremes (spec section 5).

    ``(1 + #{max_b >= z}) / (1 + B)`` for ``z > 0``, ``(1 + #{min_b <= z}) / (1 + B)`` for
    ``z < 0``; ``z == 0`` gives 1 and NaN gives NaN. Exact (no binning).

    Parameters
    ----------
    z : array_like
        Observed SDM-Z, any shape.
    max_z, min_z : array_like, shape (B,)
        Per-randomization maximum and minimum z (:class:`NullSummary`).

    Returns
    -------
    ndarray of float64
        p-values, the shape of ``z``.

    References
    ----------
    Nichols & Holmes (2002).
    """
    max_z = np.sort(np.asarray(max_z, dtype=np.float64).ravel())
    min_z = np.sort(np.asarray(min_z, dtype=np.float64).ravel())
    if max_z.size == 0 or min_z.size == 0:
        raise ValueError("'max_z' and 'min_z' must hold at least one randomization each.")
    z = np.asarray(z, dtype=np.float64)
    n_pos = max_z.size - np.searchsorted(max_z, z, side="left")
    n_neg = np.searchsorted(min_z, z, side="right")
    return _signed_p(z, (1.0 + n_pos) / (1.0 + max_z.size), (1.0 + n_neg) / (1.0 + min_z.size))


def cluster_p_fwe(cluster_sizes: ArrayLike, max_cluster: ArrayLike) -> NDArray[np.float64]:
    """Family-wise corrected cluster p-values: ``(1 + #{max_b >= size}) / (1 + B)``.

    Parameters
    ----------
    cluster_sizes : array_like of int
        Observed cluster extents (voxels) of one direction, any shape.
    max_cluster : array_like of int, shape (B,)
        The largest cluster of that direction in each randomization
        (``NullSummary.max_cluster_pos`` or ``max_cluster_neg``).

    Returns
    -------
    ndarray of float64
        p-values, the shape of ``cluster_sizes``; a size of 0 gives 1.
    """
    max_cluster = np.sort(np.asarray(max_cluster).ravel())
    if max_cluster.size == 0:
        raise ValueError("'max_cluster' must hold at least one randomization.")
    sizes = np.asarray(cluster_sizes)
    n_ge = max_cluster.size - np.searchsorted(max_cluster, sizes, side="left")
    return np.asarray((1.0 + n_ge) / (1.0 + max_cluster.size), dtype=np.float64)


def _first_in_bin(target: int, guess: float) -> float:
    """Smallest float64 ``z`` with ``bin_index(z) >= target``, searched by ulps from ``guess``."""
    z = guess
    while bin_index(z) < target:
        z = float(np.nextafter(z, np.inf))
    while bin_index(np.nextafter(z, -np.inf)) >= target:
        z = float(np.nextafter(z, -np.inf))
    return z


def z_threshold_for_p(hist: ArrayLike, p: float) -> tuple[float, float]:
    """z thresholds at which the null's one-tailed p (of :func:`p_from_histogram`) reaches ``p``.

    Use them as cluster-forming thresholds inside randomizations (e.g. voxel ``p < 0.005``):
    for ``z > 0``, ``z >= z_pos`` exactly when ``p_from_histogram(z, hist) <= p``; for
    ``z < 0``, ``z <= z_neg`` exactly when it is ``<= p``.

    Parameters
    ----------
    hist : array_like of int, shape (N_HIST,)
        Null histogram.
    p : float
        One-tailed p threshold in (0, 1].

    Returns
    -------
    z_pos : float
        Positive threshold (``inf`` when no z reaches ``p`` with this many null values; the
        smallest positive float when every positive z does).
    z_neg : float
        Negative threshold (``-inf`` or the largest negative float likewise).
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"'p' must be in (0, 1]; {p} was provided.")
    hist, total = _check_hist(hist)
    p_pos, p_neg = _tail_p(hist, total)
    tiny = float(np.nextafter(0.0, 1.0))
    # p_pos is non-increasing with the bin: the first bin at or below p starts the tail.
    first = int(np.count_nonzero(p_pos > p))
    if first == N_HIST:
        z_pos = np.inf
    elif first == 0:
        z_pos = tiny
    else:
        z_pos = max(_first_in_bin(first, (first - 1 + _LO_INT) / BINS_PER_UNIT), tiny)
    # p_neg is non-decreasing: the last bin at or below p ends the lower tail.
    last = int(np.count_nonzero(p_neg <= p)) - 1
    if last < 0:
        z_neg = -np.inf
    elif last == N_HIST - 1:
        z_neg = -tiny
    else:
        edge = _first_in_bin(last + 1, (last + _LO_INT) / BINS_PER_UNIT)
        z_neg = min(float(np.nextafter(edge, -np.inf)), -tiny)
    return float(z_pos), float(z_neg)
