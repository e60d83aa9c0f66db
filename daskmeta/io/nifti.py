"""NIfTI export of masked voxel vectors on the MNI152 2 mm grid."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import xarray as xr

from daskmeta.model.grid import GRID_AFFINE, Mask, load_mask


def with_mask(result: xr.Dataset, mask: str | None = None) -> xr.Dataset:
    """Copy the mask name onto every voxel variable, so ``to_nifti(result.z, path)`` works.

    Parameters
    ----------
    result : xarray.Dataset
        Study maps or an analysis result; changed in place.
    mask : str, optional
        The mask name; default ``result.attrs['mask']`` (nothing is done without either).

    Returns
    -------
    xarray.Dataset
        ``result``, whose variables over ``voxel`` carry ``attrs['mask']``: a variable
        selected from it (and a study, variant or left-out row of it) still exports.
    """
    mask = result.attrs.get("mask") if mask is None else mask
    if mask is None:
        return result
    for variable in result.data_vars.values():
        if "voxel" in variable.dims:
            variable.attrs["mask"] = str(mask)
    return result


def to_image(data: xr.DataArray | np.ndarray, mask: Mask | str | None = None) -> nib.Nifti1Image:
    """A NIfTI image of a voxel vector (or a stack ``(..., voxel)`` as a 4-D image).

    ``mask`` defaults to ``data.attrs['mask']`` for DataArrays (set by daskmeta on every
    result and study map).
    """
    if mask is None:
        if not isinstance(data, xr.DataArray) or "mask" not in data.attrs:
            raise ValueError("to_nifti needs mask= for data without a 'mask' attribute")
        mask = data.attrs["mask"]
    grid_mask = load_mask(mask) if isinstance(mask, str) else mask
    values = np.asarray(data.values if isinstance(data, xr.DataArray) else data)
    if values.dtype == bool:
        values = values.astype(np.uint8)
    elif values.dtype.kind == "f":
        values = values.astype(np.float32)
    volume = grid_mask.to_volume(values)
    if values.ndim == 2:
        volume = np.moveaxis(volume, 0, -1)
    image = nib.Nifti1Image(volume, GRID_AFFINE)
    image.header.set_xyzt_units("mm")
    image.set_qform(GRID_AFFINE, code=4)  # MNI
    image.set_sform(GRID_AFFINE, code=4)
    return image


def to_nifti(
    data: xr.DataArray | np.ndarray, path: str | os.PathLike, mask: Mask | str | None = None
) -> Path:
    """Write a masked map as NIfTI on the MNI152 2 mm grid (atomically).

    Parameters
    ----------
    data : xarray.DataArray or ndarray
        A ``(voxel,)`` vector, or ``(n, voxel)`` for a 4-D image.
    path : path
        Output file, ``.nii`` or ``.nii.gz``.
    mask : Mask or str, optional
        Defaults to ``data.attrs['mask']``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = to_image(data, mask)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp" + "".join(path.suffixes))
    nib.save(image, tmp)
    os.replace(tmp, path)
    return path
