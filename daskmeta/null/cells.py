"""The screen of the bank null: coarse cells and the bank's kernels cell by cell (docs/methods.md, 5.4).

The mask is cut into cubes of :data:`CELL` grid voxels (:func:`coarse_cells`); the bank's
kernels are stored again cell-major (:class:`CellBank`, cached by
:func:`~daskmeta.null.kernel_bank.cell_bank`: for each centre and cell, one record of its codes
and a bit mask), and each randomization of :func:`~daskmeta.null.kernel_bank.bank_cluster_block`
first bounds every cell's SDM-Z (on the grid of ``tau2`` values of :func:`tau_grid`) and
recreates only the cells whose bound reaches a threshold.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from daskmeta.model.grid import load_mask

__all__ = [
    "CELL",
    "SCREEN_WIDEN",
    "CellBank",
    "Cells",
    "coarse_cells",
    "screen_grid",
    "tau_grid",
]

#: Edge in voxels of the coarse cells of the screen (docs/methods.md, 5.4): cubes of 3 x 3 x 3
#: voxels (6 mm on the 2 mm grid; measured on the reference studies, 3 left about 10 % of the
#: voxels to recreate against 17 % for 4, at a third of the cost of the cell bounds for 2).
CELL = 3
#: Version of the cell-major layout (part of its cache folder's name).
CELL_VERSION = 1
#: Largest squared growth of the screen's z bound between two points of its tau2 grid
#: (1.1: the bound is at most 4.9 % above its value at the nearest grid point below).
SCREEN_WIDEN = 1.1


class CellBank(NamedTuple):
    """The bank's kernels cell-major (:func:`daskmeta.stats._bank_null_jit.build_cells`).

    Attributes
    ----------
    cell_first : ndarray of int64, shape (n_centres + 1,)
        Centre ``c`` reaches the cells of entries ``cell_first[c]:cell_first[c + 1]``.
    cell_id : ndarray of int32, shape (n_entries,)
        Each entry's cell.
    cell_code : ndarray of uint8, shape (n_entries,)
        The smallest code (largest kernel) of each entry.
    cell_record : ndarray of uint8, shape (n_entries, 32)
        Each entry's codes by place in the cell (:func:`coarse_cells`; 0 where not reached) and,
        in bytes 28-31, the bit mask of the places it reaches.
    """

    cell_first: NDArray[np.int64]
    cell_id: NDArray[np.int32]
    cell_code: NDArray[np.uint8]
    cell_record: NDArray[np.uint8]


class Cells(NamedTuple):
    """The mask's coarse cells: cubes of ``CELL`` voxels on the grid that hold mask voxels.

    Attributes
    ----------
    cell_of : ndarray of int64, shape (n_voxels,)
        Each voxel's cell.
    bit : ndarray of int64, shape (n_voxels,)
        Each voxel's place in its cell, ``(i % CELL) CELL^2 + (j % CELL) CELL + k % CELL``:
        increasing with the voxel vector's C order within a cell.
    voxel : ndarray of int64, shape (n_cells, CELL^3)
        The voxel of each place of each cell (-1 outside the mask).
    """

    cell_of: NDArray[np.int64]
    bit: NDArray[np.int64]
    voxel: NDArray[np.int64]


@functools.cache
def coarse_cells(mask_name: str, cell: int = CELL) -> Cells:
    """The mask's coarse cells (:class:`Cells`), numbered in C order of their grid position."""
    ijk = load_mask(mask_name).ijk  # type: ignore[arg-type]
    block = ijk // cell
    keys = np.ravel_multi_index(block.T, block.max(0) + 1)
    unique, cell_of = np.unique(keys, return_inverse=True)
    cell_of = cell_of.astype(np.int64).ravel()
    rest = ijk % cell
    bit = (rest[:, 0] * cell * cell + rest[:, 1] * cell + rest[:, 2]).astype(np.int64)
    voxel = np.full((len(unique), cell**3), -1, dtype=np.int64)
    voxel[cell_of, bit] = np.arange(len(ijk))
    return Cells(cell_of, bit, voxel)


def tau_grid(a_max: float, a_min: float,
             widen: float = SCREEN_WIDEN) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The screen's grid of ``tau2`` values and the bound's squared growth after each point.

    With ``A = a_max`` at least every ``b_s`` of the screen's numerator and ``alpha = a_min`` the
    smallest ``a_s``, the screen's bound at ``tau2`` in ``[t_j, t_{j+1}]`` is at most its value
    at ``t_j`` times the square root of ``h_j(tau2) = ((A + t_j) / (A + tau2))^2 (alpha + tau2) /
    (alpha + t_j)`` (docs/methods.md, 5.4), which grows up to ``tau2 = A - 2 alpha`` and falls
    beyond it. The points are placed so that ``h_j`` stays within ``widen`` up to the next
    point; the last is ``A - 2 alpha`` (or 0 when ``A <= 2 alpha``), beyond which the bound only
    falls.

    Returns
    -------
    taus, growth : ndarray of float64
        The points (``taus[0] = 0``) and ``sup h_j`` over each point's interval (1 for the last).
    """
    top = a_max - 2.0 * a_min

    def h(t_j: float, t: float) -> float:
        return ((a_max + t_j) / (a_max + t)) ** 2 * (a_min + t) / (a_min + t_j)

    taus, growth = [0.0], []
    while top > taus[-1]:
        t_j = taus[-1]
        if h(t_j, top) <= widen:
            growth.append(h(t_j, top))
            taus.append(top)
            break
        lo, hi = t_j, top  # h(t_j, .) increases on [t_j, top]: bisect for h = widen
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if h(t_j, mid) <= widen:
                lo = mid
            else:
                hi = mid
        growth.append(h(t_j, lo))
        taus.append(lo)
    growth.append(1.0)
    return np.asarray(taus), np.asarray(growth)


def screen_grid(g: NDArray[np.float64], study_of: NDArray[np.int64], sampling: NDArray[np.float64],
                constant: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """:func:`tau_grid` for these peaks: ``A`` the largest ``b`` of
    :func:`~daskmeta.stats._screen_jit.screen_b` at a peak's own effect (``b`` increases
    with the kernel-scaled effect, which is at most ``|g|``)."""
    a, c, u = sampling[study_of], constant[study_of], np.abs(g)
    b = np.where(c * u * u <= a, a + c * u * u, 2.0 * u * np.sqrt(a * c))
    a_max = float(np.max(b, initial=float(np.max(sampling))))
    return tau_grid(a_max, float(np.min(sampling)))
