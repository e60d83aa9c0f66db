"""One randomization of the cluster-extent null: the reference path against the fused one.

Usage (from the repository root)::

    .venv/bin/python benchmarks/cluster_null.py [--randomizations 10] [--repeats 5]

For the studies of the reference example (24 CLBP studies, about 190 peaks, grey-matter
mask, 20 mm isotropic kernel), at the voxel null's ``p < 0.005`` z thresholds (computed from
the recreated maps, as ``mean`` does; or given with ``--thresholds``), prints:

1. ms per randomization of ``daskmeta.null.randomization._cluster_block`` (old) and
   :func:`daskmeta.null.cluster_extent.cluster_null_block` (new), measured in the same process, best
   of ``--repeats`` blocks, and checks that both give the same largest clusters;
2. the split of one randomization: peak draws, pasting (old: ``KernelPaster.__call__`` per
   study; new: :meth:`~daskmeta.stats.peak_kernel.KernelPaster.paste_all`), pooling (``pooled_z`` of the
   stack), pasting and pooling fused (:meth:`~daskmeta.stats.peak_kernel.KernelPaster.pooled_z`), and
   labelling (``largest_cluster`` twice, scipy; :func:`~daskmeta.null.cluster_extent.largest_clusters`,
   Numba).

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
from daskmeta.null.cluster_extent import cluster_null_block, largest_clusters, paster, relocated_peaks
from daskmeta.null.randomization import _cluster_block
from daskmeta.null.seeds import arrangement_seed, randomization_seeds
from daskmeta.stats.labelling import largest_cluster
from daskmeta.stats.permutation import permutation_block, shuffled_stack
from daskmeta.stats.pvalues import z_threshold_for_p
from daskmeta.stats.sdm_model import pooled_z, variance_model

MASK = "gray_matter"
FWHM = 20.0


def best_of(function: Callable[[], object], repeats: int) -> float:
    """Smallest wall time in seconds of ``repeats`` calls (the least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def voxel_thresholds(studies, n1: np.ndarray, n2: np.ndarray) -> tuple[float, float]:
    """The voxel null's ``p < 0.005`` z thresholds of the recreated maps (as ``mean`` uses)."""
    with dask.config.set(scheduler="threads"):
        maps = recreate(studies).compute()
    stack = shuffled_stack(maps.effect.values, arrangement_seed(1, "b"), maps.variance.values,
                           *variance_model(n1, n2))
    hist = permutation_block(stack, randomization_seeds(1, "b", 0, 5)).hist
    return z_threshold_for_p(hist, float(np.nextafter(0.005, 0.0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default="examples/clbp")
    parser.add_argument("--randomizations", type=int, default=10, help="per timed block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--thresholds", type=float, nargs=2, default=None, metavar=("Z_POS", "Z_NEG"))
    args = parser.parse_args()

    print(f"{os.cpu_count()} cores, load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    studies = load_studies(args.studies)
    peak_g = peak_effects(studies).astype(np.float64)  # as the null graph passes it
    n1 = studies.studies["n1"].to_numpy(dtype=np.float64)
    n2 = studies.studies["n2"].to_numpy(dtype=np.float64)
    thresholds = tuple(args.thresholds) if args.thresholds else voxel_thresholds(studies, n1, n2)
    counts = np.isfinite(peak_g).sum(1)
    print(f"{len(counts)} studies, {counts.sum()} peaks; thresholds z >= {thresholds[0]:.3f}, "
          f"z <= {thresholds[1]:.3f}")

    n = args.randomizations
    block = (peak_g, n1, n2, 1, "bench", 0, n, MASK, FWHM, thresholds)
    old, new = _cluster_block(*block), cluster_null_block(*block)  # warm: compile, caches
    same = (np.array_equal(old.max_cluster_pos, new.max_cluster_pos)
            and np.array_equal(old.max_cluster_neg, new.max_cluster_neg))
    t_old = best_of(lambda: _cluster_block(*block), args.repeats) / n
    t_new = best_of(lambda: cluster_null_block(*block), args.repeats) / n
    print(f"\none randomization (best of {args.repeats} blocks of {n}):")
    print(f"  old _cluster_block      {t_old * 1e3:8.2f} ms")
    print(f"  new cluster_null_block  {t_new * 1e3:8.2f} ms   speed-up {t_old / t_new:.1f}x; "
          f"same largest clusters: {same}")

    mask = load_mask(MASK)
    paste = paster(MASK, FWHM)
    sampling, constant = variance_model(n1, n2)
    repeats = 4 * args.repeats

    def draws():
        return relocated_peaks(np.random.default_rng(0), counts, peak_g, mask)

    peaks = draws()
    per_study = [(peaks[0][a:b], peaks[1][a:b]) for a, b in zip(peaks[2][:-1], peaks[2][1:], strict=True)]
    stack = np.stack([paste(v, g) for v, g in per_study])
    z = paste.pooled_z(*peaks, sampling, constant)
    largest_clusters(z, thresholds, mask)
    rows = {
        "draw peaks": best_of(draws, repeats),
        "old paste (KernelPaster.__call__ x study)":
            best_of(lambda: np.stack([paste(v, g) for v, g in per_study]), repeats),
        "old pool (pooled_z of the stack)": best_of(lambda: pooled_z(stack, sampling, constant), repeats),
        "old label (largest_cluster x 2, scipy)":
            best_of(lambda: (largest_cluster(z >= thresholds[0], mask),
                             largest_cluster(z <= thresholds[1], mask)), repeats),
        "new paste only (KernelPaster.paste_all)": best_of(lambda: paste.paste_all(*peaks), repeats),
        "new paste + pool fused (KernelPaster.pooled_z)":
            best_of(lambda: paste.pooled_z(*peaks, sampling, constant), repeats),
        "new label (largest_clusters, Numba)":
            best_of(lambda: largest_clusters(z, thresholds, mask), repeats),
    }
    print(f"\nsplit of one randomization (best of {repeats}):")
    for label, seconds in rows.items():
        print(f"  {label:<48} {seconds * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
