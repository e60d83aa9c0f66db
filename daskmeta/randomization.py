"""The randomization null as a Dask graph (spec section 5).

One task computes a block of randomizations against the study stack, which enters the
graph once (one task that holds the whole ``(study, voxel)`` stack, fetched once by each
worker), and returns a small :class:`~daskmeta.stats.null.NullSummary`; blocks combine by
a tree reduction. Randomization ``b`` of analysis ``name`` draws from
``SeedSequence(seed, spawn_key=(crc32(name), b))``, so every randomization is the same
whatever the block size, the worker count, the order of completion or a retry.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed

from daskmeta.clusters import largest_cluster
from daskmeta.grid import load_mask
from daskmeta.stats.null import N_HIST, NullSummary, combine, randomization_block, z_threshold_for_p

#: Randomizations per task when not given: large enough to amortise scheduling, small
#: enough to spread over workers.
DEFAULT_BLOCK = 10
#: Fan-in of the tree reduction of block summaries.
TREE_FAN_IN = 8


def analysis_key(name: str) -> int:
    """A stable 32-bit key of an analysis name (part of every randomization's seed)."""
    return zlib.crc32(name.encode("utf-8"))


def randomization_seeds(seed: int, name: str, start: int, stop: int) -> list[np.random.SeedSequence]:
    """The seed sequences of randomizations ``start..stop-1`` of analysis ``name``."""
    key = analysis_key(name)
    return [np.random.SeedSequence(int(seed), spawn_key=(key, b)) for b in range(start, stop)]


def block_bounds(n_randomizations: int, block_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each block."""
    if n_randomizations < 1:
        raise ValueError(f"permutations must be >= 1; {n_randomizations} was provided")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1; {block_size} was provided")
    return [(s, min(s + block_size, n_randomizations)) for s in range(0, n_randomizations, block_size)]


def _cluster_sizes(z: np.ndarray, thresholds: tuple[float, float], mask_name: str) -> tuple[int, int]:
    mask = load_mask(mask_name)
    z_pos, z_neg = thresholds
    return largest_cluster(z >= z_pos, mask), largest_cluster(z <= z_neg, mask)


def _block(
    effect: np.ndarray, variance: np.ndarray, seed: int, name: str, start: int, stop: int,
    mask_name: str | None = None, thresholds: tuple[float, float] | None = None,
) -> NullSummary:
    seeds = randomization_seeds(seed, name, start, stop)
    cluster_size = None
    if thresholds is not None:
        cluster_size = functools.partial(_cluster_sizes, mask_name=mask_name)
    return randomization_block(effect, variance, seeds, stop - start, cluster_size, thresholds)


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
        When set, a second pass over the same randomizations records each one's largest
        positive and negative cluster at the null's own ``p < voxel_p`` z thresholds (for
        cluster-level FWE); the first pass gives the histogram those thresholds come from.

    Returns
    -------
    dask.delayed.Delayed
        Computes to a NullSummary with ``n_randomizations`` maxima in randomization order.
    """
    whole = (effect.shape[0], effect.shape[1])
    stack_e = effect.rechunk(whole).to_delayed().ravel()[0]
    stack_v = variance.rechunk(whole).to_delayed().ravel()[0]
    token = dask.base.tokenize(stack_e, stack_v, n_randomizations, seed, name, block_size)
    bounds = block_bounds(n_randomizations, block_size)
    first = [
        dask.delayed(_block, pure=True)(stack_e, stack_v, seed, name, start, stop,
                                        dask_key_name=f"randomization-{name}-{token}-{start}")
        for start, stop in bounds
    ]
    summary = _tree(first, f"null-{name}-{token}")
    if voxel_p is None:
        return summary
    thresholds = dask.delayed(_thresholds, pure=True)(summary, voxel_p)
    second = [
        dask.delayed(_block, pure=True)(stack_e, stack_v, seed, name, start, stop, mask_name,
                                        thresholds,
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
