"""Randomization throughput of the mean analysis, next to the memory bound, in one run.

Usage (from the repository root)::

    .venv/bin/python benchmarks/permutations.py [--randomizations 40] [--workers 1 2]

Prints, for the 24 studies of the reference example on the grey-matter mask:

- the bound: seconds to read the (study, voxel) effect and variance stack once from memory
  (float32, the stored layout), best of several runs;
- one randomization of the NumPy kernel (relocation, gather, DerSimonian-Laird, histogram,
  max/min) on one core, and its ratio to the bound;
- one randomization of the cluster-extent null (peak relocation, kernel pasting, pooling,
  labelling) on one core;
- randomizations per second of the whole null graph on a LocalCluster of 1 and 2 workers,
  and the parallel efficiency.

Nothing here is a test: the numbers are ratios measured in the same process.
"""

from __future__ import annotations

import argparse
import time

import dask
import numpy as np

from daskmeta.analysis import mean
from daskmeta.io import load_studies
from daskmeta.preprocess import recreate
from daskmeta.randomization import _cluster_block, randomization_seeds
from daskmeta.stats.null import randomization_block
from daskmeta.stats.pvalues import z_threshold_for_p


def best_of(function, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default="examples/clbp")
    parser.add_argument("--randomizations", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    studies = load_studies(args.studies)
    with dask.config.set(scheduler="threads"):
        maps = recreate(studies).compute()
    effect32 = np.ascontiguousarray(maps.effect.values)
    variance32 = np.ascontiguousarray(maps.variance.values)
    k, v = effect32.shape
    print(f"{k} studies x {v} voxels ({effect32.nbytes * 2 / 1e6:.1f} MB float32 stack)")

    bound = best_of(lambda: (effect32.sum(dtype=np.float64), variance32.sum(dtype=np.float64)))
    print(f"memory bound: read the stack once           {bound * 1e3:8.2f} ms")

    seeds = randomization_seeds(1, "bench", 0, 5)
    one = best_of(lambda: randomization_block(effect32, variance32, seeds, 5), repeats=3) / 5
    print(f"one randomization (NumPy kernel, 1 core)    {one * 1e3:8.2f} ms  "
          f"= {one / bound:5.1f} x the memory bound")

    summary = randomization_block(effect32, variance32, seeds, 5)
    thresholds = z_threshold_for_p(summary.hist, 0.005)
    peaks = maps.peak_g.values.astype(np.float64)
    n1 = maps.n1.values.astype(np.float64)
    n2 = maps.n2.values.astype(np.float64)
    cluster = best_of(lambda: _cluster_block(peaks, n1, n2, 1, "bench", 0, 2, "gray_matter", 20.0,
                                             thresholds), repeats=2) / 2
    print(f"one cluster-null randomization (1 core)     {cluster * 1e3:8.2f} ms")

    import tempfile

    from distributed import Client, LocalCluster

    from daskmeta.store import read_group, write_group

    store = tempfile.mkdtemp(suffix=".zarr")
    write_group(maps, store, "studies")
    stored = read_group(store, "studies")  # lazily read from Zarr, as in a real run

    rates = {}
    for workers in args.workers:
        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as lc, \
                Client(lc) as client:
            result = mean(stored, permutations=args.randomizations, seed=1, block_size=5, voxel_p=None)
            client.compute(mean(stored, permutations=2, seed=2, voxel_p=None)).result()  # warm up
            start = time.perf_counter()
            client.compute(result.p).result()
            rates[workers] = args.randomizations / (time.perf_counter() - start)
        print(f"null graph, {workers} worker(s):               {rates[workers]:8.2f} randomizations/s")
    if 1 in rates and 2 in rates:
        print(f"speed-up 1 -> 2 workers: {rates[2] / rates[1]:.2f}x "
              f"(efficiency {rates[2] / rates[1] / 2:.0%})")


if __name__ == "__main__":
    main()
