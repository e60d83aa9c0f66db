"""A sensitivity sweep as one graph vs the same variants run one after another.

Usage (from the repository root)::

    .venv/bin/python benchmarks/sweep.py [--permutations 10] [--workers 2]

24 variants of the ReHo analysis of the reference example (FWHM 10/15/20/25 mm x
anisotropy 0/1 x voxel p 0.005/0.001/0.0005) on a LocalCluster. The one-graph sweep
recreates the study maps once per kernel and pools each kernel once (threshold variants
share the maps); the one-after-another baseline runs every variant as its own analysis,
as a user scripting separate runs would. Prints both times and their ratio.
"""

from __future__ import annotations

import argparse
import time

from daskmeta.analyses.means import mean
from daskmeta.analyses.recreate import recreate
from daskmeta.analyses.sweep import plan, sweep_maps
from daskmeta.io import load_studies

GRID = {"fwhm": [10.0, 15.0, 20.0, 25.0], "anisotropy": [0.0, 1.0], "p": [0.005, 0.001, 0.0005]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default="examples/clbp")
    parser.add_argument("--permutations", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    studies = load_studies(args.studies)
    preprocess = {"mask": "gray_matter", "fwhm": 20.0, "anisotropy": 1.0, "beta": 1.0}
    threshold = {"p": 0.005, "peak_z": 1.0, "extent": 10}
    sweep = {"name": "bench", "grid": GRID,
             "analysis": {"where": "modality == 'ReHo'", "permutations": args.permutations, "seed": 1}}
    variants = plan(studies, sweep, preprocess, threshold).iloc[1:]  # the 24 grid variants
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        start = time.perf_counter()
        maps = sweep_maps(studies, variants, sweep, preprocess, "bench")
        client.compute(maps[["z", "p"]]).result()
        together = time.perf_counter() - start

        start = time.perf_counter()
        for row in variants.itertuples():
            study_maps = recreate(studies, fwhm=row.fwhm, anisotropy=row.anisotropy)
            result = mean(study_maps, studies=row.studies.split(";"), permutations=args.permutations,
                          seed=int(row.seed), name="sweeps/bench", voxel_p=None)
            client.compute(result[["z", "p"]]).result()
        apart = time.perf_counter() - start
    print(f"{len(variants)} variants, {variants['kernel_key'].nunique()} kernels, "
          f"{variants['analysis_key'].nunique()} pooled analyses, {args.permutations} randomizations, "
          f"{args.workers} workers")
    print(f"one graph:             {together:8.1f} s")
    print(f"one after another:     {apart:8.1f} s")
    print(f"ratio: the one-graph sweep is {apart / together:.1f}x faster")


if __name__ == "__main__":
    main()
