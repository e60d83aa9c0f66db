"""Randomization throughput of the mean analysis, next to the memory bound, in one run.

Usage (from the repository root)::

    .venv/bin/python benchmarks/permutations.py [--randomizations 500] [--workers 1 2]

Prints, for the studies of the reference example (24 CLBP studies, grey-matter mask):

1. **Memory bounds**: the single-core stream bandwidth from memory (a Numba sum over a
   512 MB buffer, far larger than the caches) and the time it gives for reading the stack
   once from memory: the float32 effect stack (``k x V x 4`` bytes, all the fast engines
   read) and the float64 effect + variance stacks (``k x V x 16`` bytes, what the
   straightforward NumPy version gathers from); also the time to stream the float32 stack
   when it is already in the cache.
2. **One randomization on one core**, each engine: the ``reference`` engine
   (:func:`daskmeta.stats.null.randomization_block`) and the ``permutation`` kernel
   (:func:`daskmeta.stats.permutation.permutation_block`, the default), each in ms, as
   a ratio to the bounds, and per study-voxel in ns (``t_sv``); the same for 200 studies
   (the 24 studies' maps repeated with their voxels shuffled); and the jackknife and
   meta-regression nulls against their NumPy versions.
3. One randomization of the cluster-extent null (peak relocation, kernel pasting, pooling,
   labelling), which ``mean`` adds when ``voxel_p`` is set.
4. **Scaling**: the null graph of ``mean`` (default engine, maps read lazily from Zarr) on a
   LocalCluster of 1 and 2 single-threaded worker processes, ``P`` and ``2P``
   randomizations each (best of two runs): throughput, marginal cost per randomization
   and fixed overhead; speed-up and efficiency; each worker's resident memory before and at
   its peak (``VmHWM``).
5. **Cost model** ``T = P K V t_sv / (W e) + t_over`` with the measured ``t_sv``, parallel
   efficiency ``e`` and overhead ``t_over``, and its prediction for 100,000 randomizations
   of 200 studies on 100 workers.

Nothing here is a test: the numbers are ratios measured in the same process, on whatever
else the machine is doing (its load average is printed).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time

import dask
import numba
import numpy as np

from daskmeta.analyses.means import mean
from daskmeta.analyses.recreate import recreate
from daskmeta.io import load_studies
from daskmeta.null.cluster_extent import cluster_null_block
from daskmeta.null.seeds import arrangement_seed, randomization_seeds
from daskmeta.stats.jackknife import jackknife_null_block
from daskmeta.stats.null import randomization_block
from daskmeta.stats.permutation import (
    jackknife_permutation_block,
    permutation_block,
    regression_permutation_block,
    shuffled_stack,
)
from daskmeta.stats.pvalues import z_threshold_for_p
from daskmeta.stats.regression import regression_null_block
from daskmeta.stats.sdm_model import variance_model


def best_of(function, repeats: int = 5) -> float:
    """Smallest wall time of ``repeats`` calls (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MB: ``VmHWM`` (reset at exec, unlike maxrss,
    which a spawned worker inherits from its parent), else ``getrusage`` maxrss."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _warm_worker() -> float:
    """Load the compiled kernels in a worker (numba's cache) before anything is timed."""
    rng = np.random.default_rng(0)
    effect = np.where(rng.random((3, 500)) < 0.5, 0, rng.normal(size=(3, 500))).astype(np.float32)
    stack = shuffled_stack(effect, np.random.SeedSequence(0), None, np.full(3, 0.1), np.full(3, 0.01))
    permutation_block(stack, randomization_seeds(0, "warm", 0, 1))
    return _rss_mb()


@numba.njit(nogil=True, fastmath=True)
def _stream(values):
    """Sum of a float32 array, vectorized (reassociation allowed): one streaming read."""
    total = np.float32(0.0)
    for i in range(values.size):
        total += values[i]
    return total


def memory_bandwidth(n_bytes: int = 512 * 2**20) -> float:
    """Single-core bytes per second streamed from memory (a buffer far beyond the caches)."""
    buffer = np.ones(n_bytes // 4, dtype=np.float32)
    _stream(buffer[:16])
    return buffer.nbytes / best_of(lambda: _stream(buffer), 7)


def single_core(effect32, variance32, n1, n2, repeats: int) -> dict[str, float]:
    """Bounds and per-randomization costs of every engine on the calling core."""
    k, v = effect32.shape
    effect64, variance64 = effect32.astype(np.float64), variance32.astype(np.float64)
    bandwidth = memory_bandwidth()
    bound32 = effect32.nbytes / bandwidth
    bound64 = (effect64.nbytes + variance64.nbytes) / bandwidth
    flat = effect32.ravel()
    cached = best_of(lambda: _stream(flat), 21)
    print(f"memory bandwidth, one core (512 MB stream): {bandwidth / 1e9:.1f} GB/s")
    print(f"bound: float32 effect stack from memory ({effect32.nbytes / 1e6:5.1f} MB)   "
          f"{bound32 * 1e3:6.2f} ms   (from the cache: {cached * 1e3:.2f} ms)")
    both = effect64.nbytes + variance64.nbytes
    print(f"bound: float64 effect+variance from memory ({both / 1e6:5.1f} MB) {bound64 * 1e3:6.2f} ms")

    seeds = randomization_seeds(1, "bench", 0, 3)
    reference = best_of(lambda: randomization_block(effect64, variance64, seeds, 3), repeats) / 3
    model = variance_model(n1, n2)
    fast_seeds = randomization_seeds(1, "bench", 0, 10)
    stack = shuffled_stack(effect32, arrangement_seed(1, "bench"), variance32, *model)
    permutation_block(stack, fast_seeds[:1])  # compile, or load numba's cache
    permutation = best_of(lambda: permutation_block(stack, fast_seeds), repeats) / 10
    for label, cost in (("reference engine (NumPy draws)", reference),
                        ("permutation kernel (default)  ", permutation)):
        print(f"one randomization, {label}, 1 core {cost * 1e3:7.2f} ms = "
              f"{cost / bound32:5.1f} x float32 bound, {cost / bound64:5.2f} x float64 bound, "
              f"{cost / (k * v) * 1e9:5.2f} ns per study-voxel")
    print(f"speed-up of the permutation kernel over the reference: {reference / permutation:.0f}x")
    return {"bound32": bound32, "bound64": bound64, "reference": reference, "fast": permutation,
            "t_sv": permutation / (k * v), "stack": stack}


def variants(single: dict, effect32, variance32) -> None:
    """Jackknife and meta-regression nulls: permutation kernels against the NumPy versions."""
    k = effect32.shape[0]
    stack = single["stack"]
    y, v = effect32.astype(np.float64), variance32.astype(np.float64)
    seeds = randomization_seeds(1, "bench-variants", 0, 4)
    jackknife_permutation_block(stack, seeds[:1])
    kernel = best_of(lambda: jackknife_permutation_block(stack, seeds), 3) / 4
    numpy = best_of(lambda: jackknife_null_block(y, v, seeds[:1]), 1)
    print(f"jackknife null ({k} runs), one randomization: permutation kernel {kernel * 1e3:.1f} ms, "
          f"NumPy {numpy * 1e3:.0f} ms ({numpy / kernel:.0f}x)")
    x = np.linspace(0.0, 1.0, k)
    design = np.column_stack([np.ones(k), x])
    regression_permutation_block(stack, design, seeds[:1])
    kernel = best_of(lambda: regression_permutation_block(stack, design, seeds), 3) / 4
    numpy = best_of(lambda: regression_null_block(y, v, design, seeds[:1]), 2)
    print(f"meta-regression null (3 contrasts), one randomization: permutation kernel "
          f"{kernel * 1e3:.1f} ms, NumPy {numpy * 1e3:.0f} ms ({numpy / kernel:.0f}x)")


def many_studies(effect32, variance32, n1, n2, n_studies: int) -> tuple[float, float]:
    """``t_sv`` of the permutation kernel on ``n_studies`` studies (the maps repeated, voxels
    shuffled)."""
    rng = np.random.default_rng(0)
    k, v = effect32.shape
    rows = np.arange(n_studies) % k
    order = [rng.permutation(v) for _ in rows]
    effect = np.stack([effect32[r, o] for r, o in zip(rows, order, strict=True)])
    variance = np.stack([variance32[r, o] for r, o in zip(rows, order, strict=True)])
    model = variance_model(n1[rows], n2[rows])
    stack = shuffled_stack(effect, np.random.SeedSequence(1), variance, *model)
    seeds = randomization_seeds(1, "bench-k", 0, 2)
    cost = best_of(lambda: permutation_block(stack, seeds), 3) / 2
    bound = effect.nbytes / memory_bandwidth()
    t_sv = cost / (n_studies * v)
    print(f"{n_studies} studies ({effect.nbytes / 1e6:.0f} MB float32 stack): one randomization, "
          f"permutation kernel {cost * 1e3:.1f} ms = {cost / bound:.1f} x its float32 bound, "
          f"{t_sv * 1e9:.2f} ns per study-voxel")
    return t_sv, stack.values.nbytes / 1e6


def cluster_null(maps, hist) -> float:
    thresholds = z_threshold_for_p(hist, 0.005)
    peaks = maps.peak_g.values.astype(np.float64)
    n1 = maps.n1.values.astype(np.float64)
    n2 = maps.n2.values.astype(np.float64)
    args = (peaks, n1, n2, 1, "bench", 0, 4, "gray_matter", 20.0, thresholds)
    cluster_null_block(*args)  # compile or load the kernels, build the mask tables
    return best_of(lambda: cluster_null_block(*args), repeats=3) / 4


def scaling(maps, workers: list[int], randomizations: int, block_size: int) -> dict[int, dict]:
    """Null-graph throughput and worker memory on LocalClusters of each size.

    Each size runs ``P`` and ``2 P`` randomizations: the difference gives the marginal cost of
    a randomization (the parallel part), the rest the fixed overhead ``t_0`` (graph, Zarr
    read, tables task, transfers, tree reduction).
    """
    from distributed import Client, LocalCluster

    from daskmeta.io.store import read_group, write_group

    store = tempfile.mkdtemp(suffix=".zarr")
    write_group(maps, store, "studies")
    stored = read_group(store, "studies")  # lazily read from Zarr, as in a real run
    results = {}
    for n_workers in workers:
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=None) as lc, \
                Client(lc) as client:
            before = client.run(_warm_worker)
            elapsed = {}
            for p in (randomizations, 2 * randomizations):
                result = mean(stored, permutations=p, seed=1, block_size=block_size, voxel_p=None)
                # the client is the scheduler; best of two runs, the least disturbed
                elapsed[p] = best_of(lambda r=result: dask.compute(r.null_hist, r.null_max_z), 2)
            peak = client.run(_peak_rss_mb)
        total = elapsed[2 * randomizations]
        marginal = (total - elapsed[randomizations]) / randomizations
        run = {"elapsed": total, "rate": 2 * randomizations / total, "marginal": marginal,
               "t_0": elapsed[randomizations] - randomizations * marginal,
               "rss_before": max(before.values()), "rss_peak": max(peak.values())}
        results[n_workers] = run
        print(f"null graph, {n_workers} worker(s): {2 * randomizations} randomizations in "
              f"{run['elapsed']:6.2f} s = {run['rate']:6.1f}/s; marginal {marginal * 1e3:5.2f} ms per "
              f"randomization, t_0 = {run['t_0']:.2f} s; worker memory {run['rss_before']:.0f} MB "
              f"before, peak {run['rss_peak']:.0f} MB")
    return results


def cost_model(single: dict, t_sv_large: float | None, scale: dict[int, dict], k: int, v: int,
               n_randomizations: int, block_size: int, tables_mb_large: float | None) -> None:
    """The model's terms from this run, and its prediction for a large job.

    ``T = P K V t_sv / (W e) + t_over``: the kernel's cost per study-voxel ``t_sv`` (single
    core), the parallel efficiency ``e`` (1 -> 2 workers, whole runs) and the overhead
    ``t_over`` of a whole run beyond the kernel (graph, reading the stacks, the tables task,
    sending the tables to each worker, one task and one 240 kB histogram per block, the tree
    reduction), measured on 1 worker.
    """
    t_sv = single["t_sv"]
    print("\ncost model: T = P K V t_sv / (W e) + t_over   (P randomizations, K studies, V voxels, "
          "W workers)")
    print(f"  t_sv = {t_sv * 1e9:.2f} ns ({k} studies)" + (
        f", {t_sv_large * 1e9:.2f} ns (200 studies)" if t_sv_large else ""))
    if 1 in scale:
        kernel = n_randomizations * k * v * t_sv
        print(f"  1 worker, {n_randomizations} randomizations in blocks of {block_size}: "
              f"{scale[1]['elapsed']:.2f} s = {kernel:.2f} s kernel + t_over "
              f"{scale[1]['elapsed'] - kernel:.2f} s")
    efficiency = 0.9
    if 1 in scale and 2 in scale:
        efficiency = min(scale[1]["elapsed"] / scale[2]["elapsed"] / 2, 1.0)
    big_sv = t_sv_large or t_sv
    p, kk, w = 100_000, 200, 100
    kernel = p * kk * v * big_sv / (w * efficiency)
    print(f"  prediction: {p:,} randomizations x {kk} studies x {v:,} voxels on {w} workers "
          f"(e = {efficiency:.2f}, t_sv = {big_sv * 1e9:.2f} ns): {kernel:,.0f} s = "
          f"{kernel / 60:.1f} min of kernel, + t_over: about {tables_mb_large or 0:.0f} MB of stack "
          "to each worker (seconds on a fast network) and, in blocks of 250, 400 tasks and "
          "summaries (under a second of scheduling)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default="examples/clbp")
    parser.add_argument("--randomizations", type=int, default=2000,
                        help="P of the scaling runs (each runs P and 2P)")
    parser.add_argument("--block-size", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--many-studies", type=int, default=200, help="0 skips the large-K run")
    parser.add_argument("--no-cluster-null", action="store_true")
    args = parser.parse_args()

    print(f"{cpu_name()}, {os.cpu_count()} cores, load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    studies = load_studies(args.studies)
    with dask.config.set(scheduler="threads"):
        maps = recreate(studies).compute()
    effect32 = np.ascontiguousarray(maps.effect.values)
    variance32 = np.ascontiguousarray(maps.variance.values)
    n1, n2 = maps.n1.values.astype(np.float64), maps.n2.values.astype(np.float64)
    k, v = effect32.shape
    print(f"{k} studies x {v} voxels\n")

    single = single_core(effect32, variance32, n1, n2, args.repeats)
    variants(single, effect32, variance32)
    t_sv_large, tables_mb = (many_studies(effect32, variance32, n1, n2, args.many_studies)
                             if args.many_studies else (None, None))
    if not args.no_cluster_null:
        hist = permutation_block(single["stack"], randomization_seeds(1, "b", 0, 5)).hist
        cost = cluster_null(maps, hist)
        print(f"one cluster-null randomization (1 core): {cost * 1e3:.1f} ms "
              f"= {cost / single['fast']:.0f} x the fast voxel null")
    print()
    scale = scaling(maps, args.workers, args.randomizations, args.block_size) if args.workers else {}
    if 1 in scale and 2 in scale:
        speedup = scale[2]["rate"] / scale[1]["rate"]
        marginal = scale[1]["marginal"] / scale[2]["marginal"]
        print(f"speed-up 1 -> 2 workers: {speedup:.2f}x overall (efficiency {speedup / 2:.0%}), "
              f"{marginal:.2f}x per randomization (efficiency {marginal / 2:.0%})")
    cost_model(single, t_sv_large, scale, k, v, 2 * args.randomizations, args.block_size, tables_mb)
    print(f"\npeak memory of this process: {_peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
