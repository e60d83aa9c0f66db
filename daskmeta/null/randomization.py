"""The randomization null as a Dask graph (spec section 5).

One task computes a block of randomizations against the study stack, which enters the
graph once (one task that holds the whole ``(study, voxel)`` stack, fetched once by each
worker), and returns a small :class:`~daskmeta.stats.null.NullSummary`; blocks combine by
a tree reduction. With the fast engine (the default) one task compresses the stack into
:class:`~daskmeta.stats.fast_null.StudyTables` (about 4x smaller) and the blocks read those.
Randomization ``b`` of analysis ``name`` draws from
``SeedSequence(seed, spawn_key=(crc32(name), b))``, so every randomization is the same
whatever the block size, the worker count, the order of completion or a retry.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from numpy.typing import ArrayLike

from daskmeta.model.grid import load_mask
from daskmeta.null.cluster_extent import cluster_null_block, paster
from daskmeta.null.seeds import arrangement_seed, block_bounds, randomization_seeds
from daskmeta.stats.fast_null import (
    DEFAULT_ENGINE,
    Engine,
    StudyTables,
    check_engine,
    fast_randomization_block,
    pooled_z,
    study_tables,
    variance_model,
)
from daskmeta.stats.labelling import largest_cluster
from daskmeta.stats.null import N_HIST, NullSummary, combine, randomization_block
from daskmeta.stats.permutation import ShuffledStack, permutation_block, shuffled_stack
from daskmeta.stats.pvalues import z_threshold_for_p

#: Randomizations per task when not given: large enough to amortise scheduling, small
#: enough to spread over workers.
DEFAULT_BLOCK = 10
#: Fan-in of the tree reduction of block summaries.
TREE_FAN_IN = 8


def _block(
    effect: np.ndarray, variance: np.ndarray, seed: int, name: str, start: int, stop: int,
) -> NullSummary:
    seeds = randomization_seeds(seed, name, start, stop)
    return randomization_block(effect, variance, seeds, stop - start)


def _tables(effect: np.ndarray, variance: np.ndarray, n1: np.ndarray | None,
            n2: np.ndarray | None) -> StudyTables:
    if n1 is None:
        return study_tables(effect, variance)
    sampling, constant = variance_model(n1, n2)
    return study_tables(effect, variance, sampling, constant)


def _fast_block(tables: StudyTables, seed: int, name: str, start: int, stop: int) -> NullSummary:
    return fast_randomization_block(tables, randomization_seeds(seed, name, start, stop))


def shuffled_studies(effect: np.ndarray, variance: np.ndarray, n1: np.ndarray | None,
                     n2: np.ndarray | None, seed: int, name: str) -> ShuffledStack:
    """The permutation engine's arranged stack of analysis ``name`` (a graph task).

    The variance model comes from the sample sizes ``n1, n2`` when given, else it is fitted
    from the maps; either way the variance maps are checked against it.
    """
    model = {} if n1 is None else dict(zip(("sampling", "constant"), variance_model(n1, n2),
                                           strict=True))
    return shuffled_stack(effect, arrangement_seed(seed, name), variance, **model)


def _delayed_sizes(sizes: tuple[ArrayLike, ArrayLike] | None) -> tuple[Delayed | None, Delayed | None]:
    if sizes is None:
        return None, None
    n1, n2 = (dask.delayed(np.asarray, pure=True)(a, dtype=np.float64) for a in sizes)
    return n1, n2


def arrangement(stack_e: Delayed, stack_v: Delayed, sizes: tuple[ArrayLike, ArrayLike] | None,
                seed: int, name: str) -> Delayed:
    """The permutation engine's arranged stack as one graph task (:func:`shuffled_studies`).

    ``stack_e, stack_v`` are the whole stacks (:func:`whole_stacks`); ``sizes`` the studies'
    ``(n1, n2)`` (:func:`daskmeta.analyses.means.sample_sizes`) or None to fit the variance model.
    Pure: the mean, jackknife and linear-model graphs of one analysis share it.
    """
    n1, n2 = _delayed_sizes(sizes)
    return dask.delayed(shuffled_studies, pure=True)(stack_e, stack_v, n1, n2, seed, name)


def _permutation_block(stack: ShuffledStack, seed: int, name: str, start: int, stop: int
                       ) -> NullSummary:
    return permutation_block(stack, randomization_seeds(seed, name, start, stop))


def _cluster_block(
    peak_g: np.ndarray, n1: np.ndarray, n2: np.ndarray, seed: int, name: str, start: int,
    stop: int, mask_name: str, fwhm: float, thresholds: tuple[float, float],
) -> NullSummary:
    """Largest clusters of randomizations that relocate each study's peaks (see null_summary).

    The plain reference (``KernelPaster`` with ``bincount``, :func:`pooled_z`, SciPy labelling);
    the graph runs :func:`daskmeta.null.cluster_extent.cluster_null_block`, which the tests hold to
    the same numbers.
    """
    mask = load_mask(mask_name)
    paste = paster(mask_name, fwhm)
    sampling, constant = variance_model(n1, n2)
    counts = np.isfinite(peak_g).sum(1)
    n_voxels = mask.n_voxels  # a sum over the volume: once, not per study
    z_pos, z_neg = thresholds
    n = stop - start
    largest = np.zeros((2, n), dtype=np.int64)
    for row, sequence in enumerate(randomization_seeds(seed, name, start, stop, stream=1)):
        rng = np.random.default_rng(sequence)
        effect = np.empty((len(counts), n_voxels))
        for study, count in enumerate(counts):
            voxels = mask.ijk[rng.integers(0, n_voxels, count)]
            effect[study] = paste(voxels, peak_g[study, :count])
        # z of dersimonian_laird(effect, sampling + constant * effect**2), without the
        # heterogeneity maps (chi-square and normal quantiles: half the cost of this loop)
        z = pooled_z(effect, sampling, constant)
        largest[0, row] = largest_cluster(z >= z_pos, mask)
        largest[1, row] = largest_cluster(z <= z_neg, mask)
    empty = np.zeros(n)
    return NullSummary(np.zeros(N_HIST, np.int64), empty, empty, largest[0], largest[1])


def whole_stacks(*arrays: da.Array) -> list[Delayed]:
    """Each (study, voxel) array as one delayed task holding the whole stack.

    Randomization blocks relocate over all voxels, so each needs the whole stack: it enters
    the graph once and each worker fetches it once, whatever the number of blocks.
    """
    return [da.asarray(a).rechunk(tuple(a.shape)).to_delayed().ravel()[0] for a in arrays]


def _sum_counts(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.sum(parts, axis=0, dtype=np.int64)


def tree_sum(parts: Sequence[Delayed]) -> Delayed:
    """Integer histograms of blocks summed by a tree reduction (fan-in :data:`TREE_FAN_IN`)."""
    level = list(parts)
    while len(level) > 1:
        level = [dask.delayed(_sum_counts, pure=True)(level[i:i + TREE_FAN_IN])
                 for i in range(0, len(level), TREE_FAN_IN)]
    return level[0]


def _tree(parts: Sequence[Delayed], name: str) -> Delayed:
    level = list(parts)
    depth = 0
    while len(level) > 1:
        level = [
            dask.delayed(combine, pure=True)(level[i:i + TREE_FAN_IN],
                                              dask_key_name=f"{name}-combine-{depth}-{i}")
            for i in range(0, len(level), TREE_FAN_IN)
        ]
        depth += 1
    if depth == 0:
        return dask.delayed(combine, pure=True)(level)
    return level[0]


def _with_clusters(summary: NullSummary, clusters: NullSummary) -> NullSummary:
    return summary._replace(max_cluster_pos=clusters.max_cluster_pos,
                            max_cluster_neg=clusters.max_cluster_neg)


def _thresholds(summary: NullSummary, p: float) -> tuple[float, float]:
    # p < voxel_p (strict), as the observed map is thresholded
    return z_threshold_for_p(summary.hist, float(np.nextafter(p, 0.0)))


def null_summary(
    effect: da.Array,
    variance: da.Array,
    n_randomizations: int,
    seed: int,
    name: str,
    mask_name: str,
    block_size: int = DEFAULT_BLOCK,
    voxel_p: float | None = 0.005,
    peaks: tuple[ArrayLike, ArrayLike, ArrayLike] | None = None,
    fwhm: float = 20.0,
    engine: Engine = DEFAULT_ENGINE,
    sample_sizes: tuple[ArrayLike, ArrayLike] | None = None,
) -> Delayed:
    """The randomization null of a mean analysis, as one lazy :class:`NullSummary`.

    Parameters
    ----------
    effect, variance : dask.array.Array, shape (study, voxel)
        The selected studies' maps.
    n_randomizations : int
        Number of randomizations (SDM's default for voxel-wise p is 50).
    seed : int
        The analysis seed.
    name : str
        The analysis name (part of each randomization's seed).
    mask_name : str
        The mask of the voxel vectors (for cluster sizes).
    block_size : int
        Randomizations per task.
    voxel_p : float or None
        With ``peaks``, a second pass records for each randomization the largest positive
        and negative cluster at the voxel null's ``p < voxel_p`` z thresholds, for
        cluster-level FWE p-values (beyond SDM).
    peaks : (peak_g, n1, n2), optional
        Each study's peak effects (study, peak; NaN-padded) and sample sizes. The cluster
        null relocates each study's *peaks* to uniform random mask voxels and recreates its
        map with the isotropic kernel of the same FWHM [chosen here]: relocating voxels
        destroys the maps' spatial smoothness, so its clusters are far smaller than real
        ones and would make every observed cluster look significant; the isotropic kernel
        is at least as wide as the anisotropic one, so the extents it gives are
        conservative for anisotropic study maps and exact for ``anisotropy = 0``.
    fwhm : float
        The kernel FWHM of the study maps.
    engine : {"permutation", "numba", "numpy"}
        ``"permutation"`` (default): each randomization permutes every study's voxels, a
        random cyclic shift of the study's seeded random arrangement (stream
        :data:`ARRANGEMENT_STREAM` of the analysis seed), pooled by the streaming kernel of
        :mod:`daskmeta.stats.permutation` (variance recomputed as ``a + c effect^2``).
        ``"numba"``: independent uniform draws, the fused kernel of :mod:`daskmeta.stats.fast_null` on
        compressed study tables (variance recomputed as ``a + c effect^2``; same null
        distribution as the reference, its own random streams; runs a NumPy version of the
        same streams where Numba is missing). ``"numpy"``: the reference
        :func:`~daskmeta.stats.null.randomization_block`, for maps whose variance is not
        the SDM model of their effect.
    sample_sizes : (n1, n2), optional
        Per-study sample sizes (``n2`` NaN for one-sample) giving the fast engine's variance
        model exactly; without them it is fitted from the maps. Either way the variance
        maps are checked against it (a mismatch fails the tables task with a ValueError
        that names the study).

    Returns
    -------
    dask.delayed.Delayed
        Computes to a NullSummary with ``n_randomizations`` maxima in randomization order.
    """
    engine = check_engine(engine)
    stack_e, stack_v = whole_stacks(effect, variance)
    token = dask.base.tokenize(stack_e, stack_v, n_randomizations, seed, name, block_size, engine,
                               sample_sizes)
    bounds = block_bounds(n_randomizations, block_size)
    if engine == "permutation":
        stack = arrangement(stack_e, stack_v, sample_sizes, seed, name)
        first = [
            dask.delayed(_permutation_block, pure=True)(
                stack, seed, name, start, stop, dask_key_name=f"randomization-{name}-{token}-{start}")
            for start, stop in bounds
        ]
    elif engine == "numba":
        n1, n2 = _delayed_sizes(sample_sizes)
        tables = dask.delayed(_tables, pure=True)(stack_e, stack_v, n1, n2,
                                                  dask_key_name=f"null-tables-{name}-{token}")
        first = [
            dask.delayed(_fast_block, pure=True)(tables, seed, name, start, stop,
                                                 dask_key_name=f"randomization-{name}-{token}-{start}")
            for start, stop in bounds
        ]
    else:
        first = [
            dask.delayed(_block, pure=True)(stack_e, stack_v, seed, name, start, stop,
                                            dask_key_name=f"randomization-{name}-{token}-{start}")
            for start, stop in bounds
        ]
    summary = _tree(first, f"null-{name}-{token}")
    if voxel_p is None or peaks is None:
        return summary
    thresholds = dask.delayed(_thresholds, pure=True)(summary, voxel_p)
    peak_g, n1, n2 = (dask.delayed(np.asarray, pure=True)(a, dtype=np.float64) for a in peaks)
    second = [
        dask.delayed(cluster_null_block, pure=True)(
            peak_g, n1, n2, seed, name, start, stop, mask_name, float(fwhm), thresholds,
            dask_key_name=f"cluster-null-{name}-{token}-{start}")
        for start, stop in bounds
    ]
    clusters = _tree(second, f"cluster-null-{name}-{token}")
    return dask.delayed(_with_clusters, pure=True)(summary, clusters)


def summary_arrays(summary: Delayed, n_randomizations: int) -> dict[str, da.Array]:
    """The fields of a lazy NullSummary as Dask arrays (``bin`` and ``randomization``)."""
    field = functools.partial(_field, summary)
    return {
        "null_hist": da.from_delayed(field("hist"), (N_HIST,), np.int64),
        "null_max_z": da.from_delayed(field("max_z"), (n_randomizations,), np.float64),
        "null_min_z": da.from_delayed(field("min_z"), (n_randomizations,), np.float64),
        "null_max_cluster_pos": da.from_delayed(field("max_cluster_pos"), (n_randomizations,), np.int64),
        "null_max_cluster_neg": da.from_delayed(field("max_cluster_neg"), (n_randomizations,), np.int64),
    }


def _field(summary: Delayed, name: str) -> Delayed:
    return dask.delayed(getattr, pure=True)(summary, name)
