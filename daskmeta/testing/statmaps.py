"""Simulated whole-brain t-maps, and SDM folders that mix them with peak studies.

The model (chosen here; every number is a parameter): a study's true standardized effect is
a sum of Gaussian blobs of ``blob_fwhm_mm`` at its planted :class:`TrueEffect` locations, each
of height ``effect_d`` (Cohen's d) with the effect's sign; the observed map is

``t(v) = delta(v) / sqrt(1/n1 + 1/n2) + e(v)``  (``1/n1`` for a one-sample study)

with ``e`` a smooth Gaussian field of unit variance (white noise smoothed to
``noise_fwhm_mm``, divided by the smoothing kernel's norm). Outside the analysis mask the map
is 0, as statistical software writes it. The map is written as NIfTI on the MNI 2 mm grid with
intent ``t test`` and its degrees of freedom.

:func:`statmap_peaks` reads the peaks an author would report from such a map: local maxima
of ``|t|`` at or above the study's threshold, at least ``min_distance_mm`` apart (SPM's 8 mm),
strongest first. So one simulated study can be given once as its map and once as its peaks
(:func:`simulate_mixed_studies`, ``daskmeta simulate``), which docs/methods.md, section 3.8
uses to compare the two.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage

from daskmeta.model.grid import GRID_AFFINE, GRID_SHAPE, Mask, MaskName, ijk_to_mm, load_mask
from daskmeta.stats.effect_size import degrees_of_freedom, sampling_term
from daskmeta.stats.imputation import gaussian_noise_field
from daskmeta.testing.simulate import TrueEffect, simulate_studies

#: Voxel size of the grid in mm.
VOXEL_MM = 2.0
#: NIfTI sform/qform code of MNI-152 coordinates.
MNI_CODE = 4


def smooth_noise(rng: np.random.Generator, fwhm_mm: float) -> NDArray[np.float64]:
    """A Gaussian field of unit variance on the grid, smoothed to ``fwhm_mm`` (wrap-around).

    :func:`daskmeta.stats.imputation.gaussian_noise_field` on the MNI 2 mm grid: white noise
    smoothed with a Gaussian of that FWHM, with periodic boundaries, divided by the kernel's
    norm, so the variance is exactly 1 at every voxel.
    """
    return gaussian_noise_field(rng, fwhm_mm, GRID_SHAPE, VOXEL_MM)


def true_effect_volume(effects: Sequence[TrueEffect], effect_d: float,
                       blob_fwhm_mm: float) -> NDArray[np.float64]:
    """The planted standardized effect ``delta`` on the grid: one Gaussian blob per effect."""
    ijk = np.indices(GRID_SHAPE).reshape(3, -1).T
    xyz = ijk_to_mm(ijk)
    sigma_mm = blob_fwhm_mm / np.sqrt(8 * np.log(2))
    delta = np.zeros(len(xyz))
    for effect in effects:
        distance2 = np.sum((xyz - effect.xyz) ** 2, axis=1)
        delta += effect.sign * effect_d * np.exp(-distance2 / (2 * sigma_mm**2))
    return delta.reshape(GRID_SHAPE)


def simulate_statmap(
    n1: float,
    n2: float,
    effects: Sequence[TrueEffect],
    rng: np.random.Generator,
    mask: Mask,
    effect_d: float = 0.8,
    blob_fwhm_mm: float = 12.0,
    noise_fwhm_mm: float = 8.0,
) -> NDArray[np.float32]:
    """One study's t-map on the grid (see the module's model); 0 outside ``mask``."""
    se = float(np.sqrt(sampling_term(n1, n2)))
    t = true_effect_volume(effects, effect_d, blob_fwhm_mm) / se + smooth_noise(rng, noise_fwhm_mm)
    inside = np.zeros(GRID_SHAPE, dtype=bool)
    inside[tuple(mask.ijk.T)] = True
    return np.where(inside, t, 0.0).astype(np.float32)


def write_statmap(t_map: NDArray[np.floating], dof: float, path: str | os.PathLike) -> Path:
    """Write a t-map on the grid as NIfTI: MNI sform/qform, intent ``t test`` with its dof."""
    image = nib.Nifti1Image(np.asarray(t_map, dtype=np.float32), GRID_AFFINE)
    image.set_sform(GRID_AFFINE, code=MNI_CODE)
    image.set_qform(GRID_AFFINE, code=MNI_CODE)
    image.header.set_intent("t test", (float(dof),), name="t")
    path = Path(path)
    nib.save(image, path)
    return path


def statmap_peaks(t_map: NDArray[np.floating], t_thr: float,
                  min_distance_mm: float = 8.0) -> pd.DataFrame:
    """The peaks a study would report from its map: ``x, y, z`` (MNI mm) and signed ``t``.

    Local maxima of ``|t|`` over their 26 neighbours with ``|t| >= t_thr``, strongest
    first, each at least ``min_distance_mm`` from every stronger one kept.
    """
    magnitude = np.abs(np.asarray(t_map, dtype=np.float64))
    local = magnitude == ndimage.maximum_filter(magnitude, size=3, mode="constant")
    ijk = np.argwhere(local & (magnitude >= t_thr))
    order = np.argsort(-magnitude[tuple(ijk.T)], kind="stable")
    kept: list[NDArray[np.int64]] = []
    for candidate in ijk[order]:
        xyz = ijk_to_mm(candidate[None])[0]
        if all(np.linalg.norm(xyz - ijk_to_mm(k[None])[0]) >= min_distance_mm for k in kept):
            kept.append(candidate)
    if not kept:
        return pd.DataFrame({"x": [], "y": [], "z": [], "t": []})
    chosen = np.array(kept)
    xyz = ijk_to_mm(chosen)
    return pd.DataFrame({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                         "t": np.asarray(t_map, dtype=np.float64)[tuple(chosen.T)]})


def study_rng(seed: int, study: str) -> np.random.Generator:
    """The map noise of study ``study``: its own stream of ``seed`` (stream 1 of the study)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(study.encode()), 1)))


def simulate_mixed_studies(
    table: pd.DataFrame,
    effects: Sequence[TrueEffect],
    out_dir: str | os.PathLike,
    seed: int,
    n_maps: int,
    peaks_from_maps: bool = False,
    mask: MaskName = "gray_matter",
    effect_d: float = 0.8,
    overwrite: bool = False,
) -> Path:
    """An SDM folder whose first ``n_maps`` studies are given as t-maps, the rest as peaks.

    The peak studies are those of :func:`~daskmeta.testing.simulate.simulate_studies`. Each
    of the first ``n_maps`` studies gets a simulated t-map (its planted effects: the
    ``effects`` whose modality matches the study's, or all), written as ``STUDY.nii.gz``; with
    ``peaks_from_maps`` the same map's peaks (:func:`statmap_peaks` at the study's ``t_thr``)
    are written instead, as ``STUDY.spm_mni.txt`` (``STUDY.no_peaks.txt`` if none). The same
    arguments give the same maps, so the two folders hold the same studies.
    """
    folder = simulate_studies(table, list(effects), out_dir, seed, mask, overwrite=overwrite)
    written = pd.read_csv(folder / "sdm_table.txt", sep="\t")
    grid_mask = load_mask(mask)
    for row in written.head(n_maps).itertuples(index=False):
        name = str(row.study)
        for old in folder.glob(f"{name}.*.txt"):
            old.unlink()
        n1 = float(row.n1)
        n2 = float(row.n2) if "n2" in written.columns and pd.notna(row.n2) else float("nan")
        modality = getattr(row, "modality", None)
        own = [e for e in effects if e.modality is None or e.modality == modality]
        t_map = simulate_statmap(n1, n2, own, study_rng(seed, name), grid_mask, effect_d)
        if not peaks_from_maps:
            write_statmap(t_map, float(degrees_of_freedom(n1, n2)), folder / f"{name}.nii.gz")
            continue
        peaks = statmap_peaks(t_map, float(row.t_thr))
        if len(peaks) == 0:
            (folder / f"{name}.no_peaks.txt").write_text("")
            continue
        lines = [f"{x:.0f}\t{y:.0f}\t{z:.0f}\t{t:.2f}" for x, y, z, t in peaks.itertuples(index=False)]
        (folder / f"{name}.spm_mni.txt").write_text("\n".join(lines) + "\n")
    return folder
