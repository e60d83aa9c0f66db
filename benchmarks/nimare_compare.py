"""daskmeta side by side with NiMARE on the same peaks, maps, mask and core, in one command.

Usage (from the repository root; NiMARE needs its own environment because it pins an older
nilearn than daskmeta's ``.venv``)::

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -e . 'nimare==0.22.1'
    .venv-bench/bin/python benchmarks/nimare_compare.py [--n-iters 100]

The parent process prepares everything with daskmeta (studies, recreated maps, NIfTI files,
NiMARE dataset JSON) and times daskmeta; NiMARE is timed in a fresh child process that holds
only NiMARE and its data, as a NiMARE user's script would. (Where NiMARE's IBMA time goes,
profiled here: nilearn's ``safe_get_data`` calls ``gc.collect()`` twice per image, and with
the ~290,000 Python objects that importing NiMARE creates each call takes ~0.15 s: 101
calls = 14.9 of 17.5 s; decompressing the 48 files takes 0.14 s.)

What is compared (one core each; NiMARE with ``n_cores=1``, daskmeta with the synchronous
scheduler or a single kernel call):

1. **Coordinate-based Monte Carlo FWE**: NiMARE's ALE and MKDA density, fitted on the peaks
   of the studies that report any (MNI, with total sample sizes), restricted to daskmeta's
   grey-matter mask; then ``FWECorrector(method="montecarlo", n_iters=N, n_cores=1)``.
   Per iteration is the marginal cost, ``(t(2N) - t(N)) / N``, each time the least of
   ``--repeats`` runs (the machine is shared: the least run is the least disturbed). Each
   iteration relocates
   every study's peaks, rebuilds the modeled-activation maps, and records the maximum
   statistic and cluster sizes/masses. daskmeta's counterparts, per randomization, as the
   marginal cost of a whole ``mean`` graph: the voxel null (fast engine; gives the
   uncorrected ``p``, and voxel ``p_fwe`` when no cluster-extent null runs), and the voxel
   null plus the cluster-extent null (peak relocation and map recreation with the 20 mm
   kernel; gives voxel-level and cluster-level FWE). Their difference is the cluster-extent
   null alone: the like-for-like counterpart of NiMARE's iteration, which gives voxel- and
   cluster-level FWE while its uncorrected p-values come from an analytic null, not from
   Monte Carlo. Then the cost per randomization of one whole ``mean`` of ``--fwe-run``
   randomizations (default 10,000, as a family-wise analysis runs; fixed costs included), in
   which the voxel null stops at its default 1000 randomizations (docs/methods.md, 5.2).
2. **Image-based DerSimonian-Laird**: daskmeta's recreated study maps exported with
   :func:`daskmeta.to_nifti` (effect as ``beta``, variance as ``varcope``), fitted with
   ``nimare.meta.ibma.DerSimonianLaird(groupby=False, small_sample_correction="wald")``
   (independent studies and the Wald z, as in SDM); against daskmeta's pooling from its
   Zarr store, from the same NIfTI files, and in memory. NiMARE reads a 0 in a beta map
   as "no data", so exact zeros are exported as 1e-30 (it changes the pooled maps by about
   1e-30). Agreement: the largest absolute difference of the pooled estimate and of z
   over the mask, and of z from PyMARE's estimator run directly on float64 copies.

Nothing here is a test; the figures are ratios measured on the same machine in one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

#: Stand-in for an exact zero in exported beta maps (NiMARE reads 0 as missing).
TINY = 1e-30


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


# -- the NiMARE side (child process) -----------------------------------------------------------


REPEATS = 3


def least(function, repeats: int | None = None) -> float:
    """The least wall time of ``repeats`` calls (default :data:`REPEATS`)."""
    return min(timed(function)[0] for _ in range(repeats or REPEATS))


def nimare_monte_carlo(estimator, dataset, n_iters: int) -> tuple[float, float]:
    """(marginal seconds per Monte Carlo FWE iteration, seconds of the whole N-iteration run)."""
    from nimare.correct import FWECorrector

    result = estimator.fit(dataset)
    FWECorrector(method="montecarlo", n_iters=2, n_cores=1).transform(result)  # warm caches
    small = least(lambda: FWECorrector(method="montecarlo", n_iters=n_iters, n_cores=1).transform(result))
    large = least(lambda: FWECorrector(method="montecarlo", n_iters=2 * n_iters, n_cores=1).transform(result))
    return (large - small) / n_iters, small


def nimare_side(workdir: Path, n_iters: int, cbma: bool, ibma: bool) -> dict:
    """Everything NiMARE does, in this (fresh) process; maps saved as .npy in ``workdir``."""
    import nibabel as nib
    from nimare.dataset import Dataset

    mask_img = nib.load(workdir / "mask.nii.gz")
    mask = np.asarray(mask_img.dataobj) > 0
    out: dict = {"version": __import__("nimare").__version__}
    if cbma:
        from nimare.meta.cbma import ALE, MKDADensity

        dataset = Dataset(str(workdir / "peaks.json"), target="mni152_2mm", mask=mask_img)
        for label, estimator in (("ALE", ALE(null_method="approximate")),
                                 ("MKDA density", MKDADensity(null_method="approximate"))):
            out[label] = nimare_monte_carlo(estimator, dataset, n_iters)
    if ibma:
        from nimare.meta.ibma import DerSimonianLaird

        dataset = Dataset(str(workdir / "images.json"), target="mni152_2mm", mask=mask_img)
        estimator = DerSimonianLaird(groupby=False, small_sample_correction="wald")
        out["ibma"], result = timed(lambda: estimator.fit(dataset))
        for name in ("est", "z"):
            np.save(workdir / f"nimare_{name}.npy",
                    result.get_map(name, return_type="image").get_fdata()[mask])
    return out


# -- the daskmeta side (parent process) --------------------------------------------------------


def write_inputs(studies, maps, mask, workdir: Path) -> np.ndarray:
    """Mask, NIfTI maps and NiMARE dataset JSON files; returns the exported beta stack."""
    from daskmeta.io.nifti import to_image, to_nifti

    to_image(np.ones(mask.n_voxels, dtype=bool), mask).to_filename(workdir / "mask.nii.gz")
    exported = np.where(maps.effect.values == 0, np.float32(TINY), maps.effect.values).astype(np.float32)
    peaks, images = {}, {}
    for s, row in enumerate(studies.studies.itertuples()):
        assert maps.study.values[s] == row.study
        n = row.n1 + (0 if np.isnan(row.n2) else row.n2)
        metadata = {"sample_sizes": [int(n)]}
        study_peaks = studies.peaks[studies.peaks.study == row.study]
        if not study_peaks.empty:
            coords = {"space": "MNI", "x": study_peaks.x.tolist(), "y": study_peaks.y.tolist(),
                      "z": study_peaks.z.tolist()}
            peaks[row.study] = {"contrasts": {"1": {"coords": coords, "metadata": metadata}}}
        beta = to_nifti(exported[s], workdir / f"{row.study}_beta.nii.gz", mask)
        varcope = to_nifti(maps.variance.values[s], workdir / f"{row.study}_varcope.nii.gz", mask)
        images[row.study] = {"contrasts": {"1": {
            "images": {"beta": str(beta), "varcope": str(varcope)}, "metadata": metadata}}}
    (workdir / "peaks.json").write_text(json.dumps(peaks))
    (workdir / "images.json").write_text(json.dumps(images))
    return exported


def daskmeta_marginal(maps, n: int, voxel_p: float | None) -> float:
    """Marginal seconds per randomization of a whole ``mean`` graph on one core."""
    from daskmeta.analyses.means import mean

    def run(permutations: int) -> float:
        result = mean(maps, permutations=permutations, seed=1, block_size=max(permutations // 4, 1),
                      voxel_p=voxel_p)
        return least(lambda: result.compute(scheduler="synchronous"))

    run(2)  # compile / load the numba cache, fill the kernel caches
    return (run(2 * n) - run(n)) / n


def daskmeta_per_randomization(maps, n: int) -> float:
    """Seconds per randomization of one whole ``mean`` of ``n`` randomizations on one core,
    fixed costs included (with the cluster-extent null, whose voxel null stops at
    ``uncorrected_permutations``, default 1000)."""
    from daskmeta.analyses.means import mean

    result = mean(maps, permutations=n, seed=1, block_size=100, voxel_p=0.005)
    return least(lambda: result.compute(scheduler="synchronous"), repeats=1) / n


def pymare_float64(effect: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Wald z of PyMARE's DerSimonianLaird on float64 copies of the (study, voxel) stacks."""
    import pymare

    estimator = pymare.estimators.DerSimonianLaird(small_sample_correction="wald")
    estimator.fit_dataset(pymare.Dataset(y=effect.astype(np.float64), v=variance.astype(np.float64)))
    return np.asarray(estimator.summary().get_fe_stats()["z"]).squeeze()


def daskmeta_ibma(maps, mask, exported, workdir: Path, t_nimare: float) -> None:
    import nibabel as nib

    from daskmeta.analyses.means import pool, prepare_studies
    from daskmeta.io.store import read_group, write_group
    from daskmeta.stats.random_effects import dersimonian_laird

    store = str(workdir / "store.zarr")
    write_group(maps, store, "studies")
    t_zarr, pooled = timed(lambda: pool(prepare_studies(read_group(store, "studies"))).compute(
        scheduler="synchronous"))

    def from_nifti():
        def load(name, kind):
            return nib.load(workdir / f"{name}_{kind}.nii.gz").get_fdata(dtype=np.float32)[mask.volume]

        stacks = [np.stack([load(name, kind) for name in maps.study.values]) for kind in ("beta", "varcope")]
        return dersimonian_laird(stacks[0], stacks[1], axis=0)

    t_nifti, _ = timed(from_nifti)
    t_kernel, _ = timed(lambda: dersimonian_laird(maps.effect.values, maps.variance.values, axis=0))
    reference = dersimonian_laird(exported, maps.variance.values, axis=0)
    est, z = np.load(workdir / "nimare_est.npy"), np.load(workdir / "nimare_z.npy")
    k, v = exported.shape
    print(f"\nDerSimonian-Laird IBMA on {k} recreated maps x {v} voxels")
    print(f"  NiMARE DerSimonianLaird.fit (reads {2 * k} NIfTI files)  {t_nimare:8.2f} s")
    for label, seconds in (("daskmeta pool() from its Zarr store", t_zarr),
                           ("daskmeta DL from the same NIfTI files", t_nifti),
                           ("daskmeta DL kernel in memory", t_kernel)):
        print(f"  {label:<49}{seconds:8.2f} s  -> NiMARE takes {t_nimare / seconds:6.1f}x")
    finite = np.isfinite(est) & np.isfinite(z)
    print(f"  agreement over {finite.sum()} of {v} mask voxels: max |est diff| "
          f"{np.abs(est - reference.effect)[finite].max():.2e}, max |z diff| "
          f"{np.abs(z - reference.z)[finite].max():.2e} (|z| up to {np.abs(reference.z).max():.2f}); "
          "vs daskmeta's maps with their zeros: max |z diff| "
          f"{np.abs(z - pooled.z.values)[finite].max():.2e}")
    print("  NiMARE hands PyMARE the images' float32 arrays, so its arithmetic rounds at float32; "
          "PyMARE's DerSimonianLaird on the same values in float64: max |z diff| "
          f"{np.abs(pymare_float64(exported, maps.variance.values) - reference.z).max():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default="examples/clbp")
    parser.add_argument("--n-iters", type=int, default=100, help="N of the Monte Carlo runs (N and 2N)")
    parser.add_argument("--fwe-run", type=int, default=10_000,
                        help="randomizations of the whole mean timed per randomization (0: skip)")
    parser.add_argument("--skip-cbma", action="store_true")
    parser.add_argument("--skip-ibma", action="store_true")
    parser.add_argument("--nimare-side", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("nimare").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.nimare_side:
        print(json.dumps(nimare_side(args.nimare_side, args.n_iters, not args.skip_cbma,
                                     not args.skip_ibma)))
        return
    try:
        import nimare  # noqa: F401
    except ImportError:
        raise SystemExit("NiMARE is not installed here; see the usage in this file's docstring.") from None

    import dask

    from daskmeta.analyses.recreate import recreate
    from daskmeta.io import load_studies
    from daskmeta.model.grid import load_mask

    print("load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    studies = load_studies(args.studies)
    mask = load_mask("gray_matter")
    with dask.config.set(scheduler="threads"):
        maps = recreate(studies).compute()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        exported = write_inputs(studies, maps, mask, workdir)
        child = [sys.executable, __file__, "--nimare-side", str(workdir), "--n-iters", str(args.n_iters)]
        child += ["--skip-cbma"] * args.skip_cbma + ["--skip-ibma"] * args.skip_ibma
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        nimare = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"NiMARE {nimare['version']}; {len(studies)} studies ({studies.peaks.study.nunique()} with "
              f"peaks, {len(studies.peaks)} peaks), grey-matter mask of {mask.n_voxels} voxels, 1 core")
        if not args.skip_cbma:
            n = args.n_iters
            voxel = daskmeta_marginal(maps, n, None)
            full = daskmeta_marginal(maps, n, 0.005)
            print(f"\nMonte Carlo FWE, time per iteration (marginal, N = {n} and {2 * n})")
            print(f"  daskmeta mean, voxel null (fast engine)         {voxel * 1e3:8.1f} ms")
            print(f"  daskmeta mean, voxel + cluster-extent null      {full * 1e3:8.1f} ms")
            print(f"  difference: the cluster-extent null alone       {(full - voxel) * 1e3:8.1f} ms "
                  "(voxel- and cluster-level FWE)")
            for label in ("ALE", "MKDA density"):
                per_iter, total = nimare[label]
                print(f"  NiMARE {label:<13} FWECorrector montecarlo  {per_iter * 1e3:8.1f} ms "
                      f"({total:.1f} s for {n}) = {per_iter / voxel:5.1f}x the voxel null, "
                      f"{per_iter / full:5.2f}x voxel + cluster, "
                      f"{per_iter / (full - voxel):5.2f}x the cluster-extent null alone")
            if args.fwe_run:
                whole = daskmeta_per_randomization(maps, args.fwe_run)
                print(f"\nA whole daskmeta mean of {args.fwe_run} randomizations (voxel null on the first "
                      f"{min(args.fwe_run, 1000)}, cluster-extent null on all; fixed costs included): "
                      f"{whole * 1e3:.2f} ms per randomization")
                for label in ("ALE", "MKDA density"):
                    print(f"  NiMARE {label:<13} per iteration / that       {nimare[label][0] / whole:5.2f}x")
        if not args.skip_ibma:
            daskmeta_ibma(maps, mask, exported, workdir, nimare["ibma"])


if __name__ == "__main__":
    main()
