"""Clusters of a multimodal overlap: same-direction and opposite-direction tables."""

from __future__ import annotations

import xarray as xr

from daskmeta.errors import plain
from daskmeta.inference.thresholding import EXTENT, PEAK_Z, VOXEL_P, Thresholded, threshold


def overlap_tables(
    result: xr.Dataset,
    p: float = VOXEL_P,
    peak_z: float = PEAK_Z,
    extent: int = EXTENT,
    atlas: bool = True,
) -> tuple[Thresholded, Thresholded]:
    """Clusters of a multimodal overlap, same-direction and opposite-direction (docs/methods.md, section 10).

    Thresholded like a mean map (docs/methods.md, section 6): voxels with ``p_mm < p``, clusters of at
    least ``extent`` voxels whose peak smaller-``|z|`` reaches ``peak_z``.

    Parameters
    ----------
    result : xarray.Dataset
        From :func:`multimodal` (possibly Dask-backed; computed once here).
    p : float, default 0.005
        Voxel threshold on ``p_mm``.
    peak_z : float, default 1.0
        Minimum peak height (the smaller ``|z|`` of the two analyses).
    extent : int, default 10
        Minimum cluster size in voxels.
    atlas : bool, default True
        Fill the AAL/Brodmann ``breakdown`` and ``region`` columns.

    Returns
    -------
    same_direction : Thresholded
        ``positive`` clusters: increased in both analyses; ``negative``: decreased in both.
    opposite : Thresholded
        ``positive`` clusters: increased in ``a`` (``result.attrs['of'][0]``) and decreased in
        ``b``; ``negative``: decreased in ``a`` and increased in ``b``.
    """
    if not isinstance(result, xr.Dataset):
        raise TypeError(f"result must be an xarray.Dataset; {type(result).__name__} was provided")
    if result.attrs.get("type") != "multimodal":
        raise ValueError(f"result must come from daskmeta.analyses.overlap.multimodal() (attrs['type'] "
                         f"'multimodal'); {plain(result.attrs.get('type'))!r} was provided")
    values = result[["z", "p", "z_opposite", "p_opposite"]].compute()  # one pass over the graph
    same = xr.Dataset({"z": values["z"], "p": values["p"]}, attrs=result.attrs)
    opposite = xr.Dataset({"z": values["z_opposite"], "p": values["p_opposite"]}, attrs=result.attrs)
    options = {"p": p, "peak_z": peak_z, "extent": extent, "atlas": atlas}
    return threshold(same, **options), threshold(opposite, **options)
