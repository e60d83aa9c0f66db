"""One randomization of the cluster-extent null against one of the voxel null, in one run.

Usage (from the repository root)::

    .venv/bin/python benchmarks/cluster_null.py [--randomizations 10] [--repeats 7] [--reference]

For the studies of the reference example (24 CLBP studies, 190 peaks, grey-matter mask of
179,890 voxels, 20 mm isotropic kernel), at the voxel null's ``p < 0.005`` z thresholds
(computed from the recreated maps, as ``mean`` does; or given with ``--thresholds``), prints the
cost of one randomization on this thread of:

1. the voxel null, permutation engine (:func:`daskmeta.stats.permutation.permutation_block`), the
   cost the issue compares against;
2. the old cluster-extent null (:func:`daskmeta.null.cluster_extent.cluster_null_block_fused`: the
   whole z map, pasted and pooled plane by plane, labelled by union-find over the mask);
3. the isotropic cell null (:func:`daskmeta.null.cluster_extent.cluster_null_block`, what
   ``mean`` runs for isotropic maps: the screen of cells, the kernel's records relative to its
   peak's cell, certified decisions, labelling of the passing voxels only);
4. the cluster-extent null with the data's (anisotropic) kernel, which ``mean`` runs for these
   maps (:func:`daskmeta.null.kernel_bank.bank_cluster_block`: peaks moved to the centres of the
   kernel bank, the screen of cells, certified decisions; the bank is built on first use and
   cached);
5. the same without the screen (``screen=False``: every cell a kernel reaches is recreated);
6. the isotropic span null it replaced (:func:`daskmeta.null.cluster_extent.cluster_null_block_spans`:
   kernels pasted row by row into the mask's span layout, sparse pooling with certified
   decisions);
7. with ``--reference``, the NumPy/SciPy reference (``daskmeta.null.randomization._cluster_block``);

then the ratios to the voxel null, and checks that the isotropic nulls (and the reference) give
the same largest clusters and extremes. Each figure is the least CPU time of this thread
(``time.thread_time``) over ``--repeats`` blocks of ``--randomizations``, the blocks of the different methods
interleaved: on a shared machine that is the least disturbed measure (wall times are printed
too). Everything runs on the calling thread (Numba kernels are single-threaded).

Nothing here is a test: the numbers are ratios measured in the same process, on whatever else
the machine is doing (its load average is printed).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import dask
import numpy as np

from daskmeta.analyses.recreate import peak_effects, recreate
from daskmeta.io import load_studies
from daskmeta.model.grid import load_mask
from daskmeta.null.cluster_extent import (
    cluster_null_block,
    cluster_null_block_fused,
    cluster_null_block_spans,
    relocated_classes,
    relocated_peaks,
)
from daskmeta.null.kernel_bank import bank_cluster_block
from daskmeta.null.randomization import _cluster_block
from daskmeta.null.seeds import arrangement_seed, randomization_seeds
from daskmeta.stats.permutation import permutation_block, shuffled_stack
from daskmeta.stats.pvalues import z_threshold_for_p
from daskmeta.stats.sdm_model import variance_model

MASK = "gray_matter"
FWHM = 20.0


def interleaved_best(functions: dict[str, Callable[[], object]],
                     repeats: int) -> dict[str, tuple[float, float]]:
    """Least thread CPU time and least wall time in seconds of each function, calls interleaved."""
    cpu: dict[str, list[float]] = {name: [] for name in functions}
    wall: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start_cpu, start_wall = time.thread_time(), time.perf_counter()
            function()
            cpu[name].append(time.thread_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    return {name: (min(cpu[name]), min(wall[name])) for name in functions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default="examples/clbp")
    parser.add_argument("--randomizations", type=int, default=10, help="per timed block")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--reference", action="store_true", help="also time the NumPy/SciPy reference")
    parser.add_argument("--thresholds", type=float, nargs=2, default=None, metavar=("Z_POS", "Z_NEG"))
    args = parser.parse_args()

    print(f"{os.cpu_count()} cores, load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    studies = load_studies(args.studies)
    peak_g = peak_effects(studies).astype(np.float64)  # as the null graph passes it
    n1 = studies.studies["n1"].to_numpy(dtype=np.float64)
    n2 = studies.studies["n2"].to_numpy(dtype=np.float64)
    with dask.config.set(scheduler="synchronous"):
        maps = recreate(studies).compute()
    model = variance_model(n1, n2)
    stack = shuffled_stack(maps.effect.values, arrangement_seed(1, "b"), maps.variance.values, *model)
    n = args.randomizations
    voxel_seeds = randomization_seeds(1, "bench", 0, n)
    if args.thresholds:
        thresholds = (float(args.thresholds[0]), float(args.thresholds[1]))
    else:  # as mean: p < 0.005 (strict) of the voxel null's histogram
        hist = permutation_block(stack, randomization_seeds(1, "b", 0, 5)).hist
        thresholds = z_threshold_for_p(hist, float(np.nextafter(0.005, 0.0)))
    counts = np.isfinite(peak_g).sum(1)
    k, v = maps.effect.shape
    print(f"{k} studies, {counts.sum()} peaks, {v} voxels; thresholds z >= {thresholds[0]:.3f}, "
          f"z <= {thresholds[1]:.3f}")

    block = (peak_g, n1, n2, 1, "bench", 0, n, MASK, FWHM, thresholds)
    bank_block = (*block[:-1], float(maps.attrs["anisotropy"]), float(maps.attrs["beta"]), thresholds)
    functions: dict[str, Callable[[], object]] = {
        "voxel null (permutation engine)": lambda: permutation_block(stack, voxel_seeds),
        "old cluster-extent null (cluster_null_block_fused)": lambda: cluster_null_block_fused(*block),
        "isotropic cell null (cluster_null_block)": lambda: cluster_null_block(*block),
        "data's kernel: bank null (bank_cluster_block)": lambda: bank_cluster_block(*bank_block),
        "bank null without the screen": lambda: bank_cluster_block(*bank_block, screen=False),
        "isotropic span null (cluster_null_block_spans)": lambda: cluster_null_block_spans(*block),
    }
    if args.reference:
        functions["NumPy/SciPy reference (_cluster_block)"] = lambda: _cluster_block(*block)
    results = {name: function() for name, function in functions.items()}  # warm: compile, caches
    names = list(functions)
    fields = ("max_cluster_pos", "max_cluster_neg", "max_z", "min_z")
    same = all(np.array_equal(getattr(results[names[1]], f), getattr(results[name], f))
               for name in names[2:] if "bank" not in name for f in fields)
    same_bank = all(np.array_equal(getattr(results[names[3]], f), getattr(results[names[4]], f))
                    for f in fields)
    timings = interleaved_best(functions, args.repeats)
    print(f"\none randomization on one thread (least of {args.repeats} blocks of {n}; thread CPU time, "
          "wall time):")
    for name, (cpu, wall) in timings.items():
        print(f"  {name:<52} {cpu / n * 1e3:7.2f} ms  {wall / n * 1e3:7.2f} ms")
    voxel, old, new, bank = (timings[name][0] for name in names[:4])
    spans = timings[names[5]][0]
    print(f"  ratio cells / voxel null {new / voxel:5.2f}   spans / voxel null {spans / voxel:5.2f}   "
          f"fused / voxel null {old / voxel:5.2f}   spans / cells {spans / new:5.2f}   "
          f"bank / voxel null {bank / voxel:5.2f}")
    print(f"  bank null without / with the screen {timings[names[4]][0] / bank:5.2f}")
    print(f"  same largest clusters and extremes (isotropic nulls): {same}; (bank null with and "
          f"without the screen): {same_bank}")
    largest = results[names[3]].max_cluster_pos, results[names[2]].max_cluster_pos
    print(f"  median largest positive null cluster: data's kernel {np.median(largest[0]):.0f} voxels, "
          f"isotropic {np.median(largest[1]):.0f}")

    mask = load_mask(MASK)
    exact = [relocated_classes(*relocated_peaks(np.random.default_rng(seed), counts, peak_g, mask), *model,
                               MASK, FWHM, thresholds)[2] for seed in range(5)]
    print(f"  voxels recomputed exactly per randomization: {min(exact)}-{max(exact)} of {v}")


if __name__ == "__main__":
    main()
