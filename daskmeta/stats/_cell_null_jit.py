"""Numba kernels of the cluster-extent nulls cell by cell: the bank null and the isotropic null.

Imported lazily by :mod:`daskmeta.null.cells`; compiled like
:mod:`daskmeta.stats._sparse_null_jit` (single-threaded, IEEE semantics, no fastmath).

A kernel is stored cell by cell: for each coarse cell (a cube of ``CELL^3`` grid voxels) it
reaches, a record of its codes (indexes into a table of kernel values) by place in the cell, a
bit mask of the places it reaches and the smallest code (largest kernel). Each peak has a
*group* of such entries: with the data's anisotropic kernel the group is its *bank centre*,
whose kernel is stored twice, as runs of consecutive voxel-vector positions within a grid plane
(the reference reads these) and cell-major (:func:`build_cells`, one byte per code); with the
isotropic kernel it is the peak's place within its own cell, whose entries hold cell offsets
(:func:`daskmeta.null.cells.relative_cells`, two bytes per code).

One randomization (:func:`cell_null_randomizations`):

1. :func:`~daskmeta.stats._screen_jit.screen_cells` bounds every cell's SDM-Z from each
   study's largest kernel-scaled effect in the cell and flags the cells where a voxel may pass
   a threshold;
2. :func:`cell_lists` lists, for each flagged cell, the peaks that reach it, in peak order, and
   their records are copied in list order (one loop of independent loads, so that many cache
   misses are in flight at once), each bit mask cut to the cell's voxels in the mask;
3. :func:`classify_cell` recreates and pools the flagged cells only: each study's kernels are
   combined into ``T = sum K`` and ``W = sum K^2 g`` (in peak order, as the reference's
   ``bincount`` adds them), turned into DerSimonian-Laird terms relative to a zero effect, and
   each voxel is decided against the two thresholds from the fast z where that decision is
   certified, with the reference arithmetic otherwise (the argument of
   :mod:`daskmeta.null.cluster_extent`, which holds term for term);
4. the passing voxels are labelled (:func:`~daskmeta.stats._sparse_null_jit.largest_listed_component`).

A voxel no kernel reaches has ``z = 0`` exactly; a voxel outside the flagged cells passes
neither threshold (the screen's bound). The loops over entries, and over a cell's places, run
without branches where they can (a missing cell is a dummy cell ``n_cells``; a place a peak
does not reach adds ``0 x K``), so that the compiler vectorizes them.

References
----------
DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Control Clin Trials 7:177-188.
Higham NJ (2002). Accuracy and Stability of Numerical Algorithms, 2nd ed. SIAM, section 4.2.
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._decision_jit import fast_decision, study_sums_z
from daskmeta.stats._pooling_jit import _jit
from daskmeta.stats._screen_jit import screen_cells
from daskmeta.stats._sparse_null_jit import largest_listed_component

#: Position of the set bit of a power of two ``x < 2^32`` from ``((x * 0x077CB531) mod 2^32) >> 27``
#: (a de Bruijn sequence; Leiserson, Prokop and Randall 1998).
_DE_BRUIJN = np.array([0, 1, 28, 2, 29, 14, 24, 3, 30, 22, 20, 15, 25, 17, 4, 8, 31, 27, 13, 23, 21,
                       19, 16, 7, 26, 12, 18, 6, 11, 5, 10, 9], dtype=np.int64)


@_jit
def lowest_bit(bits):
    """Index of the lowest set bit of a nonzero uint32 ``bits``."""
    low = bits & (~bits + np.uint32(1))
    return _DE_BRUIJN[((np.uint64(low) * np.uint64(0x077CB531)) & np.uint64(0xFFFFFFFF)) >> np.uint64(27)]


@_jit
def run_kernel(lo, hi, base, run_voxel, run_length, run_offset, code, levels, v):
    """The kernel at voxel ``v`` of runs ``lo..hi-1`` of one centre (entries from ``base``; 0 off them)."""
    if hi <= lo or v < run_voxel[lo]:
        return 0.0
    while hi - lo > 1:  # the last run starting at or before v
        mid = (lo + hi) >> 1
        if run_voxel[mid] <= v:
            lo = mid
        else:
            hi = mid
    offset = v - run_voxel[lo]
    if offset >= run_length[lo]:
        return 0.0
    return levels[code[base + run_offset[lo] + offset]]


@_jit
def patch_kernel(start, run_start, run_voxel, run_length, run_offset, code, levels, centre, v):
    """The kernel of bank centre ``centre`` at voxel ``v`` (0 off its patch; binary search of its runs)."""
    return run_kernel(run_start[centre], run_start[centre + 1], start[centre], run_voxel, run_length,
                      run_offset, code, levels, v)


@_jit
def build_cells(start, run_start, run_voxel, run_length, code, cell_of, cell_local, n_cells):
    """The bank's cell-major layout (see the module docstring).

    Parameters
    ----------
    start, run_start, run_voxel, run_length, code
        The bank's runs (:class:`~daskmeta.null.kernel_bank.KernelBank`).
    cell_of, cell_local : ndarray of int64, shape (n_voxels,)
        Each voxel's cell and its bit within the cell (below 28).
    n_cells : int

    Returns
    -------
    (cell_first, cell_id, cell_code, cell_record)
        Centre ``c`` reaches the cells of entries ``cell_first[c]:cell_first[c + 1]`` (in order
        of first reach); entry ``m`` is cell ``cell_id[m]``, the smallest code of its voxels is
        ``cell_code[m]``, and its 32-byte record holds the code of each bit ``b`` in byte ``b``
        (0 where the centre does not reach) and the bit mask of the voxels it reaches in bytes
        28-31 (a little-endian uint32): one cache line or less per entry.
    """
    n_centres = start.shape[0] - 1
    seen = np.full(n_cells, -1, np.int64)
    count = 0
    for c in range(n_centres):  # pass 1: how many cells each centre reaches
        for r in range(run_start[c], run_start[c + 1]):
            v0 = run_voxel[r]
            for q in range(run_length[r]):
                cell = cell_of[v0 + q]
                if seen[cell] != c:
                    seen[cell] = c
                    count += 1
    cell_first = np.zeros(n_centres + 1, np.int64)
    cell_id = np.empty(count, np.int32)
    cell_code = np.empty(count, np.uint8)
    cell_record = np.zeros((count, 32), np.uint8)
    seen[:] = -1
    n = 0
    for c in range(n_centres):  # pass 2: cells, codes, masks and smallest codes
        e = start[c]
        for r in range(run_start[c], run_start[c + 1]):
            v0 = run_voxel[r]
            for q in range(run_length[r]):
                v = v0 + q
                cell = cell_of[v]
                level = code[e]
                e += 1
                m = seen[cell]
                if m < cell_first[c]:  # first reach of this cell by centre c
                    m = n
                    seen[cell] = m
                    cell_id[m] = cell
                    cell_code[m] = level
                    n += 1
                elif level < cell_code[m]:
                    cell_code[m] = level
                b = cell_local[v]
                cell_record[m, b] = level
                cell_record[m, 28 + b // 8] |= np.uint8(1 << (b % 8))
        cell_first[c + 1] = n
    return cell_first, cell_id, cell_code, cell_record


@_jit
def cell_lists(centre, peak_base, cell_at, cell_first, cell_id, candidate, list_first, list_peak,
               list_entry, list_cell, scratch):
    """For each candidate cell, the peaks that reach it (increasing), their entries and cells.

    Peak ``p`` reaches cell ``cell_at[peak_base[p] + cell_id[m]]`` for each entry ``m`` of its
    group ``centre[p]`` (:func:`cell_null_randomizations`; ``candidate`` has ``n_cells + 1``
    entries, the last the dummy cell's 0). Writes ``list_first`` (shape ``(n_cells + 1,)``);
    cell ``c``'s peaks are ``list_peak[list_first[c]:list_first[c + 1]]`` with entries
    ``list_entry[...]`` (and ``list_cell[...] = c``). One pass over the peaks' entries collects
    the candidates' (peak, entry, cell) triples in ``scratch`` (shape ``(len(list_peak) + 1,
    3)``); a stable counting sort by cell orders them.
    """
    n_cells = candidate.shape[0] - 1
    n = 0
    for p in range(centre.shape[0]):
        base = peak_base[p]
        for m in range(cell_first[centre[p]], cell_first[centre[p] + 1]):  # no branches
            cell = cell_at[base + cell_id[m]]
            scratch[n, 0] = p
            scratch[n, 1] = m
            scratch[n, 2] = cell
            n += candidate[cell]
    for c in range(n_cells + 1):
        list_first[c] = 0
    for i in range(n):
        list_first[scratch[i, 2] + 1] += 1
    for c in range(n_cells):
        list_first[c + 1] += list_first[c]
    for i in range(n):  # increasing i: each list in peak order
        cell = scratch[i, 2]
        slot = list_first[cell]
        list_peak[slot] = scratch[i, 0]
        list_entry[slot] = scratch[i, 1]
        list_cell[slot] = cell
        list_first[cell] = slot + 1
    for c in range(n_cells, 0, -1):  # restore the starts
        list_first[c] = list_first[c - 1]
    list_first[0] = 0


@_jit
def cell_voxel_z(b, lo, hi, list_peak, peak_g, study_of, codes, masks, levels, sampling, constant, y,
                 tot, wei):
    """SDM-Z at bit ``b`` of a cell from the peaks ``lo..hi-1`` of its list, with the reference's
    arithmetic (:func:`~daskmeta.stats._decision_jit.study_sums_z`; sums in peak order).

    ``codes[i]`` are the codes of list position ``i``'s record by bit (:func:`build_cells`) and
    ``masks[i]`` the bit mask of the voxels it reaches."""
    for s in range(sampling.shape[0]):
        tot[s] = 0.0
        wei[s] = 0.0
    for i in range(lo, hi):
        if not (masks[i] >> np.uint32(b)) & np.uint32(1):
            continue
        p = list_peak[i]
        value = levels[codes[i, b]]
        tot[study_of[p]] += value
        wei[study_of[p]] += value * value * peak_g[p]
    return study_sums_z(tot, wei, sampling, constant, y)


@_jit
def place_terms(total, weighted, sum_dw, sum_wy, sum_wy2, a, cc, rr):
    """Add one study's terms relative to a zero effect at every place of a cell, from its
    ``T = total`` and ``W = weighted`` (zeroed on return): ``w - w_0 = -(c/a) W^2 / D``,
    ``w y = T W / D``, ``w y^2 = W^2 / D``, ``D = a T^2 + c W^2``; a place the study does not
    reach (``T = W = 0``) adds exact zeros. A loop of its own, free of branches, so that the
    compiler vectorizes its divisions."""
    for b in range(total.shape[0]):
        t = total[b]
        w_ = weighted[b]
        w2 = w_ * w_
        d = a * (t * t) + cc * w2
        inv = 1.0 / (d if t > 0.0 else 1.0)
        x = w2 * inv
        sum_dw[b] -= rr * x
        sum_wy[b] += (t * w_) * inv
        sum_wy2[b] += x
        total[b] = 0.0
        weighted[b] = 0.0


@_jit
def place_decisions(zero_sum, sum_dw, sum_wy, sum_wy2, k, tol, z_pos, z_neg, z, margin, unsure):
    """:func:`~daskmeta.stats._decision_jit.fast_decision` at every place of a cell (the same
    expressions, vectorized), into ``z``, ``margin`` and ``unsure``; the sums are zeroed."""
    for b in range(sum_dw.shape[0]):
        z[b], margin[b], unsure[b] = fast_decision(zero_sum, sum_dw[b], sum_wy[b], sum_wy2[b], k,
                                                   tol, z_pos, z_neg)
        sum_dw[b] = 0.0
        sum_wy[b] = 0.0
        sum_wy2[b] = 0.0


@_jit
def classify_cell(cell, lo, hi, list_peak, peak_g, study_of, sampling, constant, ratio, zero_sum,
                  z_pos, z_neg, tol, codes, masks, levels, cell_voxel, kernel, total, weighted,
                  sum_dw, sum_wy, sum_wy2, fast_z, margin, unsure, y, tot, wei, pos, n_pos, neg,
                  n_neg, best_pos, best_neg):
    """Recreate, pool and decide the voxels of one candidate cell.

    The peaks ``list_peak[lo:hi]`` (increasing, so study after study) reach the cell, with
    records ``codes[lo:hi]``/``masks[lo:hi]`` (:func:`cell_voxel_z`). For each study, every
    place of the cell gathers ``T = sum K`` and ``W = sum K^2 g`` over the study's peaks in peak
    order (a place a peak does not reach adds ``0 x K``, exactly 0), then adds its DerSimonian-
    Laird terms relative to a zero effect, ``w - w_0 = -(c/a) W^2 / D``, ``w y = T W / D``,
    ``w y^2 = W^2 / D`` with ``D = a T^2 + c W^2`` (one division; a place the study does not
    reach has ``T = W = 0`` and adds exact zeros). The loops run over all ``CELL^3`` places
    without branches, which vectorizes them. Each voxel's ``z`` and one-pass Q test come from
    ``sum w = sum_s w_0,s + sum (w - w_0)`` and the other sums; where ``z`` lies beyond its error
    bound from both thresholds and ``tau2 = 0`` is certain the fast decision stands, otherwise
    :func:`cell_voxel_z` decides. Passing voxels are appended to ``pos``/``neg``.

    The local work arrays (``kernel``, ``total``, ``weighted``, ``sum_*``, ``fast_z``,
    ``margin``, ``unsure``: one entry per place of a cell); ``total``, ``weighted`` and
    ``sum_*`` are zero on entry and left zero.

    ``best_pos``/``best_neg`` are the largest and smallest exact z so far among passing voxels
    (the thresholds when none): a passing voxel whose fast z may exceed them (beyond its error
    bound) gets its exact z.

    Returns
    -------
    (int, int, int, float, float)
        The new ``n_pos`` and ``n_neg``, the number of voxels whose z came from
        :func:`cell_voxel_z`, and the new ``best_pos`` and ``best_neg``.
    """
    k = sampling.shape[0]
    width = total.shape[0]
    reached = np.uint32(0)
    first = lo
    while first < hi:
        s = study_of[list_peak[first]]
        last = first
        while last < hi and study_of[list_peak[last]] == s:
            last += 1
        for i in range(first, last):
            g = peak_g[list_peak[i]]
            bits = masks[i]
            reached |= bits
            for b in range(width):  # the table lookups apart: the loop below vectorizes
                kernel[b] = levels[codes[i, b]]
            for b in range(width):
                value = kernel[b] * np.float64((bits >> np.uint32(b)) & np.uint32(1))
                total[b] += value
                weighted[b] += value * value * g
        place_terms(total, weighted, sum_dw, sum_wy, sum_wy2, sampling[s], constant[s], ratio[s])
        first = last
    place_decisions(zero_sum, sum_dw, sum_wy, sum_wy2, k, tol, z_pos, z_neg, fast_z, margin, unsure)
    n_exact = 0
    while reached:
        b = lowest_bit(reached)
        reached &= reached - np.uint32(1)
        z = fast_z[b]
        margin_z = margin[b]
        if unsure[b]:
            z = cell_voxel_z(b, lo, hi, list_peak, peak_g, study_of, codes, masks, levels,
                             sampling, constant, y, tot, wei)
            n_exact += 1
        if z >= z_pos:
            pos[n_pos] = cell_voxel[cell, b]
            n_pos += 1
            if unsure[b]:
                best_pos = max(best_pos, z)
            elif z + margin_z > best_pos:  # may be the largest: its exact z
                best_pos = max(best_pos, cell_voxel_z(b, lo, hi, list_peak, peak_g, study_of, codes,
                                                      masks, levels, sampling, constant, y, tot, wei))
                n_exact += 1
        if z <= z_neg:
            neg[n_neg] = cell_voxel[cell, b]
            n_neg += 1
            if unsure[b]:
                best_neg = min(best_neg, z)
            elif z - margin_z < best_neg:
                best_neg = min(best_neg, cell_voxel_z(b, lo, hi, list_peak, peak_g, study_of, codes,
                                                      masks, levels, sampling, constant, y, tot, wei))
                n_exact += 1
    return n_pos, n_neg, n_exact, best_pos, best_neg


@_jit
def cell_null_randomizations(centre, peak_base, cell_at, cell_bits, peak_g, study_of, sampling,
                             constant, z_pos, z_neg, tol, levels, cell_first, cell_id, cell_code,
                             record64, cell_voxel, inv_tau, zero_tau, taus, widen, screen,
                             padded_index, padded_lookup, offsets, gathered, codes, masks, largest,
                             extremes, counts):
    """Largest clusters of several randomizations of a cell null (see the module docstring).

    Each peak belongs to a *group* of entries, one per cell it reaches, with records of the
    kernel's codes by place in the cell: the bank null's group is the peak's bank centre (entries
    of :func:`build_cells`, cells numbered directly), the isotropic null's the peak's place in
    its own cell (entries of :func:`~daskmeta.null.cells.relative_cells`, cells as offsets on a
    padded grid of cells from the peak's cell). Peak ``p`` of randomization ``b`` reaches, for
    each entry ``m`` of group ``centre[b, p]``, cell ``cell_at[peak_base[b, p] + cell_id[m]]``
    (none where it is ``n_cells``), at the places ``record``'s bit mask and ``cell_bits[cell]`` share.

    Parameters
    ----------
    centre, peak_base : ndarray of int64, shape (n_randomizations, n_peaks)
        Each randomization's group and base of every peak, peaks study after study.
    cell_at : ndarray of int64
        Cell of each base + offset (``n_cells``: none).
    cell_bits : ndarray of uint32, shape (n_cells,)
        The places of each cell in the mask.
    peak_g : ndarray of float64, shape (n_peaks,)
    study_of : ndarray of int64, shape (n_peaks,)
        Non-decreasing.
    sampling, constant : ndarray of float64, shape (n_studies,)
        ``a > 0`` and ``c >= 0`` of each study.
    z_pos, z_neg : float
        The thresholds (``z_neg < 0 < z_pos``).
    tol : float
        Relative factor of the error bounds (``1e-12 (k + 4)``).
    levels : ndarray of float64
        Kernel of each code.
    cell_first, cell_id, cell_code
        Each group's entries, their cells (offsets) and smallest codes.
    record64 : ndarray of uint64, shape (n_entries, n_words)
        Each entry's record: its codes by place, and its bit mask of places in the record's
        last 32 bits.
    cell_voxel : ndarray of int64, shape (n_cells, CELL^3)
        Voxel-vector position of each bit of each cell (-1 outside the mask).
    inv_tau, zero_tau, taus, widen
        The screen's grid (:func:`screen_cells`).
    screen : bool
        False: every cell is a candidate (the computation without the screen, for checks).
    padded_index, padded_lookup, offsets
        The mask's 26-neighbourhood (:class:`~daskmeta.null.cluster_extent.Neighbourhood`).
    gathered : ndarray of uint64, shape (>= n_peaks x most entries of a group, n_words)
        Work array: the candidate cells' records in list order; ``codes`` is a view of it by
        code and ``masks`` its column of bit masks.
    codes, masks : ndarray
        Views of ``gathered``.
    largest : ndarray of int64, shape (2, n_randomizations)
        The largest positive and negative cluster of each randomization (written).
    extremes : ndarray of float64, shape (2, n_randomizations)
        Each randomization's largest z, or ``z_pos`` if larger, and its smallest z, or
        ``z_neg`` if smaller (written; the reference arithmetic's values).
    counts : ndarray of int64, shape (2, n_randomizations)
        Candidate cells and voxels decided by the reference arithmetic, per randomization
        (written).
    """
    n_voxels = padded_index.shape[0]
    n_cells, width = cell_voxel.shape
    k = sampling.shape[0]
    n_words = record64.shape[1]
    ratio = np.empty(k)
    zero_sum = 0.0
    for s in range(k):
        ratio[s] = constant[s] / sampling[s]
        zero_sum += 1.0 / sampling[s]
    candidate = np.ones(n_cells + 1, np.uint8)
    candidate[n_cells] = 0
    longest = gathered.shape[0]
    cellwork = np.zeros((n_cells + 1, 8))
    touched = np.empty(n_cells + 1, np.int64)
    record = np.empty((longest, 2), np.int64)
    record_value = np.empty((longest, 2))
    grid = np.empty((n_cells, zero_tau.shape[0], 3))
    list_first = np.empty(n_cells + 1, np.int64)
    list_peak = np.empty(longest, np.int64)
    list_entry = np.empty(longest, np.int64)
    list_cell = np.empty(longest, np.int64)
    scratch = np.empty((longest + 1, 3), np.int64)
    kernel = np.empty(width)
    total = np.zeros(width)
    weighted = np.zeros(width)
    sum_dw = np.zeros(width)
    sum_wy = np.zeros(width)
    sum_wy2 = np.zeros(width)
    fast_z = np.empty(width)
    margin = np.empty(width)
    unsure = np.empty(width, np.bool_)
    y = np.empty(k)
    tot = np.empty(k)
    wei = np.empty(k)
    pos = np.empty(n_voxels, np.int64)
    neg = np.empty(n_voxels, np.int64)
    slot = np.full(n_voxels, -1, np.int64)
    parent = np.empty(n_voxels, np.int64)
    size = np.empty(n_voxels, np.int64)
    for b in range(centre.shape[0]):
        if screen:
            counts[0, b] = screen_cells(centre[b], peak_base[b], cell_at, peak_g, study_of, sampling,
                                        constant, z_pos, z_neg, cell_first, cell_id, cell_code,
                                        levels, inv_tau, zero_tau, taus, widen, cellwork, touched,
                                        record, record_value, grid, candidate)
        else:
            counts[0, b] = n_cells
        cell_lists(centre[b], peak_base[b], cell_at, cell_first, cell_id, candidate, list_first,
                   list_peak, list_entry, list_cell, scratch)
        for i in range(list_first[n_cells]):  # independent loads: many cache misses in flight
            m = list_entry[i]
            for w in range(n_words):
                gathered[i, w] = record64[m, w]
            masks[i] &= cell_bits[list_cell[i]]
        n_pos = 0
        n_neg = 0
        n_exact = 0
        best_pos = z_pos
        best_neg = z_neg
        for cell in range(n_cells):
            lo = list_first[cell]
            hi = list_first[cell + 1]
            if hi == lo:
                continue
            n_pos, n_neg, done, best_pos, best_neg = classify_cell(
                cell, lo, hi, list_peak, peak_g, study_of, sampling, constant, ratio, zero_sum,
                z_pos, z_neg, tol, codes, masks, levels, cell_voxel, kernel, total, weighted,
                sum_dw, sum_wy, sum_wy2, fast_z, margin, unsure, y, tot, wei, pos, n_pos, neg,
                n_neg, best_pos, best_neg)
            n_exact += done
        counts[1, b] = n_exact
        extremes[0, b] = best_pos
        extremes[1, b] = best_neg
        pos[:n_pos].sort()  # labelling visits voxels in increasing order
        neg[:n_neg].sort()
        largest[0, b] = largest_listed_component(pos, n_pos, padded_index, padded_lookup, offsets,
                                                 slot, parent, size)
        largest[1, b] = largest_listed_component(neg, n_neg, padded_index, padded_lookup, offsets,
                                                 slot, parent, size)
