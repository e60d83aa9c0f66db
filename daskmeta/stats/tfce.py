"""Threshold-free cluster enhancement (TFCE) of maps over a mask's voxel vector.

TFCE (Smith and Nichols 2009) replaces each voxel's statistic by the support it receives from
the clusters around it at every height below it; SDM-PSI uses it with ``E = 0.5`` and ``H = 2``
(docs/methods.md, section 14.3). For the positive part of ``z``,

.. math::

    \\mathrm{TFCE}(v) = \\sum_{k = 1}^{n(v)} e_k(v)^E \\, h_k^H \\, dh, \\qquad h_k = k \\, dh,

where ``e_k(v)`` is the size in voxels of the 26-connected cluster of ``{z >= h_k}`` (mask
voxels only) that holds ``v``, and ``n(v) = floor(z(v) / dh + 1e-9)`` is the number of levels
at or below ``z(v)`` (:data:`LEVEL_TOLERANCE` makes a voxel exactly on a level count at that
level despite the rounding of the division; ``n = 0`` below ``dh`` and for NaN). The negative
part is the same on ``-z``; :func:`tfce` returns the positive part where ``z > 0`` and minus the
negative part where ``z < 0``.

The kernel (:mod:`daskmeta.stats._tfce_jit`) is exact: it builds the tree of the components of
all the level sets in one union-find sweep over the voxels in decreasing order, sizes the
components, and sums each component's ``e^E dh sum h^H`` down the tree, so no level is
relabelled. On the grey-matter mask a map takes milliseconds.

Nothing here accepts or returns dask or xarray objects.

References
----------
Smith SM, Nichols TE (2009). Threshold-free cluster enhancement: addressing problems of
smoothing, threshold dependence and localisation in cluster inference. NeuroImage 44:83-98.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.model.grid import Mask

#: Added to ``z / dh`` before the floor that gives a voxel's number of levels.
LEVEL_TOLERANCE = 1e-9
#: SDM-PSI's extent exponent, height exponent and level step.
EXTENT_EXPONENT = 0.5
HEIGHT_EXPONENT = 2.0
LEVEL_STEP = 0.1
#: Most levels a map may span (``max |z| / dh``).
MAX_LEVELS = 10_000_000


class Neighbours(NamedTuple):
    """26-neighbourhoods of a set of grid voxels, in compressed sparse row form.

    The neighbours of voxel ``v`` (positions in the voxel vector) are
    ``indices[indptr[v]:indptr[v + 1]]``.

    Attributes
    ----------
    indptr : ndarray of int64, shape (n_voxels + 1,)
    indices : ndarray of int32
    """

    indptr: NDArray[np.int64]
    indices: NDArray[np.int32]

    @property
    def n_voxels(self) -> int:
        return len(self.indptr) - 1


def neighbours(mask_ijk: ArrayLike | Mask) -> Neighbours:
    """The 26-neighbourhoods (faces, edges, corners) of a mask's voxels, within the mask.

    Parameters
    ----------
    mask_ijk : array_like of int, shape (n_voxels, 3), or Mask
        Grid indices of the voxel vector's voxels (a :class:`~daskmeta.model.grid.Mask` gives
        its ``ijk``); any order, no repeats.

    Returns
    -------
    Neighbours

    Examples
    --------
    >>> nb = neighbours([[0, 0, 0], [1, 1, 1], [3, 3, 3]])
    >>> [sorted(nb.indices[nb.indptr[v]:nb.indptr[v + 1]].tolist()) for v in range(3)]
    [[1], [0], []]
    """
    ijk = np.asarray(mask_ijk.ijk if isinstance(mask_ijk, Mask) else mask_ijk)
    if ijk.ndim != 2 or ijk.shape[1] != 3:
        raise ValueError(f"mask_ijk must have shape (n_voxels, 3); shape {ijk.shape} was provided")
    if ijk.dtype.kind not in "iu":
        raise TypeError(f"mask_ijk must hold integers; dtype {ijk.dtype} was provided")
    n_voxels = len(ijk)
    if n_voxels >= 2**31 - 1:
        raise ValueError(f"at most 2**31 - 2 voxels are supported; {n_voxels} were provided")
    if n_voxels == 0:
        return Neighbours(np.zeros(1, np.int64), np.zeros(0, np.int32))
    ijk = ijk.astype(np.int64)
    low = ijk.min(axis=0) - 1
    box = tuple(int(s) for s in ijk.max(axis=0) - low + 2)
    lookup = np.full(box, -1, dtype=np.int32)
    local = tuple((ijk - low).T)
    lookup[local] = np.arange(n_voxels, dtype=np.int32)
    if not np.array_equal(lookup[local], np.arange(n_voxels, dtype=np.int32)):
        raise ValueError("mask_ijk repeats a voxel")
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=3) if o != (0, 0, 0)]
    table = np.empty((n_voxels, len(offsets)), dtype=np.int32)
    for column, (di, dj, dk) in enumerate(offsets):
        table[:, column] = lookup[local[0] + di, local[1] + dj, local[2] + dk]
    present = table >= 0
    indptr = np.zeros(n_voxels + 1, dtype=np.int64)
    np.cumsum(present.sum(axis=1), out=indptr[1:])
    return Neighbours(indptr, table[present])


def _neighbours_of(structure: ArrayLike | Mask | Neighbours, n_voxels: int) -> Neighbours:
    nb = structure if isinstance(structure, Neighbours) else neighbours(structure)
    if nb.n_voxels != n_voxels:
        raise ValueError(
            f"the maps have {n_voxels} voxels but the neighbour structure has {nb.n_voxels}"
        )
    return nb


def _check_parameters(E: float, H: float, dh: float) -> tuple[float, float, float]:
    values = (float(E), float(H), float(dh))
    for name, value in zip(("E", "H", "dh"), values, strict=True):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite; {value} was provided")
    if values[2] <= 0:
        raise ValueError(f"dh must be > 0; {dh} was provided")
    return values


def _check_maps(z: NDArray, dh: float) -> NDArray[np.float64]:
    z = np.ascontiguousarray(z, dtype=np.float64)
    if np.isinf(z).any():
        raise ValueError("z holds infinite values")
    with np.errstate(invalid="ignore"):
        top = np.nanmax(np.abs(z), initial=0.0)
    if top / dh > MAX_LEVELS:
        raise ValueError(
            f"max |z| / dh is {top / dh:.3g}; at most {MAX_LEVELS} levels are supported"
        )
    return z


def tfce(
    z: ArrayLike,
    mask_ijk: ArrayLike | Mask | Neighbours,
    E: float = EXTENT_EXPONENT,
    H: float = HEIGHT_EXPONENT,
    dh: float = LEVEL_STEP,
) -> NDArray[np.float64]:
    """Threshold-free cluster enhancement of one map, signed (Smith and Nichols 2009).

    ``tfce(v) = sum_{k = 1}^{n(v)} e_k(v)^E h_k^H dh`` on the positive part of ``z`` where
    ``z > 0``, and minus the same on ``-z`` where ``z < 0`` (docs/methods.md, section 14.3;
    the levels are defined in the module notes). Clusters are 26-connected over the mask's
    voxels only. Exact: one union-find sweep, no per-level labelling.

    Parameters
    ----------
    z : array_like of float, shape (n_voxels,)
        The map over the mask's voxel vector. NaN counts as below every level; infinite
        values are refused.
    mask_ijk : array_like of int, shape (n_voxels, 3), Mask, or Neighbours
        The voxels' grid indices (or their mask), or the :func:`neighbours` computed from them
        (pass it when enhancing many maps).
    E : float, default 0.5
        Extent exponent.
    H : float, default 2.0
        Height exponent.
    dh : float, default 0.1
        Level step (> 0).

    Returns
    -------
    ndarray of float64, shape (n_voxels,)
        Positive where ``z >= dh``, negative where ``z <= -dh``, 0 elsewhere.

    References
    ----------
    Smith SM, Nichols TE (2009). NeuroImage 44:83-98.

    Examples
    --------
    >>> ijk = [[0, 0, 0], [0, 0, 1], [5, 5, 5]]
    >>> tfce([0.2, 0.1, -0.1], ijk).round(6).tolist()  # (2^0.5 0.1^2 + 0.2^2) 0.1, ...
    [0.005414, 0.001414, -0.001]
    """
    E, H, dh = _check_parameters(E, H, dh)
    z = np.asarray(z)
    if z.ndim != 1:
        raise ValueError(f"z must be a voxel vector; an array of shape {z.shape} was provided")
    z = _check_maps(z, dh)
    nb = _neighbours_of(mask_ijk, z.shape[0])
    from daskmeta.stats import _tfce_jit

    out = np.zeros(z.shape[0])
    work = np.empty((6, z.shape[0]), dtype=np.int32)
    _tfce_jit.enhance(z, nb.indptr, nb.indices, E, H, dh, out, work)
    return out


def tfce_maxima(
    z_batch: ArrayLike,
    mask_ijk: ArrayLike | Mask | Neighbours,
    E: float = EXTENT_EXPONENT,
    H: float = HEIGHT_EXPONENT,
    dh: float = LEVEL_STEP,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Largest positive and largest negative TFCE of each map of a batch, for FWE correction.

    Each map is enhanced as by :func:`tfce` (Smith and Nichols 2009; docs/methods.md,
    section 14.3) into one reused buffer; only the two maxima per map are kept.

    Parameters
    ----------
    z_batch : array_like of float, shape (n_maps, n_voxels)
        The maps (e.g. one per permutation).
    mask_ijk, E, H, dh
        As in :func:`tfce`.

    Returns
    -------
    max_pos : ndarray of float64, shape (n_maps,)
        ``max(tfce(z), 0)`` of each map.
    max_neg : ndarray of float64, shape (n_maps,)
        ``max(-tfce(z), 0)`` of each map: the largest magnitude of the negative part.

    References
    ----------
    Smith SM, Nichols TE (2009). NeuroImage 44:83-98.
    """
    E, H, dh = _check_parameters(E, H, dh)
    z_batch = np.asarray(z_batch)
    if z_batch.ndim != 2:
        raise ValueError(
            f"z_batch must have shape (n_maps, n_voxels); shape {z_batch.shape} was provided"
        )
    z_batch = _check_maps(z_batch, dh)
    nb = _neighbours_of(mask_ijk, z_batch.shape[1])
    from daskmeta.stats import _tfce_jit

    max_pos = np.zeros(z_batch.shape[0])
    max_neg = np.zeros(z_batch.shape[0])
    _tfce_jit.enhance_maxima(z_batch, nb.indptr, nb.indices, E, H, dh, max_pos, max_neg)
    return max_pos, max_neg
