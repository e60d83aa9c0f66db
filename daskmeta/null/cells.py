"""The screen of the cluster-extent nulls: coarse cells and kernels cell by cell (docs/methods.md, 5.4).

The mask is cut into cubes of :data:`CELL` grid voxels (:func:`coarse_cells`). A kernel is
stored cell by cell, one record per cell it reaches (the codes of its values by place in the
cell and a bit mask): the bank's kernels cell-major (:class:`CellBank`, cached by
:func:`~daskmeta.null.kernel_bank.cell_bank`), the isotropic kernel once per place of its peak
within the peak's cell, by cell offset (:func:`relative_cells`: the kernel is the same shifted
patch wherever the peak lies). Each randomization of
:func:`~daskmeta.null.kernel_bank.bank_cluster_block` and of
:func:`~daskmeta.null.cluster_extent.cluster_null_block` (through :func:`cell_null`) first bounds
every cell's SDM-Z (on the grid of ``tau2`` values of :func:`tau_grid`) and recreates only the
cells whose bound reaches a threshold.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from daskmeta.model.grid import load_mask
from daskmeta.stats.peak_kernel import isotropic_offsets

__all__ = [
    "CELL",
    "SCREEN_WIDEN",
    "CellBank",
    "CellTables",
    "Cells",
    "cell_bits",
    "cell_null",
    "coarse_cells",
    "relative_cells",
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
    """The bank's kernels cell-major (:func:`daskmeta.stats._cell_null_jit.build_cells`).

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


class CellTables(NamedTuple):
    """A kernel cell by cell, as :func:`cell_null` takes it.

    Peak ``p`` has a *group* of entries (its bank centre, or its place within its own cell) and
    a *base*; entry ``m`` of its group is the cell ``cell_at[base + cell_id[m]]`` (none where
    that is ``n_cells``), reached at the places of ``record[m]``'s bit mask that ``cell_bits`` holds.

    Attributes
    ----------
    cell_first : ndarray of int64, shape (n_groups + 1,)
        Group ``c`` owns entries ``cell_first[c]:cell_first[c + 1]``.
    cell_id : ndarray of int32, shape (n_entries,)
        Each entry's cell (bank) or cell offset (isotropic).
    cell_code : ndarray of uint8 or uint16, shape (n_entries,)
        The smallest code (largest kernel) of each entry.
    record : ndarray of uint8 or uint16, shape (n_entries, 32)
        Codes by place (0 where not reached) and, in the last four bytes, the bit mask of the
        places reached (a little-endian uint32).
    levels : ndarray of float64
        The kernel of each code (decreasing).
    cell_at : ndarray of int32
        Cell of each base + offset (``n_cells``: none).
    cell_bits : ndarray of uint32, shape (n_cells,)
        The bit mask of each cell's places in the mask.
    """

    cell_first: NDArray[np.int64]
    cell_id: NDArray[np.int32]
    cell_code: NDArray[np.unsignedinteger]
    record: NDArray[np.unsignedinteger]
    levels: NDArray[np.float64]
    cell_at: NDArray[np.int32]
    cell_bits: NDArray[np.uint32]


def cell_bits(mask_name: str) -> NDArray[np.uint32]:
    """The bit mask of the places in the mask of each coarse cell."""
    voxel = coarse_cells(mask_name).voxel
    return ((voxel >= 0).astype(np.uint64) << np.arange(voxel.shape[1], dtype=np.uint64)).sum(
        1).astype(np.uint32)


@functools.cache
def relative_cells(mask_name: str, fwhm: float) -> tuple[CellTables, NDArray[np.int64]]:
    """The isotropic kernel cell by cell, relative to its peak's cell (docs/methods.md, 5.4).

    The kernel of a peak is the same patch wherever the peak lies, so the cells it reaches and
    its values in each depend only on the peak's place within its own cell (one of ``CELL^3``,
    the group) and on the cell's offset from the peak's cell. Entry ``m`` of group ``q`` holds,
    for the cell at offset ``cell_id[m]`` (flat, on the grid of cells padded by the largest
    offset on every side), the kernel at each of its places by code: an index into the
    kernel's distinct values, decreasing (uint16: there are more than 256). The values are
    those of :func:`~daskmeta.stats.peak_kernel.isotropic_offsets`, so pasting a record gives
    the recreation's kernel exactly; the mask enters through ``cell_bits``.

    Returns
    -------
    tables : CellTables
        (``cell_at`` over the padded grid of cells, raveled.)
    base : ndarray of int64, shape (n_voxels,)
        The base of a peak at each voxel: its cell's flat index on the padded grid (its group
        is its place, :attr:`Cells.bit`).
    """
    offset, value = isotropic_offsets(float(fwhm))
    reach = int(np.abs(offset).max())
    table = np.zeros((2 * reach + 1,) * 3)
    table[tuple((offset + reach).T)] = value
    ascending = np.unique(table[table > 0])
    levels = ascending[::-1].copy()
    pad = -(-reach // CELL)  # offsets of up to reach + CELL - 1 voxels: cells up to pad away
    span = np.arange(-pad, pad + 1)
    offsets = np.stack(np.meshgrid(span, span, span, indexing="ij"), -1).reshape(-1, 3)
    place = np.stack(np.unravel_index(np.arange(CELL**3), (CELL,) * 3), -1)
    ijk = load_mask(mask_name).ijk  # type: ignore[arg-type]
    cells = coarse_cells(mask_name)
    block = np.zeros((cells.voxel.shape[0], 3), np.int64)
    block[cells.cell_of] = ijk // CELL
    shape = tuple(int(n) for n in block.max(0) + 1 + 2 * pad)
    cell_at = np.full(shape, len(block), np.int32)  # n_cells: no cell
    cell_at[tuple((block + pad).T)] = np.arange(len(block))
    flat_offset = np.ravel_multi_index((offsets + pad).T, shape) - np.ravel_multi_index((pad,) * 3, shape)
    counts, ids, codes, records = [], [], [], []
    for group in range(CELL**3):
        # voxel offset of every place of every cell offset from the peak at place `group`
        delta = CELL * offsets[:, None, :] + place[None, :, :] - place[group]
        inside = np.all(np.abs(delta) <= reach, axis=2)
        value = np.zeros(inside.shape)
        d = delta[inside] + reach
        value[inside] = table[d[:, 0], d[:, 1], d[:, 2]]
        reached = value > 0
        keep = reached.any(1)
        code = (len(levels) - 1 - np.searchsorted(ascending, value[keep])).astype(np.uint16)
        code[~reached[keep]] = 0
        record = np.zeros((int(keep.sum()), 32), np.uint16)
        record[:, :CELL**3] = code
        bits = (reached[keep].astype(np.uint64) << np.arange(CELL**3, dtype=np.uint64)).sum(1)
        record.view(np.uint32)[:, 15] = bits.astype(np.uint32)
        counts.append(int(keep.sum()))
        ids.append(flat_offset[keep])
        codes.append(np.where(reached[keep], code, np.iinfo(np.uint16).max).min(1).astype(np.uint16))
        records.append(record)
    first = np.zeros(CELL**3 + 1, np.int64)
    np.cumsum(counts, out=first[1:])
    tables = CellTables(first, np.concatenate(ids).astype(np.int32), np.concatenate(codes),
                        np.concatenate(records), levels, cell_at.ravel(), cell_bits(mask_name))
    base = np.ravel_multi_index((ijk // CELL + pad).T, shape).astype(np.int64)
    return tables, base


def cell_null(tables: CellTables, centre: NDArray[np.int64], base: NDArray[np.int64],
              g: NDArray[np.float64], study_of: NDArray[np.int64], sampling: NDArray[np.float64],
              constant: NDArray[np.float64], thresholds: tuple[float, float], tol: float,
              mask_name: str, hood: tuple, screen: bool = True,
              ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """Largest clusters, clipped extremes and counts of randomizations of a cell null.

    Runs :func:`~daskmeta.stats._cell_null_jit.cell_null_randomizations` on the peaks' groups
    ``centre`` and bases ``base`` (shape ``(n_randomizations, n_peaks)``) with the screen's grid
    of these peaks (:func:`screen_grid`); ``tol`` the certified decisions' relative bound;
    ``hood`` the mask's :class:`~daskmeta.null.cluster_extent.Neighbourhood`.

    Returns
    -------
    largest : ndarray of int64, shape (2, n_randomizations)
    extremes : ndarray of float64, shape (2, n_randomizations)
    counts : ndarray of int64, shape (2, n_randomizations)
        Candidate cells, and voxels decided by the reference arithmetic.
    """
    from daskmeta.stats import _cell_null_jit as _cell_kernel

    taus, growth = screen_grid(g, study_of, sampling, constant)
    inv_tau = 1.0 / (sampling[:, None] + taus[None, :])
    first = np.asarray(tables.cell_first)
    record = np.ascontiguousarray(tables.record)
    n_words = record.shape[1] * record.itemsize // 8
    longest = max(int(np.diff(first).max(initial=0)) * centre.shape[1], 1)
    gathered = np.empty((longest, n_words), np.uint64)
    n = centre.shape[0]
    largest = np.zeros((2, n), np.int64)
    extremes = np.zeros((2, n))
    counts = np.zeros((2, n), np.int64)
    _cell_kernel.cell_null_randomizations(
        np.ascontiguousarray(centre, np.int64), np.ascontiguousarray(base, np.int64),
        np.asarray(tables.cell_at), np.asarray(tables.cell_bits), g, study_of, sampling, constant,
        float(thresholds[0]), float(thresholds[1]), tol, np.asarray(tables.levels), first,
        np.asarray(tables.cell_id), np.asarray(tables.cell_code), record.view(np.uint64),
        coarse_cells(mask_name).voxel, inv_tau, inv_tau.sum(0), taus, growth, bool(screen),
        *hood, gathered, gathered.view(record.dtype),
        gathered.view(np.uint32)[:, 2 * n_words - 1], largest, extremes, counts)
    return largest, extremes, counts
