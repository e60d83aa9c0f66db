"""How close is a study's effect map from its t-map to the one recreated from its peaks?

Usage (from the repository root)::

    .venv/bin/python benchmarks/map_vs_peaks.py [--studies 10] [--seed 0]

Simulates ``--studies`` studies (docs/methods.md, section 3.8; the model of
:mod:`daskmeta.testing.statmaps`: one planted effect, smooth noise), each given once as its
t-map and once as the peaks read from that map, recreates both with the AES-SDM kernel
(FWHM 20 mm; anisotropy 1 and 0) and prints the Pearson correlation of the two effect maps
over the grey-matter mask, per study and summarised. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import dask
import numpy as np

from daskmeta.analyses.recreate import recreate
from daskmeta.io import load_studies
from daskmeta.testing.simulate import TrueEffect
from daskmeta.testing.statmaps import simulate_mixed_studies
from daskmeta.testing.synthetic import simulate_table

EFFECTS = [TrueEffect(-38.0, -26.0, 56.0, sign=1, name="motor"),
           TrueEffect(-2.0, 52.0, -4.0, sign=-1, name="mpfc")]


def correlations(n_studies: int, seed: int, anisotropy: float, work: Path) -> np.ndarray:
    table = simulate_table(n_studies, seed=seed)
    by_map = simulate_mixed_studies(table, EFFECTS, work / "maps", seed, n_studies, overwrite=True)
    by_peaks = simulate_mixed_studies(table, EFFECTS, work / "peaks", seed, n_studies,
                                      peaks_from_maps=True, overwrite=True)
    with dask.config.set(scheduler="threads"):
        a = recreate(load_studies(by_map), anisotropy=anisotropy).effect.values.astype(np.float64)
        b = recreate(load_studies(by_peaks), anisotropy=anisotropy).effect.values.astype(np.float64)
    return np.array([np.corrcoef(a[s], b[s])[0, 1] for s in range(n_studies)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for anisotropy in (1.0, 0.0):
            r = correlations(args.studies, args.seed, anisotropy, Path(folder))
            print(f"anisotropy {anisotropy:.0f}: r per study " + " ".join(f"{v:.2f}" for v in r))
            print(f"    median {np.median(r):.2f}, range {r.min():.2f} to {r.max():.2f} "
                  f"({args.studies} studies, seed {args.seed})")


if __name__ == "__main__":
    main()
