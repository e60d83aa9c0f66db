"""Study maps as a lazy Dask graph, stacked into xarray (docs/methods.md, section 3).

A peak study is recreated by one task from its peaks (:func:`daskmeta.stats.recreation.recreate_study`).
An image study (a statistical map given as input) is converted chunk by chunk of voxels: each
task reads the image, samples it at the chunk's voxels and converts the values
(:func:`daskmeta.stats.recreation.statmap_study`), so no task holds more than one image.
"""

from __future__ import annotations

import hashlib
import warnings

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from daskmeta import __version__
from daskmeta.errors import DaskmetaWarning, plain
from daskmeta.io.nifti import with_mask
from daskmeta.io.statmap import sample_statmap
from daskmeta.model.grid import MaskName, load_mask, mm_to_ijk
from daskmeta.model.studyset import StudySet, peak_lines
from daskmeta.null.kernel_bank import lattice
from daskmeta.stats.effect_size import hedges_g
from daskmeta.stats.recreation import MAP_NAMES, recreate_study, statmap_study

#: Default number of voxels per chunk of study maps (about 1 MB per float32 variable
#: and 24 studies at 16384).
VOXEL_CHUNK = 16384
#: The kernel's anisotropic distance, recorded in attrs.
KERNEL_NAME = "aes-sdm, tissue-aware geodesic distance (daskmeta)"


#: The brain lattice graph, built once per process (a second or two).
_lattice = lattice


def _recreate_task(
    peak_ijk: np.ndarray, peak_t: np.ndarray, n1: float, n2: float, t_thr: float,
    mask: str, fwhm: float, anisotropy: float, beta: float,
) -> np.ndarray:
    target = load_mask(mask).ijk
    graph, node_of = _lattice(beta) if anisotropy > 0 else (None, None)
    maps = recreate_study(peak_ijk, peak_t, n1, n2, t_thr, target, fwhm, anisotropy, graph, node_of)
    return maps.astype(np.float32)


def _statmap_task(path: str, stat: str, n1: float, n2: float, t_thr: float, mask: str,
                  start: int, stop: int) -> np.ndarray:
    """One chunk of an image study's maps: voxels ``start..stop-1`` of the mask."""
    values = sample_statmap(path, load_mask(mask).ijk[start:stop])
    return statmap_study(values, n1, n2, t_thr, stat).astype(np.float32)


def image_paths(table: pd.DataFrame) -> list[str]:
    """Each study's statistical map (``""`` for a peak study), from the table's ``map`` column."""
    if "map" not in table.columns:
        return [""] * len(table)
    return ["" if pd.isna(path) else str(path) for path in table["map"]]


def studies_hash(studies: StudySet) -> str:
    """A short hash of the study and peak tables and of every statistical map's bytes."""
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(studies.studies.astype(str), index=False).values)
    digest.update(pd.util.hash_pandas_object(
        studies.peaks[["study", "x", "y", "z", "t"]].astype(str), index=False).values)
    for path in image_paths(studies.studies):
        if path:
            with open(path, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:16]


def _image_stack(path: str, stat: str, row: object, mask: str, n_voxels: int,
                 voxel_chunk: int) -> da.Array:
    """An image study's (4, voxel) maps, one task per chunk of voxels."""
    chunks = []
    for start in range(0, n_voxels, voxel_chunk):
        stop = min(start + voxel_chunk, n_voxels)
        task = dask.delayed(_statmap_task, pure=True)(
            path, stat, float(row.n1), float(row.n2), float(row.t_thr), mask, start, stop)
        chunks.append(da.from_delayed(task, shape=(len(MAP_NAMES), stop - start), dtype=np.float32))
    return da.concatenate(chunks, axis=1)


def study_coords(table: pd.DataFrame) -> dict[str, tuple[str, np.ndarray]]:
    """Study-table columns as coordinates along ``study`` (internal columns dropped)."""
    coords = {}
    for column in table.columns:
        if column.startswith("_") or column == "study":
            continue
        values = table[column].to_numpy()
        if values.dtype == object:
            values = table[column].fillna("").astype(str).to_numpy()
        coords[column] = ("study", values)
    return coords


def voxel_coords(mask_name: str) -> dict[str, tuple[str, np.ndarray]]:
    """``i, j, k, x, y, z`` coordinates along ``voxel`` for a mask."""
    mask = load_mask(mask_name)
    return {
        **{name: ("voxel", mask.ijk[:, n].astype(np.int16)) for n, name in enumerate("ijk")},
        **{name: ("voxel", mask.xyz[:, n].astype(np.float32)) for n, name in enumerate("xyz")},
    }


def peak_effects(studies: StudySet) -> np.ndarray:
    """Each study's peak Hedges g, shape (study, peak), NaN-padded (null studies all NaN).

    Kept with the study maps: the cluster-extent null relocates peaks, not voxels.
    """
    counts = studies.peaks.groupby("study").size()
    width = max(1, int(counts.max()) if len(counts) else 1)
    out = np.full((len(studies), width), np.nan, dtype=np.float32)
    for n, row in enumerate(studies.studies.itertuples(index=False)):
        t = studies.peaks_of(row.study)["t"].to_numpy(dtype=np.float64)
        out[n, : len(t)] = hedges_g(t, float(row.n1), float(row.n2))
    return out


def recreate(
    studies: StudySet,
    fwhm: float = 20.0,
    anisotropy: float = 1.0,
    mask: MaskName = "gray_matter",
    beta: float = 1.0,
    voxel_chunk: int = VOXEL_CHUNK,
) -> xr.Dataset:
    """Recreate every study's effect-size maps (lazy).

    Parameters
    ----------
    studies : StudySet
        From :func:`daskmeta.load_studies`.
    fwhm : float
        Kernel full width at half maximum in mm (SDM default 20).
    anisotropy : float
        0 = isotropic Gaussian, 1 = fully anisotropic (SDM default).
    mask : {'gray_matter', 'white_matter', 'brain'}
        The analysis mask; maps are vectors over its voxels.
    beta : float
        Weight of tissue changes in the anisotropic distance (docs/methods.md, section 3.3).
    voxel_chunk : int
        Voxels per chunk of the returned arrays.

    Returns
    -------
    xarray.Dataset
        ``effect``, ``effect_lower``, ``effect_upper``, ``variance`` (float32, dims
        ``(study, voxel)``, Dask-backed: one recreation task per peak study, one conversion
        task per chunk of voxels of an image study), ``peak_g`` (each study's peak effects,
        ``(study, peak)``, NaN-padded; all NaN for an image study); study-table columns,
        ``is_image`` and voxel ``i, j, k, x, y, z`` as coordinates; parameters and the peaks
        (``attrs['peaks']``, ``[study, x, y, z, t]`` records) in ``attrs``.

    References
    ----------
    Radua J et al. (2014). Front Psychiatry 5:13.
    """
    if len(studies) == 0:
        raise ValueError("no studies to recreate")
    if not 0 <= anisotropy <= 1:
        raise ValueError(f"anisotropy must be in [0, 1]; {plain(anisotropy)!r} was provided")
    if fwhm <= 0:
        raise ValueError(f"fwhm must be > 0 mm; {plain(fwhm)!r} was provided")
    grid_mask = load_mask(mask)
    n_voxels = grid_mask.n_voxels
    stacks = []
    paths = image_paths(studies.studies)
    stats = (studies.studies["map_stat"].fillna("t").replace("", "t").tolist()
             if "map_stat" in studies.studies.columns else ["t"] * len(paths))
    for row, path, stat in zip(studies.studies.itertuples(index=False), paths, stats, strict=True):
        if path:
            stacks.append(_image_stack(path, stat, row, mask, n_voxels, voxel_chunk))
            continue
        peaks = studies.peaks_of(row.study)
        ijk = mm_to_ijk(peaks[["x", "y", "z"]].to_numpy()) if len(peaks) else np.empty((0, 3), int)
        outside = grid_mask.lookup[tuple(ijk.T)] < 0 if len(peaks) else np.array([], bool)
        if outside.any():
            where = peak_lines(peaks[outside])
            warnings.warn(
                f"study {plain(row.study)!r}: {int(outside.sum())} peak(s) outside the {mask} mask "
                f"(kept; their kernels still reach the mask)" + (f": {where}" if where else ""),
                DaskmetaWarning, stacklevel=2,
            )
        task = dask.delayed(_recreate_task, pure=True)(
            ijk, peaks["t"].to_numpy(dtype=np.float64), float(row.n1), float(row.n2),
            float(row.t_thr), mask, float(fwhm), float(anisotropy), float(beta),
        )
        stacks.append(da.from_delayed(task, shape=(len(MAP_NAMES), n_voxels), dtype=np.float32))
    stacked = da.stack(stacks, axis=1).rechunk((1, len(stacks), voxel_chunk))
    data_vars = {
        name: (("study", "voxel"), stacked[n]) for n, name in enumerate(MAP_NAMES)
    }
    data_vars["peak_g"] = (("study", "peak"), peak_effects(studies))
    attrs = {
        "fwhm": float(fwhm), "anisotropy": float(anisotropy), "beta": float(beta),
        "mask": mask, "n_voxels": n_voxels, "kernel": KERNEL_NAME,
        "studies_hash": studies_hash(studies), "daskmeta_version": __version__,
        "study_columns": [str(c) for c in studies.studies.columns],
        # the peaks in MNI mm, so that a store can give its study set back (e.g. to NiMARE)
        "peaks": [[str(p.study), float(p.x), float(p.y), float(p.z), float(p.t)]
                  for p in studies.peaks.itertuples(index=False)],
    }
    is_image = ("study", np.array([bool(path) for path in paths]))
    return with_mask(xr.Dataset(
        data_vars,
        coords={"study": studies.names, **study_coords(studies.studies), "is_image": is_image,
                **voxel_coords(mask)},
        attrs=attrs,
    ))
