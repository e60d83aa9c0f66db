"""Numba kernels of the cluster-extent null with the data's own (anisotropic) kernel.

Imported lazily by :mod:`daskmeta.null.kernel_bank`; compiled like
:mod:`daskmeta.stats._sparse_null_jit` (single-threaded, IEEE semantics, no fastmath).

Each relocated peak sits on a *bank centre* whose kernel is stored as a sparse patch: runs of
consecutive voxel-vector positions within a grid plane, and one byte per voxel that indexes a
table of kernel values. :func:`classify_bank`
scatters every study's patches into dense per-voxel sums ``T = sum K`` and ``W = sum K^2 g``
(in peak order, as the reference's ``bincount`` adds them), turns the voxels the study reached
into its DerSimonian-Laird terms relative to a zero effect, and decides each reached voxel
against the two thresholds from the fast z where that decision is certified, with the
reference arithmetic otherwise (the argument of :mod:`daskmeta.null.cluster_extent`, which
holds term for term: only the way a study's kernels are found differs). A voxel no kernel
reaches has ``z = 0`` exactly. :func:`bank_null_randomizations` labels the passing voxels.

References
----------
DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Control Clin Trials 7:177-188.
Higham NJ (2002). Accuracy and Stability of Numerical Algorithms, 2nd ed. SIAM, section 4.2.
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._pooling_jit import Q_MARGIN, _jit
from daskmeta.stats._sparse_null_jit import (
    CODE_EXACT,
    CODE_NEG,
    CODE_POS,
    largest_listed_component,
    study_sums_z,
)


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
def bank_voxel_z(v, centre, peak_g, study_of, start, plane_lo, plane_hi, run_voxel, run_length,
                 run_offset, code, levels, sampling, constant, y, tot, wei):
    """SDM-Z of voxel ``v`` with the reference's arithmetic (:func:`study_sums_z`).

    ``plane_lo[p]:plane_hi[p]`` are peak ``p``'s runs in ``v``'s plane (runs never cross a
    plane, so no other run can hold ``v``).
    """
    k = sampling.shape[0]
    for s in range(k):
        tot[s] = 0.0
        wei[s] = 0.0
    for p in range(centre.shape[0]):
        value = run_kernel(plane_lo[p], plane_hi[p], start[centre[p]], run_voxel, run_length,
                           run_offset, code, levels, v)
        if value > 0.0:
            s = study_of[p]
            tot[s] += value
            wei[s] += value * value * peak_g[p]
    return study_sums_z(tot, wei, sampling, constant, y)


@_jit
def peak_terms(levels, peak_g, study_of, sampling, constant, ratio, terms):
    """Each peak's terms at each kernel level, for a voxel only that peak of its study reaches.

    ``terms[p, l]`` holds ``(c/a) x``, ``T W / D`` and ``x = W^2 / D`` with ``T = K``, ``W = K^2 g``
    and ``D = a T^2 + c W^2`` for ``K = levels[l]``: the operations :func:`classify_bank` performs
    on such a voxel's sums (``0 + K = K`` and ``0 + K^2 g = K^2 g`` exactly), so the same doubles.
    """
    for p in range(peak_g.shape[0]):
        s = study_of[p]
        a = sampling[s]
        cc = constant[s]
        rr = ratio[s]
        g = peak_g[p]
        for level in range(levels.shape[0]):
            t = levels[level]
            w_ = t * t * g
            w2 = w_ * w_
            inv = 1.0 / (a * (t * t) + cc * w2)  # levels are > 0
            x = w2 * inv
            terms[p, level, 0] = rr * x
            terms[p, level, 1] = (t * w_) * inv
            terms[p, level, 2] = x


@_jit
def classify_bank(centre, peak_g, study_of, sampling, constant, ratio, zero_sum, z_pos, z_neg, tol,
                  start, run_start, run_voxel, run_length, run_offset, code, levels, plane_first,
                  terms, cursor, entry, plane_lo, hits, shared, total, weighted, sum_dw, sum_wy,
                  sum_wy2, flags, y, tot, wei, pos, neg):
    """The voxels of one randomization whose SDM-Z passes ``z >= z_pos`` / ``z <= z_neg``.

    Exactly the voxels at which the reference (each study's map ``sum K^2 g / sum K`` of its
    patches, pooled by ``pooled_z``) passes each threshold, for ``z_neg < 0 < z_pos`` and at
    least two studies:

    Plane by plane of the grid (the voxel vector is in C order, so a plane is a stretch of
    positions and its sums stay in cache):

    1. each study's runs in the plane are visited once to count, for each voxel, how many of
       the study's peaks reach it (a run: consecutive voxel positions within one plane);
    2. and once more: a voxel one peak reaches adds that peak's terms relative to a zero
       effect, tabulated by kernel level (:func:`peak_terms`: ``T = 0 + K = K`` and ``W = 0 +
       K^2 g = K^2 g`` exactly); a voxel several peaks reach gathers ``T = sum K`` and ``W =
       sum K^2 g`` in peak order, then adds its terms once, ``w - w_0 = -(c/a) W^2 / D``,
       ``w y = T W / D``, ``w y^2 = W^2 / D`` with ``D = a T^2 + c W^2`` (one division);
    3. every voxel's ``z`` and one-pass Q test of the plane come from ``sum w = sum_s w_0,s +
       sum (w - w_0)`` and the other sums (``z = 0`` where no kernel reaches); where ``z`` lies beyond
       its error bound from both thresholds and ``tau2 = 0`` is certain the fast decision
       stands, every other voxel is recomputed by :func:`bank_voxel_z`.

    Parameters
    ----------
    centre : ndarray of int64, shape (n_peaks,)
        The bank centre of each relocated peak, study after study.
    peak_g : ndarray of float64, shape (n_peaks,)
    study_of : ndarray of int64, shape (n_peaks,)
        Non-decreasing.
    sampling, constant, ratio : ndarray of float64, shape (n_studies,)
        ``a > 0``, ``c >= 0`` and ``c / a`` of each study.
    zero_sum : float
        ``sum_s 1 / a_s``.
    z_pos, z_neg : float
        The thresholds (``z_neg < 0 < z_pos``).
    tol : float
        Relative factor of the error bounds (``1e-12 (k + 4)``).
    start, run_start, run_voxel, run_length, run_offset, code, levels : ndarray
        The bank's patches (:class:`~daskmeta.null.kernel_bank.KernelBank`): centre ``c`` owns
        runs ``run_start[c]:run_start[c + 1]``, run ``r`` covers ``run_length[r]`` voxels from
        ``run_voxel[r]`` (never across a plane) and entries from ``start[c] + run_offset[r]``;
        the kernel of an entry is ``levels[code[entry]]``.
    plane_first : ndarray of int64, shape (nx + 1,)
        Plane ``i`` holds voxel positions ``plane_first[i]:plane_first[i + 1]``.
    terms : ndarray of float64, shape (n_peaks, n_levels, 3)
        :func:`peak_terms`.
    cursor, entry, plane_lo : ndarray of int64, shape (n_peaks,)
        Work arrays.
    hits : ndarray of int32, shape (n_voxels,)
        Work array, all zero on entry (left all zero).
    shared : ndarray of int64, shape (n_voxels,)
        Work array.
    total, weighted, sum_dw, sum_wy, sum_wy2 : ndarray of float64, shape (n_voxels,)
        Work arrays, all zero on entry (left all zero).
    flags : ndarray of int8, shape (>= largest plane,)
        Work array.
    y, tot, wei : ndarray of float64, shape (n_studies,)
        Work arrays.
    pos, neg : ndarray of int64, shape (n_voxels,)
        The passing voxels, increasing, are written to ``pos[:n_pos]`` and ``neg[:n_neg]``.

    Returns
    -------
    (int, int, int)
        ``n_pos``, ``n_neg`` and the number of voxels recomputed exactly.
    """
    k = sampling.shape[0]
    n_peaks = centre.shape[0]
    for p in range(n_peaks):
        cursor[p] = run_start[centre[p]]
        entry[p] = start[centre[p]]
    n_pos = 0
    n_neg = 0
    n_exact = 0
    for i in range(plane_first.shape[0] - 1):
        lo = plane_first[i]
        hi = plane_first[i + 1]
        if hi == lo:
            continue
        # 1-2: each study's runs in this plane (a run lies in one plane)
        reached_lo = hi
        reached_hi = lo
        first = 0
        while first < n_peaks:
            s = study_of[first]
            last = first
            while last < n_peaks and study_of[last] == s:
                last += 1
            # each peak's runs in the plane; how many of the study's peaks reach each voxel
            for p in range(first, last):
                end = run_start[centre[p] + 1]
                r = cursor[p]
                plane_lo[p] = r
                while r < end and run_voxel[r] < hi:
                    v0 = run_voxel[r]
                    for q in range(run_length[r]):
                        hits[v0 + q] += 1
                    reached_lo = min(reached_lo, v0)
                    reached_hi = max(reached_hi, v0 + run_length[r])
                    r += 1
                cursor[p] = r
            # a voxel one peak reaches adds that peak's tabulated terms (peak_terms); the others
            # gather T = sum K and W = sum K^2 g in peak order, then add their terms once
            n_shared = 0
            for p in range(first, last):
                g = peak_g[p]
                e0 = entry[p]
                for r in range(plane_lo[p], cursor[p]):
                    v0 = run_voxel[r]
                    length = run_length[r]
                    for q in range(length):
                        v = v0 + q
                        level = code[e0 + q]
                        if hits[v] == 1:
                            sum_dw[v] -= terms[p, level, 0]
                            sum_wy[v] += terms[p, level, 1]
                            sum_wy2[v] += terms[p, level, 2]
                            hits[v] = 0
                        else:
                            value = levels[level]
                            if total[v] == 0.0:
                                shared[n_shared] = v
                                n_shared += 1
                            total[v] += value
                            weighted[v] += value * value * g
                    e0 += length
                entry[p] = e0
            a = sampling[s]
            cc = constant[s]
            rr = ratio[s]
            for m in range(n_shared):
                v = shared[m]
                t = total[v]
                w_ = weighted[v]
                w2 = w_ * w_
                inv = 1.0 / (a * (t * t) + cc * w2)
                x = w2 * inv
                sum_dw[v] -= rr * x
                sum_wy[v] += (t * w_) * inv
                sum_wy2[v] += x
                total[v] = 0.0
                weighted[v] = 0.0
                hits[v] = 0
            first = last
        # 3: decide the plane's voxels that a kernel reaches (elsewhere z = 0: neither passes)
        flagged = 0
        for v in range(reached_lo, reached_hi):
            sw = zero_sum + sum_dw[v]
            swy = sum_wy[v]
            swy2 = sum_wy2[v]
            sum_dw[v] = 0.0
            sum_wy[v] = 0.0
            sum_wy2[v] = 0.0
            inv = 1.0 / sw
            mu = swy * inv
            z = mu * np.sqrt(sw)
            spread = zero_sum * inv
            margin_z = tol * (0.5 * (spread + swy2) + abs(z) * spread + 1.0)
            margin_q = tol * ((swy2 + 1.0) * (1.0 + spread) + k)
            unsure = ((swy2 - swy * mu >= (k - 1.0) - Q_MARGIN * (swy2 + 1.0) - margin_q)
                      | (abs(z - z_pos) <= margin_z) | (abs(z - z_neg) <= margin_z))
            value = ((CODE_EXACT if unsure else 0) | (CODE_POS if z >= z_pos else 0)
                     | (CODE_NEG if z <= z_neg else 0))
            flags[v - lo] = value
            flagged |= value
        if flagged == 0:
            continue
        for v in range(reached_lo, reached_hi):
            value = flags[v - lo]
            if value == 0:
                continue
            if value & CODE_EXACT:
                z = bank_voxel_z(v, centre, peak_g, study_of, start, plane_lo, cursor, run_voxel,
                                 run_length, run_offset, code, levels, sampling, constant, y, tot,
                                 wei)
                value = (CODE_POS if z >= z_pos else 0) | (CODE_NEG if z <= z_neg else 0)
                n_exact += 1
            if value & CODE_POS:
                pos[n_pos] = v
                n_pos += 1
            if value & CODE_NEG:
                neg[n_neg] = v
                n_neg += 1
    return n_pos, n_neg, n_exact


@_jit
def bank_null_randomizations(centre, peak_g, study_of, sampling, constant, z_pos, z_neg, tol, start,
                             run_start, run_voxel, run_length, run_offset, code, levels,
                             plane_first, padded_index, padded_lookup, offsets, largest, n_exact):
    """Largest clusters of several randomizations (:func:`classify_bank`, then
    :func:`~daskmeta.stats._sparse_null_jit.largest_listed_component` on each direction).

    Parameters
    ----------
    centre : ndarray of int64, shape (n_randomizations, n_peaks)
        Each randomization's bank centres.
    peak_g, study_of, sampling, constant, z_pos, z_neg, tol
        As in :func:`classify_bank`.
    start, run_start, run_voxel, run_length, run_offset, code, levels, plane_first
        As in :func:`classify_bank`.
    padded_index, padded_lookup, offsets
        The mask's 26-neighbourhood (:class:`~daskmeta.null.cluster_extent.Neighbourhood`).
    largest : ndarray of int64, shape (2, n_randomizations)
        The largest positive and negative cluster of each randomization (written).
    n_exact : ndarray of int64, shape (n_randomizations,)
        The voxels each randomization recomputed exactly (written).
    """
    n_voxels = padded_index.shape[0]
    k = sampling.shape[0]
    ratio = np.empty(k)
    zero_sum = 0.0
    for s in range(k):
        ratio[s] = constant[s] / sampling[s]
        zero_sum += 1.0 / sampling[s]
    total = np.zeros(n_voxels)
    weighted = np.zeros(n_voxels)
    sum_dw = np.zeros(n_voxels)
    sum_wy = np.zeros(n_voxels)
    sum_wy2 = np.zeros(n_voxels)
    flags = np.zeros(n_voxels, np.int8)
    cursor = np.empty(centre.shape[1], np.int64)
    entry = np.empty(centre.shape[1], np.int64)
    plane_lo = np.empty(centre.shape[1], np.int64)
    hits = np.zeros(n_voxels, np.int32)
    shared = np.empty(n_voxels, np.int64)
    terms = np.empty((centre.shape[1], levels.shape[0], 3))
    peak_terms(levels, peak_g, study_of, sampling, constant, ratio, terms)
    y = np.empty(k)
    tot = np.empty(k)
    wei = np.empty(k)
    pos = np.empty(n_voxels, np.int64)
    neg = np.empty(n_voxels, np.int64)
    slot = np.full(n_voxels, -1, np.int64)
    parent = np.empty(n_voxels, np.int64)
    size = np.empty(n_voxels, np.int64)
    for b in range(centre.shape[0]):
        n_pos, n_neg, n_exact[b] = classify_bank(
            centre[b], peak_g, study_of, sampling, constant, ratio, zero_sum, z_pos, z_neg, tol,
            start, run_start, run_voxel, run_length, run_offset, code, levels, plane_first, terms,
            cursor, entry, plane_lo, hits, shared, total, weighted, sum_dw, sum_wy, sum_wy2, flags, y,
            tot, wei, pos, neg)
        largest[0, b] = largest_listed_component(pos, n_pos, padded_index, padded_lookup, offsets,
                                                 slot, parent, size)
        largest[1, b] = largest_listed_component(neg, n_neg, padded_index, padded_lookup, offsets,
                                                 slot, parent, size)
