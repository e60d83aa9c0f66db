"""SDM-PSI on the reference example: time, cost per permutation, and agreement with AES-SDM.

Usage (from the repository root)::

    .venv/bin/python benchmarks/psi.py [--imputations 10] [--permutations 4] [--workers 2]

On the 12 ReHo studies of the CLBP example (grey-matter mask, FWHM 20 mm) and a LocalCluster:

1. the imputation (censored ML per voxel, smoothing, draws) with ``--imputations``;
2. the observed PSI maps, and their agreement with the AES-SDM mean of the same studies
   (Pearson r of the z maps over the mask; signs at the AES peaks);
3. ``--permutations`` permutations (after one to warm up), giving the cost of one
   permutation with that many imputations, and the extrapolation to SDM-PSI's defaults,
   50 imputations x 1000 permutations (the cost is linear in imputations x permutations, see
   docs/methods.md, section 14.2).

Not a test: a measurement, printed with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from daskmeta.analyses.means import mean
from daskmeta.analyses.psi import impute, psi
from daskmeta.analyses.recreate import recreate
from daskmeta.app.dask_client import cluster_client
from daskmeta.app.logs import log_to_file
from daskmeta.datasets import clbp_folder
from daskmeta.inference.thresholding import threshold
from daskmeta.io import load_studies
from daskmeta.model.grid import load_mask, mm_to_ijk

WHERE = "modality == 'ReHo'"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imputations", type=int, default=10)
    parser.add_argument("--permutations", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    with (tempfile.TemporaryDirectory() as logs, log_to_file(logs),
          cluster_client(n_workers=args.workers, quiet=True) as client):
        maps = client.persist(recreate(load_studies(clbp_folder())))
        started = time.perf_counter()
        imputed = client.persist(impute(maps, args.imputations, seed=1, where=WHERE))
        imputed.effect.data.compute()
        t_impute = time.perf_counter() - started
        print(f"impute: 12 studies x {args.imputations} imputations: {t_impute:.1f} s")
        started = time.perf_counter()
        observed = client.compute(psi(maps, args.imputations, 0, seed=1, where=WHERE)).result()
        print(f"observed PSI maps (imputation included): {time.perf_counter() - started:.1f} s")
        aes = client.compute(mean(maps, where=WHERE, permutations=50, seed=1, voxel_p=None)).result()
        r = float(np.corrcoef(observed.z.values, aes.z.values)[0, 1])
        peaks = threshold(aes, mask="gray_matter", atlas=False).table
        ijk = mm_to_ijk(peaks[["x", "y", "z"]].to_numpy(dtype=np.float64))
        voxels = load_mask("gray_matter").lookup[tuple(ijk.T)]
        same = np.mean(np.sign(observed.z.values[voxels]) == np.sign(aes.z.values[voxels]))
        print(f"PSI z vs AES-SDM z (ReHo): r = {r:.3f}; same sign at {same:.0%} of the "
              f"{len(voxels)} AES peaks")
        runs = {}
        for count in (1, 1 + args.permutations):  # the first also loads the compiled kernels
            for _ in range(2 if count == 1 else 1):
                started = time.perf_counter()
                client.compute(psi(maps, args.imputations, count, seed=1, where=WHERE,
                                   block_size=count).null_max_z).result()
                runs[count] = time.perf_counter() - started
        per = (runs[1 + args.permutations] - runs[1]) / args.permutations
        print(f"one task of {1 + args.permutations} permutations: {runs[1 + args.permutations]:.1f} s, "
              f"of 1: {runs[1]:.1f} s (subject images of every study, imputations read): "
              f"{per:.2f} s per further permutation on one core, {args.imputations} imputations")
        default = per * (50 / args.imputations) * 1000 / args.workers
        print(f"extrapolated, 50 imputations x 1000 permutations on {args.workers} workers "
              f"(blocks of 10): {default / 60:.0f} min")


if __name__ == "__main__":
    main()
