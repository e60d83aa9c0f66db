"""Randomization null of SDM-Z: relocation, block summaries, their combination (docs/methods.md, section 5).

Pure NumPy kernels for one block of randomizations and for combining blocks. The Dask layer
maps :func:`randomization_block` over block indices (one task per block, each with its own
``SeedSequence`` spawned by (analysis, block)) and tree-reduces with :func:`combine`.

The null is kept as

- a histogram of every null z on fixed bins (:data:`BINS`: width 0.001 on [-15, 15) plus an
  underflow and an overflow count), so blocks combine by integer addition and the
  uncorrected p-value of docs/methods.md, section 5.2, needs no stored null values;
- per-randomization ``max z``, ``min z`` and largest positive/negative cluster sizes, for
  family-wise error (FWE) corrected voxel and cluster p-values.

The p-values judged against these summaries live in :mod:`daskmeta.stats.pvalues`.

References
----------
Radua J et al. (2012). A new meta-analytic method for neuroimaging studies that combines
reported peak coordinates and statistical parametric maps. Eur Psychiatry 27:605-611
(randomization of voxel locations).
Nichols TE, Holmes AP (2002). Nonparametric permutation tests for functional neuroimaging.
Hum Brain Mapp 15:1-25 (maximum statistics for FWE control).
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
    "combine",
    "histogram",
    "randomization_block",
    "relocate",
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
    peak_max_z, peak_min_z : ndarray of float64, shape (n_randomizations,), or None
        Maximum and minimum z of each randomization of the cluster-extent null (relocated
        peaks, docs/methods.md 5.3), the maximum raised to the positive cluster-forming
        threshold where it lies below it and the minimum lowered to the negative one; None
        when that null was not run.
    """

    hist: NDArray[np.int64]
    max_z: NDArray[np.float64]
    min_z: NDArray[np.float64]
    max_cluster_pos: NDArray[np.int64]
    max_cluster_neg: NDArray[np.int64]
    peak_max_z: NDArray[np.float64] | None = None
    peak_min_z: NDArray[np.float64] | None = None

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


def relocation_source(rng: np.random.Generator, n_studies: int, n_voxels: int) -> NDArray[np.int64]:
    """Flat indices into a C-ordered (study, voxel) stack that relocate every study's voxels.

    One ``rng.integers(0, n_voxels, size=(n_studies, n_voxels))`` call: for every study and
    target voxel an independent uniform source voxel of the same study (with replacement,
    chosen here; docs/methods.md, section 5.5). ``stack.take(source)`` is the relocated stack. Every null
    of daskmeta (mean, jackknife, linear models) relocates with this draw.
    """
    source = rng.integers(0, n_voxels, size=(n_studies, n_voxels))
    source += np.arange(0, n_studies * n_voxels, n_voxels)[:, None]
    return source


def _relocated_z(
    effect: NDArray[np.float64], variance: NDArray[np.float64], rng: np.random.Generator
) -> NDArray[np.float64]:
    """SDM-Z of one randomization (:func:`relocation_source`, then pooling)."""
    source = relocation_source(rng, *effect.shape)
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
    and target voxel ``v``, an independent uniform source voxel (with replacement; the ``reference`` engine of
    docs/methods.md, section 5.5). Study
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
    Radua et al. (2012); docs/methods.md, section 5.
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
        chunking, worker count or retries (docs/methods.md, section 12); or ``n_randomizations`` seeds,
        one per randomization (spawned by (analysis, randomization index)).
    n_randomizations : int
        Randomizations in this block.
    cluster_size : callable, optional
        ``cluster_size(z, z_threshold) -> (largest_positive, largest_negative)`` for one z map
        of shape (n_voxels,); the caller supplies it because it needs the voxel grid. Without
        it the cluster maxima are zeros.
    z_threshold : any, optional
        Passed unchanged to ``cluster_size``, typically the ``(z_pos, z_neg)`` pair of
        :func:`~daskmeta.stats.pvalues.z_threshold_for_p`. Required when ``cluster_size``
        is given.

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
        peak_max_z=_concatenated([s.peak_max_z for s in summaries]),
        peak_min_z=_concatenated([s.peak_min_z for s in summaries]),
    )


def clipped_extremes(z: ArrayLike, thresholds: tuple[float, float]) -> tuple[float, float]:
    """``(max(max z, z_pos), min(min z, z_neg))``: one randomization's extremes as the
    cluster-extent null records them (docs/methods.md, 5.3). Above ``z_pos`` (below ``z_neg``)
    they are the map's own; a map that never reaches the threshold records the threshold, an
    upper bound of its maximum, which keeps ``p_fwe`` valid below the threshold."""
    z = np.asarray(z, dtype=np.float64)
    return max(float(np.max(z)), float(thresholds[0])), min(float(np.min(z)), float(thresholds[1]))


def _concatenated(parts: list[NDArray[np.float64] | None]) -> NDArray[np.float64] | None:
    """The parts end to end, or None if any part is None (a null that was not run)."""
    if any(part is None for part in parts):
        return None
    return np.concatenate(parts).astype(np.float64, copy=False)  # type: ignore[arg-type]
