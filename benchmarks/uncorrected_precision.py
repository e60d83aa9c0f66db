"""How precise the voxel null's uncorrected p is for a given number of randomizations.

Usage (from the repository root)::

    .venv/bin/python benchmarks/uncorrected_precision.py [--randomizations 4000] [--where QUERY]

The voxel null (docs/methods.md, 5.1-5.2) pools every voxel of every randomization into one
histogram; from it come the uncorrected p-values and the cluster-forming thresholds (the z at
which ``p`` drops below 0.005). ``mean`` runs it on at most ``uncorrected_permutations`` (default
1000) randomizations when the cluster-extent null gives the family-wise p-values. This script
runs ``--randomizations`` randomizations of the reference example's recreated maps (the studies
``--where`` selects; default ``modality == 'ReHo'``) with the
permutation engine, splits them into disjoint sets of R, and prints, for each R, the spread
(standard deviation across sets) of the two ``p < 0.005`` thresholds and of the p-value at the
positive threshold, against the histogram's bin width (0.001 in z). Where the spread of the
thresholds is below the bin width, more randomizations cannot change the thresholds by more
than the binning already does.

Nothing here is a test; the figures describe the reference example.
"""

from __future__ import annotations

import argparse
import time

import dask
import numpy as np

from daskmeta.analyses.recreate import recreate
from daskmeta.io import load_studies
from daskmeta.null.seeds import arrangement_seed, randomization_seeds
from daskmeta.stats.null import BIN_WIDTH
from daskmeta.stats.permutation import permutation_block, shuffled_stack
from daskmeta.stats.pvalues import p_from_histogram, z_threshold_for_p
from daskmeta.stats.sdm_model import variance_model

P = 0.005


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default="examples/clbp")
    parser.add_argument("--where", default="modality == 'ReHo'")
    parser.add_argument("--randomizations", type=int, default=4000)
    parser.add_argument("--sets", type=int, nargs="+", default=[50, 100, 200, 500, 1000])
    args = parser.parse_args()

    studies = load_studies(args.studies)
    with dask.config.set(scheduler="synchronous"):
        maps = recreate(studies).compute()
    table = studies.studies.reset_index(drop=True)
    rows = table.query(args.where).index.to_numpy() if args.where else table.index.to_numpy()
    n1 = table["n1"].to_numpy(dtype=np.float64)[rows]
    n2 = table["n2"].to_numpy(dtype=np.float64)[rows]
    effect, variance = maps.effect.values[rows], maps.variance.values[rows]
    stack = shuffled_stack(effect, arrangement_seed(1, "precision"), variance, *variance_model(n1, n2))
    step = min(args.sets)
    start = time.perf_counter()
    hists = [permutation_block(stack, randomization_seeds(1, "precision", b, b + step)).hist
             for b in range(0, args.randomizations, step)]
    seconds = time.perf_counter() - start
    print(f"{len(rows)} studies ({args.where or 'all'}), {effect.shape[1]} voxels; "
          f"{args.randomizations} randomizations of the voxel null in {seconds:.1f} s on one thread")
    print(f"histogram bin width {BIN_WIDTH} in z; thresholds of p < {P}\n")
    print(f"{'R':>6} {'sets':>5} {'sd z_pos':>10} {'sd z_neg':>10} {'sd/bin':>7} "
          f"{'rel. sd of p at z_pos':>22}")
    for size in args.sets:
        per = size // step
        n_sets = len(hists) // per
        if n_sets < 2:
            continue
        sets = [np.sum(hists[i * per:(i + 1) * per], axis=0) for i in range(n_sets)]
        thresholds = np.array([z_threshold_for_p(h, float(np.nextafter(P, 0.0))) for h in sets])
        z_ref = float(np.median(thresholds[:, 0]))
        p_at = np.array([p_from_histogram(np.array([z_ref]), h)[0] for h in sets])
        sd = thresholds.std(axis=0, ddof=1)
        print(f"{size:>6} {n_sets:>5} {sd[0]:>10.5f} {sd[1]:>10.5f} {max(sd) / BIN_WIDTH:>7.2f} "
              f"{p_at.std(ddof=1) / p_at.mean():>22.4f}")


if __name__ == "__main__":
    main()
