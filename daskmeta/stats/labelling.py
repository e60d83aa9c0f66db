"""Cluster labelling and peaks of one volume: NumPy/SciPy kernels.

Clusters are 26-connected (faces, edges and corners; docs/methods.md, section 6, chosen here). Nothing here
accepts or returns dask or xarray objects; :func:`largest_cluster` takes a voxel vector and
its :class:`~daskmeta.model.grid.Mask` so that permutation loops never build full volumes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from daskmeta.model.grid import GRID_AFFINE, Mask

#: 26-connectivity structuring element.
CONNECTIVITY_26: NDArray[np.bool_] = np.ones((3, 3, 3), dtype=bool)
#: Spec section 6: sub-peaks at least this far (mm) from every accepted peak.
MIN_PEAK_DISTANCE_MM = 8.0


def _check_volume(volume: NDArray, name: str) -> None:
    if volume.ndim != 3:
        raise ValueError(
            f"{name} must be a 3-D volume; an array of shape {volume.shape} was provided"
        )


def label_clusters(volume: ArrayLike) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
    """Label the 26-connected clusters of a boolean volume.

    Parameters
    ----------
    volume : array_like of bool, 3-D
        Supra-threshold voxels.

    Returns
    -------
    labels : ndarray of int32, same shape as ``volume``
        Cluster ``k`` (1-based, in scan order) where ``labels == k``; 0 outside clusters.
    sizes : ndarray of int64, shape (n_clusters,)
        ``sizes[k - 1]`` is the number of voxels of cluster ``k``.

    Examples
    --------
    >>> volume = np.zeros((4, 4, 4), dtype=bool)
    >>> volume[0, 0, 0] = volume[1, 1, 1] = volume[3, 3, 3] = True
    >>> labels, sizes = label_clusters(volume)
    >>> sizes.tolist()
    [2, 1]
    """
    volume = np.asarray(volume)
    _check_volume(volume, "volume")
    if volume.dtype != np.bool_:
        raise TypeError(f"volume must be boolean; dtype {volume.dtype} was provided")
    labels = np.empty(volume.shape, dtype=np.int32)
    n_clusters = ndimage.label(volume, structure=CONNECTIVITY_26, output=labels)
    sizes = np.bincount(labels.ravel(), minlength=n_clusters + 1)[1:].astype(np.int64)
    return labels, sizes


def largest_cluster(vector: ArrayLike, mask: Mask) -> int:
    """Size in voxels of the largest 26-connected cluster of a boolean voxel vector.

    Fast enough for permutation loops: the supra-threshold voxels are placed into the
    smallest box holding them (not into the full grid) before labelling.

    Parameters
    ----------
    vector : array_like of bool, shape (n_voxels,)
        Supra-threshold voxels of ``mask``'s voxel vector.
    mask : Mask
        The mask that defines the voxel vector.

    Returns
    -------
    int
        0 when no voxel is set.
    """
    vector = np.asarray(vector)
    if vector.shape != (mask.n_voxels,):
        raise ValueError(
            f"vector must have shape ({mask.n_voxels},) for mask {mask.name!r}; "
            f"shape {vector.shape} was provided"
        )
    if vector.dtype != np.bool_:
        raise TypeError(f"vector must be boolean; dtype {vector.dtype} was provided")
    ijk = mask.ijk[vector]
    if len(ijk) == 0:
        return 0
    low = ijk.min(axis=0)
    box = np.zeros(tuple(ijk.max(axis=0) - low + 1), dtype=bool)
    box[tuple((ijk - low).T)] = True
    labels, _ = ndimage.label(box, structure=CONNECTIVITY_26)
    return int(np.bincount(labels.ravel())[1:].max())


def find_peaks(
    z_volume: ArrayLike,
    cluster_labels: ArrayLike,
    label: int,
    min_distance_mm: float = MIN_PEAK_DISTANCE_MM,
    affine: ArrayLike = GRID_AFFINE,
) -> NDArray[np.int64]:
    """Peaks of one cluster: its maximum of |z| and local maxima far enough apart.

    A local maximum is a cluster voxel whose |z| is at least that of each of its 26
    neighbours inside the cluster. Candidates are taken in descending |z| order (ties in
    scan order) and accepted when at least ``min_distance_mm`` from every peak accepted
    before (docs/methods.md, section 6, chosen here); the first is always the cluster maximum.

    Parameters
    ----------
    z_volume : array_like of float, 3-D
        SDM-Z (or any statistic); peaks are of its absolute value.
    cluster_labels : array_like of int, same shape
        Labels from :func:`label_clusters` (any signed or unsigned integer labels).
    label : int
        The cluster whose peaks are wanted.
    min_distance_mm : float, default 8.0
        Least distance between two peaks, in mm.
    affine : array_like, shape (4, 4), default the grid's
        Voxel to mm affine used for distances.

    Returns
    -------
    ndarray of int64, shape (n_peaks, 3)
        Voxel indices, cluster maximum first.
    """
    z_volume = np.asarray(z_volume)
    cluster_labels = np.asarray(cluster_labels)
    _check_volume(z_volume, "z_volume")
    if cluster_labels.shape != z_volume.shape:
        raise ValueError(
            f"cluster_labels must have the shape of z_volume {z_volume.shape}; "
            f"shape {cluster_labels.shape} was provided"
        )
    if min_distance_mm < 0:
        raise ValueError(f"min_distance_mm must be >= 0; {min_distance_mm} was provided")
    in_cluster = cluster_labels == label
    if not in_cluster.any():
        raise ValueError(f"no voxel has cluster label {label}")
    # Work in the cluster's bounding box, padded by one voxel for the neighbourhood.
    ijk = np.argwhere(in_cluster)
    low = np.maximum(ijk.min(axis=0) - 1, 0)
    high = np.minimum(ijk.max(axis=0) + 2, z_volume.shape)
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
    inside = in_cluster[box]
    height = np.where(inside, np.abs(z_volume[box].astype(np.float64)), -np.inf)
    height[inside & np.isnan(height)] = -np.inf
    neighbourhood_max = ndimage.maximum_filter(
        height, footprint=CONNECTIVITY_26, mode="constant", cval=-np.inf
    )
    candidates = np.argwhere(inside & (height >= neighbourhood_max))
    if len(candidates) == 0:  # every |z| is NaN: report the first voxel
        candidates = np.argwhere(inside)[:1]
    order = np.argsort(-height[tuple(candidates.T)], kind="stable")
    candidates = candidates[order] + low
    affine = np.asarray(affine, dtype=np.float64)
    mm = candidates @ affine[:3, :3].T + affine[:3, 3]
    accepted: list[int] = []
    for index in range(len(candidates)):
        if accepted:
            distance = np.linalg.norm(mm[accepted] - mm[index], axis=1)
            if np.any(distance < min_distance_mm):
                continue
        accepted.append(index)
    return candidates[accepted].astype(np.int64)
