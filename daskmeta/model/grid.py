"""The MNI152 2 mm grid, tissue templates, analysis masks and masked voxel vectors.

Maps are computed as 1-D vectors over the voxels of a :class:`Mask`; volumes exist only
at the edges (recreation neighbourhoods, cluster labelling, NIfTI export).

Templates are nilearn's packaged ICBM152 2009 grey- and white-matter maps and T1-based
brain mask (no download), resampled once onto the grid and cached as ``templates.npz``
under :func:`cache_dir`.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.errors import plain

#: Shape of the MNI152 2 mm grid.
GRID_SHAPE: tuple[int, int, int] = (91, 109, 91)
#: Voxel (i, j, k) -> SPM-MNI mm affine of the grid.
GRID_AFFINE: NDArray[np.float64] = np.array(
    [[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]]
)
VOXEL_SIZE_MM = 2.0

MaskName = Literal["gray_matter", "white_matter", "brain"]
MASK_NAMES: tuple[str, ...] = get_args(MaskName)
#: Grey-matter probability at or above which a brain voxel is in the ``gray_matter`` mask
#: (docs/methods.md, section 3.1, chosen here); the same rule with white matter gives ``white_matter``.
TISSUE_THRESHOLD = 0.2
TEMPLATE_VERSION = 1


def cache_dir() -> Path:
    """Where templates and atlases resampled to the grid are cached.

    ``$DASKMETA_CACHE`` if set, else ``$XDG_CACHE_HOME/daskmeta`` or ``~/.cache/daskmeta``.
    """
    if os.environ.get("DASKMETA_CACHE"):
        return Path(os.environ["DASKMETA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "daskmeta"


def mm_to_ijk(xyz: ArrayLike) -> NDArray[np.int64]:
    """Nearest voxel indices (n, 3) of SPM-MNI mm coordinates (n, 3); may lie off the grid."""
    xyz = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
    inv = np.linalg.inv(GRID_AFFINE)
    ijk = xyz @ inv[:3, :3].T + inv[:3, 3]
    return np.rint(ijk).astype(np.int64)


def ijk_to_mm(ijk: ArrayLike) -> NDArray[np.float64]:
    """SPM-MNI mm coordinates (n, 3) of voxel indices (n, 3)."""
    ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
    return ijk @ GRID_AFFINE[:3, :3].T + GRID_AFFINE[:3, 3]


def in_grid(ijk: ArrayLike) -> NDArray[np.bool_]:
    """Whether each voxel index row lies inside the grid."""
    ijk = np.atleast_2d(np.asarray(ijk))
    return np.all((ijk >= 0) & (ijk < np.array(GRID_SHAPE)), axis=1)


def _resample_templates() -> dict[str, NDArray[np.float32]]:
    from nilearn import datasets, image

    def onto_grid(img, interpolation: str) -> NDArray[np.float32]:
        img = image.new_img_like(img, np.asarray(img.get_fdata(), dtype=np.float32))
        out = image.resample_img(
            img, target_affine=GRID_AFFINE, target_shape=GRID_SHAPE,
            interpolation=interpolation, force_resample=True, copy_header=True,
        )
        return np.asarray(out.get_fdata(), dtype=np.float32)

    gray = np.clip(onto_grid(datasets.load_mni152_gm_template(), "linear"), 0, 1)
    white = np.clip(onto_grid(datasets.load_mni152_wm_template(), "linear"), 0, 1)
    with warnings.catch_warnings():
        # linear on purpose: the interpolated mask is thresholded at 0.5 just below
        warnings.filterwarnings("ignore", "Resampling binary images with continuous or linear "
                                "interpolation", UserWarning)
        brain = onto_grid(datasets.load_mni152_brain_mask(), "linear") >= 0.5
    brain &= (gray + white) > 0.05
    gray[~brain] = 0
    white[~brain] = 0
    csf = np.where(brain, np.clip(1.0 - gray - white, 0, 1), 0).astype(np.float32)
    return {"gray": gray, "white": white, "csf": csf, "brain": brain}


@functools.cache
def templates() -> dict[str, NDArray]:
    """Tissue probability maps on the grid: ``gray``, ``white``, ``csf`` and bool ``brain``.

    Built from nilearn's packaged ICBM152 2009 templates on first use and cached on disk.
    CSF is the brain minus grey and white matter (docs/methods.md, section 3.1).
    """
    path = cache_dir() / f"templates_v{TEMPLATE_VERSION}.npz"
    if path.exists():
        with np.load(path) as stored:
            return {key: stored[key] for key in stored.files}
    maps = _resample_templates()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **maps)
    os.replace(tmp, path)
    return maps


def tissue_probabilities() -> NDArray[np.float32]:
    """Stacked (grey, white, CSF) probabilities, shape ``(3, 91, 109, 91)``."""
    maps = templates()
    return np.stack([maps["gray"], maps["white"], maps["csf"]])


@dataclass(frozen=True, eq=False)
class Mask:
    """An analysis mask on the grid and the voxel vector it defines.

    Attributes
    ----------
    name : str
        ``gray_matter``, ``white_matter`` or ``brain``.
    volume : ndarray of bool, shape (91, 109, 91)
    """

    name: str
    volume: NDArray[np.bool_]

    @functools.cached_property
    def ijk(self) -> NDArray[np.int64]:
        """Voxel indices (n_voxels, 3), in C order of the volume."""
        return np.argwhere(self.volume)

    @functools.cached_property
    def xyz(self) -> NDArray[np.float64]:
        """SPM-MNI mm coordinates (n_voxels, 3)."""
        return ijk_to_mm(self.ijk)

    @functools.cached_property
    def flat_index(self) -> NDArray[np.int64]:
        """Index of each mask voxel in the raveled (C order) volume."""
        return np.flatnonzero(self.volume)

    @functools.cached_property
    def lookup(self) -> NDArray[np.int64]:
        """Volume of voxel-vector positions (-1 outside the mask)."""
        table = np.full(GRID_SHAPE, -1, dtype=np.int64)
        table[self.volume] = np.arange(self.n_voxels)
        return table

    @property
    def n_voxels(self) -> int:
        return int(self.volume.sum())

    def to_volume(self, vector: ArrayLike, fill: float = 0.0) -> NDArray:
        """Place a voxel vector (..., n_voxels) back into volumes (..., 91, 109, 91)."""
        vector = np.asarray(vector)
        if vector.shape[-1] != self.n_voxels:
            raise ValueError(
                f"vector has {vector.shape[-1]} voxels, mask {self.name!r} has {self.n_voxels}"
            )
        out = np.full(vector.shape[:-1] + (int(np.prod(GRID_SHAPE)),), fill, dtype=vector.dtype)
        out[..., self.flat_index] = vector
        return out.reshape(vector.shape[:-1] + GRID_SHAPE)

    def from_volume(self, volume: ArrayLike) -> NDArray:
        """The mask's voxel vector (..., n_voxels) of volumes (..., 91, 109, 91)."""
        volume = np.asarray(volume)
        flat = volume.reshape(volume.shape[:-3] + (-1,))
        return flat[..., self.flat_index]

    def __repr__(self) -> str:
        return f"<Mask {self.name!r}: {self.n_voxels} voxels of the MNI152 2 mm grid>"


@functools.cache
def load_mask(name: MaskName = "gray_matter") -> Mask:
    """The analysis mask ``name`` on the MNI152 2 mm grid.

    ``gray_matter``: brain voxels with grey-matter probability >= 0.2 (docs/methods.md, section 3.1);
    ``white_matter``: the same with white matter; ``brain``: every brain voxel.
    """
    if name not in MASK_NAMES:
        raise ValueError(f"mask must be one of {MASK_NAMES}; {plain(name)!r} was provided")
    maps = templates()
    if name == "brain":
        volume = maps["brain"].copy()
    elif name == "gray_matter":
        volume = maps["brain"] & (maps["gray"] >= TISSUE_THRESHOLD)
    else:
        volume = maps["brain"] & (maps["white"] >= TISSUE_THRESHOLD)
    return Mask(name, volume)
