"""Numba kernels of the sparse cluster-extent null: certified threshold decisions, labelling.

Imported lazily by :mod:`daskmeta.null.cluster_extent`; compiled like
:mod:`daskmeta.stats._paste_jit` (single-threaded, IEEE semantics, no fastmath).

**Certified decisions.** :func:`classify_randomization` finds the voxels that pass each
threshold without the exact z of every voxel: it pastes into the mask's span layout (each grid
row's run from its first to its last mask voxel, so a kernel row is one contiguous run, pasted
in whole vectors), sums each study's terms relative to a zero effect only where its kernels
reach (one division per study and voxel reached), and decides each voxel from the fast z where
it lies beyond a bound on its rounding error from both thresholds and ``tau2 = 0`` is certain;
the other voxels (about 0.3 %) get the reference arithmetic, operation for operation
(:func:`exact_voxel_z`). :func:`largest_listed_component` then labels only the passing voxels.
The argument is in :mod:`daskmeta.null.cluster_extent`.

References
----------
DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Control Clin Trials 7:177-188.
Tarjan RE (1975). Efficiency of a good but not linear set union algorithm. J ACM 22:215-225
(union-find).
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._decision_jit import fast_decision, study_sums_z
from daskmeta.stats._paste_jit import _root
from daskmeta.stats._pooling_jit import _jit

#: Fast-pass codes of a span element (bits): passes ``z >= z_pos``, passes ``z <= z_neg``,
#: decision not certified (the voxel is recomputed exactly).
CODE_POS = 1
CODE_NEG = 2
CODE_EXACT = 4
#: Elements per vectorized block of the per-study terms.
CHUNK_TERMS = 16
#: Spare elements after each row of the span layout: a pasted run overshoots the row's last
#: mask voxel by at most 7 elements, a block of terms the run by at most CHUNK_TERMS - 1.
ROW_SPARE = 32


@_jit
def exact_voxel_z(i, j, kk, near, n_near, peak_ijk, peak_g, study_of, table, reach, sampling,
                  constant, y, tot, wei):
    """SDM-Z of one voxel with the arithmetic of :func:`relocated_z` (the reference), exactly.

    Each study's effect is ``sum K^2 g / sum K`` over its peaks in peak order (``0`` where none
    reaches), then the four DerSimonian-Laird sums in study order, :func:`finish`'s one-pass Q
    test and, where it fails, :func:`exact_z`: the operations :func:`relocated_z` performs at
    this voxel, in the same order, so the same double (a study no peak reaches adds
    ``w = 1 / (a + c 0^2)`` to ``sum w`` and ``w^2`` to ``sum w^2``, and ``+0.0`` to the two
    other sums, which leaves them unchanged).

    Parameters
    ----------
    i, j, kk : int
        The voxel on the grid.
    near : ndarray of int64
        ``near[:n_near]``: every peak within ``reach`` planes of ``i``, in peak order.
    n_near : int
    peak_ijk, peak_g, study_of : ndarray
        All peaks, their effects and the study of each.
    table : ndarray of float64, shape (2 reach + 1,) * 3
        The kernel at each offset (0 off its support).
    reach : int
    sampling, constant : ndarray of float64, shape (n_studies,)
    y, tot, wei : ndarray of float64, shape (n_studies,)
        Work arrays (``y`` holds the effects on return).

    Returns
    -------
    float
    """
    k = sampling.shape[0]
    for s in range(k):
        tot[s] = 0.0
        wei[s] = 0.0
    for n in range(n_near):
        p = near[n]
        dj = j - peak_ijk[p, 1]
        dk = kk - peak_ijk[p, 2]
        if dj < -reach or dj > reach or dk < -reach or dk > reach:
            continue
        kernel = table[i - peak_ijk[p, 0] + reach, dj + reach, dk + reach]
        if kernel > 0.0:
            s = study_of[p]
            tot[s] += kernel
            wei[s] += kernel * kernel * peak_g[p]
    return study_sums_z(tot, wei, sampling, constant, y)


@_jit
def classify_randomization(peak_ijk, peak_g, study_of, sampling, constant, ratio, zero_sum, z_pos,
                           z_neg, tol, row_info, plane_size, half, reach_j, tab1, table, reach,
                           before, near, row_near, total, weighted, sums, code, row_z, row_lo,
                           row_hi, y, tot, wei, pos, neg, extremes):
    """The voxels of one randomization whose SDM-Z passes ``z >= z_pos`` / ``z <= z_neg``.

    Exactly the voxels at which :func:`relocated_z` of the same peaks passes each threshold
    (see :mod:`daskmeta.null.cluster_extent` for the argument), found plane by plane:

    1. every study's peaks within reach of the plane are pasted into the plane's *span layout*
       (each grid row's mask voxels lie between its first and last mask voxel ``kf..kl``,
       stored contiguously and followed by :data:`ROW_SPARE` spare elements): ``T = sum K``
       and ``W = sum K^2 g``, a kernel row clipped to ``kf..kl`` being one contiguous run,
       pasted in whole vectors of 8 (the kernel table is zero-padded; what lands in the spare
       elements is never read);
    2. where the study's kernels reach, ``D = a T^2 + c W^2`` gives its terms relative to a
       zero effect with one division: ``w - w_0 = -(c/a) W^2 / D``, ``w y = T W / D``,
       ``w y^2 = W^2 / D``; the plane's sums add only these (a study that does not reach an
       element adds nothing);
    3. ``sum w = sum_s w_0,s + sum (w - w_0)``, ``z = sum w y / sum w * sqrt(sum w)``, and the
       one-pass Q test of :func:`finish` are evaluated; where ``z`` is farther than its error
       bound from both thresholds and the Q test certainly passes (``tau2 = 0``), the fast
       decision is the reference's; every other mask voxel (the Q test failed or uncertain:
       ``tau2 > 0`` possible; or ``z`` within its bound of a threshold) is recomputed by
       :func:`exact_voxel_z` from the peaks that reach its row.

    Parameters
    ----------
    peak_ijk : ndarray of int64, shape (n_peaks, 3)
        The relocated peaks, study after study.
    peak_g : ndarray of float64, shape (n_peaks,)
    study_of : ndarray of int64, shape (n_peaks,)
        The study of each peak (non-decreasing).
    sampling, constant : ndarray of float64, shape (n_studies,)
        ``a`` and ``c`` of each study (``a > 0``, ``c >= 0``).
    ratio : ndarray of float64, shape (n_studies,)
        ``c / a``.
    zero_sum : float
        ``sum_s 1 / a_s``: ``sum w`` of a voxel no kernel reaches.
    z_pos, z_neg : float
        The thresholds.
    tol : float
        Relative factor of the error bounds (``1e-12 (k + 4)``, over 1000 times the rounding).
    row_info : ndarray of int64, shape (nx * ny * 3,)
        Of each grid row ``(i, j)``, at ``3 (i ny + j)``: its first element in its plane's
        layout (-1: no mask voxel), the ``k`` of its first and of its last mask voxel.
    plane_size : ndarray of int64, shape (nx,)
        Elements of each plane's layout.
    half : ndarray of int64, shape ((2 reach + 1)^2,)
        Half length of the kernel's support along ``k`` in each offset row ``(di, dj)`` (-1:
        none), raveled.
    reach_j : ndarray of int64, shape (2 reach + 1,)
        Largest ``|dj|`` with a support in each offset plane ``di`` (-1: none).
    tab1 : ndarray of float64, shape ((2 reach + 1)^2 L,)
        ``K`` of each offset row ``(di, dj)`` from offset ``-reach`` (``L`` values, zero
        beyond ``+reach``).
    table : ndarray of float64, shape (2 reach + 1,) * 3
        ``K`` at each offset (for :func:`exact_voxel_z`).
    reach : int
    before : ndarray of int64, shape (nx, ny, nz + 1)
        Mask voxels preceding each grid voxel (:class:`~daskmeta.stats.peak_kernel.PasteRows`).
    near, row_near : ndarray of int64, shape (n_peaks,)
        Work arrays.
    total, weighted : ndarray of float64, shape (>= max plane_size,)
        Work arrays, all zero on entry (left all zero).
    sums : ndarray of float64, shape (3, >= max plane_size)
        Work array, all zero on entry (left all zero).
    code : ndarray of int8, shape (>= nz,)
        Work array.
    row_z : ndarray of float64, shape (2, >= nz)
        Work array (each voxel's fast z and its error bound in the row at hand).
    row_lo, row_hi : ndarray of int64, shape (ny,)
        Work arrays, ``row_lo`` all ``total.shape[0]`` and ``row_hi`` all 0 on entry (left so).
    y, tot, wei : ndarray of float64, shape (n_studies,)
        Work arrays.
    pos, neg : ndarray of int64, shape (n_voxels,)
        The passing voxels, in increasing order, are written to ``pos[:n_pos]`` and
        ``neg[:n_neg]``.
    extremes : ndarray of float64, shape (2,)
        Written: the largest z, or ``z_pos`` if larger, and the smallest z, or ``z_neg`` if
        smaller (the reference arithmetic's values: a passing voxel whose fast z may exceed the
        largest so far, beyond its error bound, gets its exact z).

    Returns
    -------
    (int, int, int)
        ``n_pos``, ``n_neg`` and the number of voxels recomputed exactly.
    """
    best_pos = z_pos
    best_neg = z_neg
    nx = plane_size.shape[0]
    ny = row_info.shape[0] // (3 * nx)
    k = sampling.shape[0]
    n_peaks = peak_ijk.shape[0]
    side = 2 * reach + 1
    length = tab1.shape[0] // (side * side)
    big = total.shape[0]
    sum_dw = sums[0]
    sum_wy = sums[1]
    sum_wy2 = sums[2]
    n_pos = 0
    n_neg = 0
    n_exact = 0
    for i in range(nx):
        if plane_size[i] == 0:
            continue
        n_near = 0
        for p in range(n_peaks):
            if abs(peak_ijk[p, 0] - i) <= reach:
                near[n_near] = p
                n_near += 1
        # 1-2: paste each study, then add its terms row by row
        n = 0
        while n < n_near:
            s = study_of[near[n]]
            j_lo = ny
            j_hi = -1
            while n < n_near and study_of[near[n]] == s:
                p = near[n]
                n += 1
                pj = peak_ijk[p, 1]
                pk = peak_ijk[p, 2]
                g = peak_g[p]
                di = i - peak_ijk[p, 0] + reach
                rj = reach_j[di]
                j0 = max(pj - rj, 0)
                j1 = min(pj + rj + 1, ny)
                j_lo = min(j_lo, j0)
                j_hi = max(j_hi, j1 - 1)
                for j in range(j0, j1):
                    base = 3 * (i * ny + j)
                    start = row_info[base]
                    dj = j - pj + reach
                    h = half[di * side + dj]
                    kf = row_info[base + 1]
                    k0 = max(pk - h, kf)
                    k1 = min(pk + h, row_info[base + 2])
                    if start < 0 or k0 > k1:
                        continue
                    e = start + k0 - kf
                    o = (di * side + dj) * length + k0 - pk + reach
                    m = ((k1 - k0) // 8 + 1) * 8
                    if e < 0 or o < 0:
                        continue  # never: tells the compiler the indices below are >= 0
                    for q in range(m):
                        kernel = tab1[o + q]
                        total[e + q] += kernel
                        weighted[e + q] += kernel * kernel * g
                    row_lo[j] = min(row_lo[j], e)
                    row_hi[j] = max(row_hi[j], e + m)
            a = sampling[s]
            c = constant[s]
            r = ratio[s]
            for j in range(j_lo, j_hi + 1):
                lo = row_lo[j]
                hi = row_hi[j]
                if hi <= lo:
                    continue
                row_lo[j] = big
                row_hi[j] = 0
                # terms in blocks of CHUNK_TERMS (vectorized whole, no scalar remainder); past
                # the pasted runs T = W = 0 and the terms are zeros; blocks end in the row's
                # spare elements, whose sums are never read
                for block in range(lo, hi, CHUNK_TERMS):
                    if block < 0:
                        continue  # never (as above)
                    for q in range(CHUNK_TERMS):
                        t = total[block + q]
                        w_ = weighted[block + q]
                        w2 = w_ * w_
                        inv = 1.0 / (a * (t * t) + c * w2 + (1.0 if t == 0.0 else 0.0))
                        x = w2 * inv
                        sum_dw[block + q] -= r * x
                        sum_wy[block + q] += (t * w_) * inv
                        sum_wy2[block + q] += x
                        total[block + q] = 0.0
                        weighted[block + q] = 0.0
        # 3: decide each mask voxel of the plane, row by row
        for j in range(ny):
            base = 3 * (i * ny + j)
            first = row_info[base]
            if first < 0:
                continue
            kf = row_info[base + 1]
            span = row_info[base + 2] - kf + 1
            flagged = 0
            for q in range(span):
                z, margin_z, unsure = fast_decision(zero_sum, sum_dw[first + q], sum_wy[first + q],
                                                    sum_wy2[first + q], k, tol, z_pos, z_neg)
                value = ((CODE_EXACT if unsure else 0) | (CODE_POS if z >= z_pos else 0)
                         | (CODE_NEG if z <= z_neg else 0))
                code[q] = value
                row_z[0, q] = z
                row_z[1, q] = margin_z
                flagged |= value
            for q in range(span + ROW_SPARE):
                sum_dw[first + q] = 0.0
                sum_wy[first + q] = 0.0
                sum_wy2[first + q] = 0.0
            if flagged == 0:
                continue
            n_row = -1  # the peaks whose kernels reach row j, listed when first needed
            for q in range(span):
                value = code[q]
                if value == 0:
                    continue
                v = before[i, j, kf + q]
                if before[i, j, kf + q + 1] == v:
                    continue  # inside the row's span, off the mask
                z = row_z[0, q]
                # the exact z where the decision is uncertain, or where a passing voxel's fast z
                # may exceed the extreme so far
                exact = (value & CODE_EXACT) != 0 or (
                    (value & CODE_POS) != 0 and z + row_z[1, q] > best_pos) or (
                    (value & CODE_NEG) != 0 and z - row_z[1, q] < best_neg)
                if exact:
                    if n_row < 0:
                        n_row = 0
                        for nn in range(n_near):
                            p = near[nn]
                            if abs(j - peak_ijk[p, 1]) <= reach_j[i - peak_ijk[p, 0] + reach]:
                                row_near[n_row] = p
                                n_row += 1
                    z = exact_voxel_z(i, j, kf + q, row_near, n_row, peak_ijk, peak_g, study_of,
                                      table, reach, sampling, constant, y, tot, wei)
                    if value & CODE_EXACT:
                        value = (CODE_POS if z >= z_pos else 0) | (CODE_NEG if z <= z_neg else 0)
                    n_exact += 1
                if value & CODE_POS:
                    pos[n_pos] = v
                    n_pos += 1
                    if exact:
                        best_pos = max(best_pos, z)
                if value & CODE_NEG:
                    neg[n_neg] = v
                    n_neg += 1
                    if exact:
                        best_neg = min(best_neg, z)
    extremes[0] = best_pos
    extremes[1] = best_neg
    return n_pos, n_neg, n_exact


@_jit
def largest_listed_component(voxels, n, padded_index, padded_lookup, offsets, slot, parent, size):
    """Size of the largest 26-connected component of the listed mask voxels (0 if none).

    :func:`largest_component` on the candidate set only: ``voxels[:n]`` (increasing) are the
    selected voxels; union-find over candidate numbers.

    Parameters
    ----------
    voxels : ndarray of int64
        Selected voxel-vector positions, increasing, in ``voxels[:n]``.
    n : int
    padded_index, padded_lookup, offsets
        As in :func:`largest_component`.
    slot : ndarray of int64, shape (n_voxels,)
        Work array, all -1 on entry (left so).
    parent, size : ndarray of int64, shape (>= n,)
        Work arrays.
    """
    for c in range(n):
        v = voxels[c]
        slot[v] = c
        parent[c] = c
        size[c] = 1
        centre = padded_index[v]
        for o in range(offsets.shape[0]):
            u = padded_lookup[centre + offsets[o]]
            if u < 0:
                continue
            other = slot[u]
            if other < 0:
                continue
            a = _root(parent, other)
            b = _root(parent, c)
            if a == b:
                continue
            if a > b:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
    best = 0
    for c in range(n):
        slot[voxels[c]] = -1
        if parent[c] == c and size[c] > best:
            best = size[c]
    return best


@_jit
def cluster_null_randomizations(peak_ijk, peak_g, study_of, sampling, constant, z_pos, z_neg, tol,
                                row_info, plane_size, half, reach_j, tab1, table, reach, before,
                                padded_index, padded_lookup, offsets, largest, extremes, n_exact):
    """Largest clusters of several randomizations (:func:`classify_randomization`, then
    :func:`largest_listed_component` on each direction's voxels).

    Parameters
    ----------
    peak_ijk : ndarray of int64, shape (n_randomizations, n_peaks, 3)
        Each randomization's relocated peaks.
    peak_g, study_of, sampling, constant, z_pos, z_neg, tol
        As in :func:`classify_randomization`.
    row_info, plane_size, half, reach_j, tab1, table, reach, before
        The span layout and the kernel, as in :func:`classify_randomization`.
    padded_index, padded_lookup, offsets
        The 26-neighbourhood, as in :func:`largest_component`.
    largest : ndarray of int64, shape (2, n_randomizations)
        The largest positive and negative cluster of each randomization (written).
    extremes : ndarray of float64, shape (2, n_randomizations)
        Each randomization's clipped extremes (:func:`classify_randomization`; written).
    n_exact : ndarray of int64, shape (n_randomizations,)
        The voxels each randomization recomputed exactly (written).
    """
    n_voxels = padded_index.shape[0]
    k = sampling.shape[0]
    width = 1
    for i in range(plane_size.shape[0]):
        width = max(width, plane_size[i])
    n_peaks = peak_ijk.shape[1]
    ratio = np.empty(k)
    zero_sum = 0.0
    for s in range(k):
        ratio[s] = constant[s] / sampling[s]
        zero_sum += 1.0 / sampling[s]
    near = np.empty(n_peaks, np.int64)
    row_near = np.empty(n_peaks, np.int64)
    total = np.zeros(width)
    weighted = np.zeros(width)
    sums = np.zeros((3, width))
    code = np.zeros(before.shape[2], np.int8)
    row_z = np.zeros((2, before.shape[2]))
    row_lo = np.full(before.shape[1], width, np.int64)
    row_hi = np.zeros(before.shape[1], np.int64)
    y = np.empty(k)
    tot = np.empty(k)
    wei = np.empty(k)
    pos = np.empty(n_voxels, np.int64)
    neg = np.empty(n_voxels, np.int64)
    slot = np.full(n_voxels, -1, np.int64)
    parent = np.empty(n_voxels, np.int64)
    size = np.empty(n_voxels, np.int64)
    for b in range(peak_ijk.shape[0]):
        n_pos, n_neg, n_exact[b] = classify_randomization(
            peak_ijk[b], peak_g, study_of, sampling, constant, ratio, zero_sum, z_pos, z_neg, tol,
            row_info, plane_size, half, reach_j, tab1, table, reach, before, near, row_near, total,
            weighted, sums, code, row_z, row_lo, row_hi, y, tot, wei, pos, neg, extremes[:, b])
        largest[0, b] = largest_listed_component(pos, n_pos, padded_index, padded_lookup, offsets,
                                                 slot, parent, size)
        largest[1, b] = largest_listed_component(neg, n_neg, padded_index, padded_lookup, offsets,
                                                 slot, parent, size)
