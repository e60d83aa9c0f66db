"""How conservative the voxel and cluster FWE corrections of a mean are on null meta-analyses.

Usage (from the repository root)::

    .venv/bin/python benchmarks/cluster_calibration.py [--replicates 40] [--studies 20]
        [--permutations 200] [--anisotropy 1.0 [0.0 ...]] [--seed 0] [--csv rows.csv]

Runs ``--replicates`` null meta-analyses per anisotropy (random-peak studies, no true effect,
recreated at that anisotropy and pooled by ``mean`` with ``--permutations`` randomizations and
the cluster-extent null at voxel ``p < 0.005``; :mod:`daskmeta.testing.calibration`) and prints,
per FWE kind (cluster: docs/methods.md, section 5.4; voxel: section 5.3) and direction, the
mean and median smallest p, the same for a calibrated test with the nulls' own ties (each
randomization against the others), and the rejection rate at 0.05 with its 95 % upper bound
and the most rejections a valid test makes bar 0.1 %. Progress and the time per replicate go
to stderr. Seeded: the same arguments print the same table.
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from daskmeta.testing.calibration import calibration_run, summarize


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=40, help="null meta-analyses (default 40)")
    parser.add_argument("--studies", type=int, default=20, help="studies per meta-analysis (default 20)")
    parser.add_argument("--permutations", type=int, default=200,
                        help="randomizations per null (default 200)")
    parser.add_argument("--anisotropy", type=float, nargs="+", default=[1.0],
                        help="anisotropy of the recreated maps; several run one after another "
                             "(default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--voxel-p", type=float, default=0.005,
                        help="cluster-forming voxel threshold (default 0.005)")
    parser.add_argument("--csv", help="also write the per-replicate rows to this file")
    args = parser.parse_args(argv)

    frames = []
    for anisotropy in args.anisotropy:
        start = time.perf_counter()

        def report(replicate: int, rows: pd.DataFrame, start: float = start,
                   anisotropy: float = anisotropy) -> None:
            p = rows.set_index(["kind", "direction"])["p"]
            print(f"anisotropy {anisotropy:g} replicate {replicate + 1}/{args.replicates}: "
                  + ", ".join(f"{k} {d} p={v:.3f}" for (k, d), v in p.items())
                  + f" ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

        frames.append(calibration_run(args.replicates, args.studies, args.permutations, anisotropy,
                                      args.seed, args.voxel_p, progress=report))
        elapsed = time.perf_counter() - start
        print(f"anisotropy {anisotropy:g}: {elapsed:.0f} s, {elapsed / args.replicates:.1f} s per "
              "replicate", file=sys.stderr, flush=True)
    frame = pd.concat(frames, ignore_index=True)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    summary = summarize(frame)
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.3f}".format):
        print(summary.to_string())
    return summary


if __name__ == "__main__":
    main()
