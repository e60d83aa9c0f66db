"""The randomization null of a mean analysis as a Dask graph (docs/methods.md, section 5).

One task computes a block of randomizations against the study stack, which enters the
graph once (one task that holds the whole ``(study, voxel)`` stack, fetched once by each
worker), and returns a small :class:`~daskmeta.stats.null.NullSummary`; blocks combine by
a tree reduction. The engine's blocks come from :func:`daskmeta.null.engines.null_blocks`;
this module adds the cluster-extent null (relocated peaks) and the combination.
Randomization ``b`` of analysis ``name`` draws from ``SeedSequence(seed,
spawn_key=(crc32(name), b))``, so every randomization is the same whatever the block size,
the worker count, the order of completion or a retry.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from numpy.typing import ArrayLike

from daskmeta.model.grid import load_mask
from daskmeta.null.cluster_extent import cluster_null_block, paster
from daskmeta.null.engines import DEFAULT_ENGINE, Engine, null_blocks
from daskmeta.null.kernel_bank import bank_cluster_block
from daskmeta.null.seeds import block_bounds, randomization_seeds
from daskmeta.stats.labelling import largest_cluster
from daskmeta.stats.null import N_HIST, NullSummary, clipped_extremes, combine
from daskmeta.stats.pvalues import z_threshold_for_p
from daskmeta.stats.sdm_model import pooled_z, variance_model

#: Randomizations per task when not given: large enough to amortise scheduling, small
#: enough to spread over workers.
DEFAULT_BLOCK = 10
#: Fan-in of the tree reduction of block summaries.
TREE_FAN_IN = 8
#: Randomizations of the voxel null when the cluster-extent null gives the family-wise p-values
#: (docs/methods.md, section 5.2): on the reference example the Monte Carlo spread of the
#: ``p < 0.005`` thresholds is below the histogram's bin width from 200 randomizations on.
UNCORRECTED_PERMUTATIONS = 1000


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
    extremes = np.zeros((2, n))
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
        extremes[:, row] = clipped_extremes(z, thresholds)
    return NullSummary(np.zeros(N_HIST, np.int64), extremes[0], extremes[1], largest[0], largest[1])


def _sum_counts(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.sum(parts, axis=0, dtype=np.int64)


def _reduction(parts: Sequence[Delayed], function: object, name: str) -> Delayed:
    """``function`` of the blocks by a tree of fan-in :data:`TREE_FAN_IN`, as one graph layer.

    The tree's tasks are written as one layer over the blocks' keys rather than by calling
    ``dask.delayed`` on lists of blocks: each such call merges and culls the whole graph below
    it (the study stacks' chunks included), which cost seconds for a thousand blocks. A
    single block still goes through ``function`` once.
    """
    level = [part.key for part in parts]
    layer: dict = {}
    depth = 0
    while len(level) > 1 or depth == 0:
        following = []
        for i in range(0, len(level), TREE_FAN_IN):
            key = f"{name}-{depth}-{i}"
            layer[key] = (function, list(level[i:i + TREE_FAN_IN]))
            following.append(key)
        level = following
        depth += 1
    graph = HighLevelGraph.from_collections(name, layer, dependencies=list(parts))
    return Delayed(level[0], graph, layer=name)


def tree_sum(parts: Sequence[Delayed]) -> Delayed:
    """Integer histograms of blocks summed by a tree reduction (fan-in :data:`TREE_FAN_IN`)."""
    token = dask.base.tokenize([part.key for part in parts])
    return _reduction(parts, _sum_counts, f"sum-counts-{token}")


def _tree(parts: Sequence[Delayed], name: str) -> Delayed:
    return _reduction(parts, combine, f"{name}-combine")


def _with_clusters(summary: NullSummary, clusters: NullSummary) -> NullSummary:
    """The voxel null's summary with the cluster-extent null's largest clusters and extremes
    (the cluster blocks return their clipped extremes as ``max_z``/``min_z``).

    The voxel null may have run fewer randomizations (``uncorrected`` of
    :func:`null_summary`): its extremes are NaN for the others.
    """
    missing = clusters.n_randomizations - summary.n_randomizations
    if missing:
        gap = np.full(missing, np.nan)
        summary = summary._replace(max_z=np.concatenate([summary.max_z, gap]),
                                   min_z=np.concatenate([summary.min_z, gap]))
    return summary._replace(max_cluster_pos=clusters.max_cluster_pos,
                            max_cluster_neg=clusters.max_cluster_neg,
                            peak_max_z=clusters.max_z, peak_min_z=clusters.min_z)



def voxel_null_size(n_randomizations: int, cluster_null: bool, uncorrected: int | None) -> int:
    """Randomizations the voxel null runs: ``min(n_randomizations, uncorrected)`` beside the
    cluster-extent null (docs/methods.md, 5.2), all of them without it or with ``uncorrected=None``."""
    if uncorrected is not None and int(uncorrected) < 1:
        raise ValueError(f"'uncorrected' must be at least 1 or None; {uncorrected!r} was provided.")
    if not cluster_null or uncorrected is None:
        return n_randomizations
    return min(n_randomizations, int(uncorrected))


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
    anisotropy: float = 0.0,
    beta: float = 1.0,
    uncorrected: int | None = UNCORRECTED_PERMUTATIONS,
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
        null relocates each study's *peaks* and recreates its map with the study maps' own
        kernel [chosen here]: relocating voxels destroys the maps' spatial smoothness, so
        its clusters would be far smaller than real ones and would make every observed
        cluster look significant. With ``anisotropy = 0`` the peaks move to uniform random
        mask voxels (:func:`~daskmeta.null.cluster_extent.cluster_null_block`); otherwise to
        uniform random centres of the kernel bank
        (:func:`~daskmeta.null.kernel_bank.bank_cluster_block`).
    fwhm : float
        The kernel FWHM of the study maps.
    engine : {"permutation", "reference"}
        The engine of the voxel null (:mod:`daskmeta.null.engines`).
    sample_sizes : (n1, n2), optional
        Per-study sample sizes (``n2`` NaN for one-sample): the permutation engine's variance
        model (:func:`~daskmeta.null.engines.null_blocks`).
    anisotropy, beta : float
        The study maps' anisotropy and tissue weight (docs/methods.md, 3.2-3.3), for the
        cluster null's kernel.
    uncorrected : int or None
        When the cluster-extent null runs (it then gives every family-wise p), the voxel null
        runs only the first ``min(n_randomizations, uncorrected)`` randomizations, as a run of
        that many would: it gives the uncorrected p and the cluster-forming thresholds, whose
        precision ``uncorrected`` randomizations already exceed (docs/methods.md, 5.2). None:
        all. Without the cluster-extent null the voxel null always runs all of them.

    Returns
    -------
    dask.delayed.Delayed
        Computes to a NullSummary with ``n_randomizations`` maxima in randomization order
        (the voxel null's NaN beyond the randomizations it ran).
    """
    cluster_null = voxel_p is not None and peaks is not None
    n_voxel_null = voxel_null_size(n_randomizations, cluster_null, uncorrected)
    first = null_blocks("mean", effect, variance, n_voxel_null, seed, name, block_size, engine,
                        sample_sizes)
    token = dask.base.tokenize(first)
    summary = _tree(first, f"null-{name}-{token}")
    if not cluster_null:
        return summary
    thresholds = dask.delayed(_thresholds, pure=True)(summary, voxel_p)
    peak_g, n1, n2 = (dask.delayed(np.asarray, pure=True)(a, dtype=np.float64) for a in peaks)
    if anisotropy == 0.0:
        block, kernel = cluster_null_block, (float(fwhm),)
    else:
        block, kernel = bank_cluster_block, (float(fwhm), float(anisotropy), float(beta))
    second = [
        dask.delayed(block, pure=True)(
            peak_g, n1, n2, seed, name, start, stop, mask_name, *kernel, thresholds,
            dask_key_name=f"cluster-null-{name}-{token}-{start}")
        for start, stop in block_bounds(n_randomizations, block_size)
    ]
    clusters = _tree(second, f"cluster-null-{name}-{token}")
    return dask.delayed(_with_clusters, pure=True)(summary, clusters)


def summary_arrays(summary: Delayed, n_randomizations: int) -> dict[str, da.Array]:
    """The fields of a lazy NullSummary as Dask arrays (``bin`` and ``randomization``).

    ``null_peak_max_z``/``null_peak_min_z`` are NaN where the cluster-extent null was not run.
    """
    field = functools.partial(_field, summary)
    shape = (n_randomizations,)
    return {
        "null_hist": da.from_delayed(field("hist"), (N_HIST,), np.int64),
        "null_max_z": da.from_delayed(field("max_z"), shape, np.float64),
        "null_min_z": da.from_delayed(field("min_z"), shape, np.float64),
        "null_max_cluster_pos": da.from_delayed(field("max_cluster_pos"), shape, np.int64),
        "null_max_cluster_neg": da.from_delayed(field("max_cluster_neg"), shape, np.int64),
        "null_peak_max_z": da.from_delayed(field("peak_max_z", shape), shape, np.float64),
        "null_peak_min_z": da.from_delayed(field("peak_min_z", shape), shape, np.float64),
    }


def _get(summary: NullSummary, name: str, shape: tuple[int, ...] | None) -> np.ndarray:
    value = getattr(summary, name)
    return np.full(shape, np.nan) if value is None and shape is not None else value


def _field(summary: Delayed, name: str, shape: tuple[int, ...] | None = None) -> Delayed:
    return dask.delayed(_get, pure=True)(summary, name, shape)
