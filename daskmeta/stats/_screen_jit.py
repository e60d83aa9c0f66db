"""Numba kernels of the screen of the bank null: which coarse cells may hold a passing voxel.

Imported by :mod:`daskmeta.stats._cell_null_jit` (docs/methods.md, 5.4, "The screen"):
:func:`screen_cells` bounds each cell's SDM-Z, for every ``tau2 >= 0``, from each study's
largest kernel-scaled effect in the cell; :func:`screen_b` is the bound's per-study
denominator. Compiled like the other kernels (single-threaded, IEEE semantics, no fastmath).

References
----------
DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Control Clin Trials 7:177-188.
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._pooling_jit import _jit


@_jit
def screen_b(u, a, c):
    """``b`` such that ``u / (b + tau2)`` bounds ``y / (a + c y^2 + tau2)`` over ``0 <= y <= u`` for
    every ``tau2 >= 0`` (docs/methods.md, 5.4).

    ``b = a + c u^2`` where ``c u^2 <= a`` (the ratio increases in ``y`` up to ``u``), else ``b = 2 u
    sqrt(a c)``: the ratio's largest value over ``y`` is then ``1 / (2 sqrt((a + tau2) c))``, which
    ``u / (2 u sqrt(a c) + tau2)`` bounds (equal at ``tau2 = 0``; ``2 u sqrt(c x) - x`` is concave in
    ``x = a + tau2``, so the bound holds on ``a <= x <= c u^2`` if it holds at both ends, and beyond
    ``c u^2`` the ratio increases up to ``u`` and ``2 u sqrt(a c) <= a + c u^2``). ``b`` increases
    with ``u``.
    """
    cu2 = c * (u * u)
    return a + cu2 if cu2 <= a else 2.0 * u * np.sqrt(a * c)


@_jit
def screen_cells(centre, peak_base, cell_at, peak_g, study_of, sampling, constant, z_pos, z_neg,
                 cell_first, cell_id, cell_code, levels, inv_tau, zero_tau, taus, widen, cellwork,
                 touched, record, record_value, grid, candidate):
    """Flag the coarse cells where some voxel's SDM-Z may pass ``z >= z_pos`` or ``z <= z_neg``.

    A study's effect at a voxel, ``y = sum K^2 g / sum K`` over the peaks that reach it, is a
    ``K``-weighted mean of their ``K g``, so within a cell ``-l_s <= y <= u_s`` with ``u_s = max(0,
    max K_max g)`` over the study's positive peaks and ``l_s`` likewise over its negative peaks
    (``K_max`` the peak's largest kernel in the cell). For any ``tau2 >= 0`` the random-effects z
    is at most ``N(tau2) / sqrt(D(tau2))`` with ``N = sum_s u_s / (b_s + tau2)`` (``b_s`` of
    :func:`screen_b`) and ``D = sum_s 1 / (a_s + c_s M_s^2 + tau2)``, ``M_s = max(u_s, l_s)``
    (docs/methods.md, 5.4). Beyond ``tau2 = 0`` the bound grows by at most the square root of
    ``A^2 / (4 alpha (A - alpha))`` (``A`` the largest ``b_s`` of the direction's studies in the
    cell, ``alpha`` the smallest ``a_s`` of all, where ``A > 2 alpha``; else not at all); between
    grid points ``taus`` by at most the square root of ``widen``. A cell is a candidate where
    ``N_j^2 widen_j >= z_pos^2 D_j`` at some grid point ``j`` (with a relative margin of 1e-6 for
    rounding, far above it), and likewise for ``-z_neg`` with the negative peaks; the grid is
    evaluated only for the cells that the growth beyond ``tau2 = 0`` leaves open.

    Parameters
    ----------
    centre, peak_base, cell_at, peak_g, study_of, sampling, constant, z_pos, z_neg
        As in :func:`~daskmeta.stats._cell_null_jit.cell_null_randomizations`: peak ``p``
        reaches, for each entry ``m`` of its group ``centre[p]``, the cell
        ``cell_at[peak_base[p] + cell_id[m]]`` (none where that is ``n_cells``: a dummy cell,
        which keeps the loop over entries free of branches).
    cell_first, cell_id, cell_code
        The entries of each group, their cells (or cell offsets) and smallest codes.
    levels : ndarray of float64
        Kernel of each code.
    inv_tau : ndarray of float64, shape (n_studies, n_grid)
        ``1 / (a_s + tau2_j)``.
    zero_tau : ndarray of float64, shape (n_grid,)
        ``sum_s inv_tau[s, j]``.
    taus, widen : ndarray of float64, shape (n_grid,)
        The grid (``taus[0] = 0``) and the bound's largest squared growth from each point to
        the next (:func:`~daskmeta.null.cells.tau_grid`).
    cellwork : ndarray of float64, shape (n_cells + 1, 8)
        Work array, all zero on entry (left so): per cell, one cache line of the study at hand's
        ``u_s`` and ``l_s``, whether it reached the cell, and the sums of the bound.
    touched : ndarray of int64, shape (n_cells + 1,)
        Work array.
    record : ndarray of int64, shape (>= n_peaks x largest patch in cells, 2)
        Work array.
    record_value : ndarray of float64, shape (as ``record``)
        Work array.
    grid : ndarray of float64, shape (n_cells, n_grid, 3)
        Work array.
    candidate : ndarray of uint8, shape (n_cells + 1,)
        Written: 1 for a candidate cell, else 0 (0 for the dummy cell).

    Returns
    -------
    int
        The number of candidate cells.
    """
    k = sampling.shape[0]
    n_cells = candidate.shape[0] - 1
    n_grid = zero_tau.shape[0]
    alpha = sampling[0]
    for s in range(k):
        alpha = min(alpha, sampling[s])
    # columns of cellwork: 0 u_s of the study at hand, 1 l_s, 2 whether it reached the cell,
    # 3 N(0) of the positive direction, 4 of the negative one, 5 the sum over the studies
    # reaching the cell of 1 / a_s - 1 / (a_s + c_s M_s^2), 6 A of the positive direction, 7 of
    # the negative one
    # each study's bounds per cell (one study at a time), recorded as (cell, study), (u_s, l_s)
    n_records = 0
    first = 0
    n_peaks = centre.shape[0]
    while first < n_peaks:
        s = study_of[first]
        last = first
        while last < n_peaks and study_of[last] == s:
            last += 1
        n_touched = 0
        for p in range(first, last):
            g = peak_g[p]
            if g == 0.0:
                continue
            c = centre[p]
            base = peak_base[p]
            side = 0 if g > 0.0 else 1
            size = abs(g)
            for m in range(cell_first[c], cell_first[c + 1]):  # no branches
                cell = cell_at[base + cell_id[m]]
                touched[n_touched] = cell
                n_touched += 1 - np.int64(cellwork[cell, 2])
                cellwork[cell, 2] = 1.0
                cellwork[cell, side] = max(cellwork[cell, side], levels[cell_code[m]] * size)
        a = sampling[s]
        cc = constant[s]
        for t in range(n_touched):
            cell = touched[t]
            u = cellwork[cell, 0]
            lo = cellwork[cell, 1]
            cellwork[cell, 0] = 0.0
            cellwork[cell, 1] = 0.0
            cellwork[cell, 2] = 0.0
            if cell == n_cells:
                continue
            m_ = max(u, lo)
            cm2 = cc * (m_ * m_)
            cellwork[cell, 5] += cm2 / (a * (a + cm2))
            if u > 0.0:
                b = screen_b(u, a, cc)
                cellwork[cell, 3] += u / b
                cellwork[cell, 6] = max(cellwork[cell, 6], b)
            if lo > 0.0:
                b = screen_b(lo, a, cc)
                cellwork[cell, 4] += lo / b
                cellwork[cell, 7] = max(cellwork[cell, 7], b)
            record[n_records, 0] = cell
            record[n_records, 1] = s
            record_value[n_records, 0] = u
            record_value[n_records, 1] = lo
            n_records += 1
        first = last
    # at tau2 = 0, and the growth beyond it; cells left open get a row of the grid
    pos2 = z_pos * z_pos
    neg2 = z_neg * z_neg
    room = 1.0 + 1e-6
    n_open = 0
    for cell in range(n_cells):
        pp = cellwork[cell, 3]
        mm = cellwork[cell, 4]
        flag = 0
        if pp > 0.0 or mm > 0.0:
            d0 = zero_tau[0] - cellwork[cell, 5]
            if pp * pp * widen[0] * room >= pos2 * d0 or mm * mm * widen[0] * room >= neg2 * d0:
                flag = 1
            else:
                top = cellwork[cell, 6]
                grow_pos = top * top / (4.0 * alpha * (top - alpha)) if top > 2.0 * alpha else 1.0
                top = cellwork[cell, 7]
                grow_neg = top * top / (4.0 * alpha * (top - alpha)) if top > 2.0 * alpha else 1.0
                if pp * pp * grow_pos * room >= pos2 * d0 or mm * mm * grow_neg * room >= neg2 * d0:
                    flag = 2  # open: the grid decides
        candidate[cell] = flag
        for f in range(3, 8):
            cellwork[cell, f] = 0.0
    for cell in range(n_cells):
        if candidate[cell] == 2:
            touched[cell] = n_open
            for j in range(1, n_grid):
                grid[n_open, j, 0] = 0.0
                grid[n_open, j, 1] = 0.0
                grid[n_open, j, 2] = zero_tau[j]
            n_open += 1
    if n_open > 0:
        for r in range(n_records):
            cell = record[r, 0]
            if candidate[cell] != 2:
                continue
            row = touched[cell]
            s = record[r, 1]
            u = record_value[r, 0]
            lo = record_value[r, 1]
            a = sampling[s]
            b_up = screen_b(u, a, constant[s]) if u > 0.0 else a
            b_lo = screen_b(lo, a, constant[s]) if lo > 0.0 else a
            m_ = max(u, lo)
            b_d = a + constant[s] * (m_ * m_)
            for j in range(1, n_grid):
                t = taus[j]
                grid[row, j, 0] += u / (b_up + t)
                grid[row, j, 1] += lo / (b_lo + t)
                grid[row, j, 2] -= inv_tau[s, j] - 1.0 / (b_d + t)
        for cell in range(n_cells):
            if candidate[cell] != 2:
                continue
            row = touched[cell]
            flag = 0
            for j in range(1, n_grid):
                pp = grid[row, j, 0]
                mm = grid[row, j, 1]
                dj = grid[row, j, 2]
                if pp * pp * widen[j] * room >= pos2 * dj or mm * mm * widen[j] * room >= neg2 * dj:
                    flag = 1
                    break
            candidate[cell] = flag
    candidate[n_cells] = 0
    n_candidates = 0
    for cell in range(n_cells):
        n_candidates += candidate[cell]
    return n_candidates
