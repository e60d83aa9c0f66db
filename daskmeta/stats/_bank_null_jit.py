"""Numba kernels of the cluster-extent null with the data's own (anisotropic) kernel.

Imported lazily by :mod:`daskmeta.null.kernel_bank`; compiled like
:mod:`daskmeta.stats._sparse_null_jit` (single-threaded, IEEE semantics, no fastmath).

Each relocated peak sits on a *bank centre* whose kernel is stored as a sparse patch: the
increasing voxel-vector positions it reaches and the kernel there. :func:`classify_bank`
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
from daskmeta.stats._sparse_null_jit import largest_listed_component, study_sums_z


@_jit
def patch_kernel(start, index, kernel, centre, v):
    """The kernel of bank centre ``centre`` at voxel ``v`` (0 off its patch; binary search)."""
    lo = start[centre]
    hi = start[centre + 1]
    if hi <= lo or v < index[lo] or v > index[hi - 1]:
        return 0.0
    while lo < hi:
        mid = (lo + hi) >> 1
        if index[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    if index[lo] == v:
        return np.float64(kernel[lo])
    return 0.0


@_jit
def bank_voxel_z(v, centre, peak_g, study_of, start, index, kernel, sampling, constant, y, tot, wei):
    """SDM-Z of voxel ``v`` with the reference's arithmetic (:func:`study_sums_z`)."""
    k = sampling.shape[0]
    for s in range(k):
        tot[s] = 0.0
        wei[s] = 0.0
    for p in range(centre.shape[0]):
        value = patch_kernel(start, index, kernel, centre[p], v)
        if value > 0.0:
            s = study_of[p]
            tot[s] += value
            wei[s] += value * value * peak_g[p]
    return study_sums_z(tot, wei, sampling, constant, y)


@_jit
def classify_bank(centre, peak_g, study_of, sampling, constant, ratio, zero_sum, z_pos, z_neg, tol,
                  start, index, kernel, total, weighted, touched, sum_dw, sum_wy, sum_wy2, seen,
                  seen_list, y, tot, wei, pos, neg):
    """The voxels of one randomization whose SDM-Z passes ``z >= z_pos`` / ``z <= z_neg``.

    Exactly the voxels at which the reference (each study's map ``sum K^2 g / sum K`` of its
    patches, pooled by ``pooled_z``) passes each threshold, for ``z_neg < 0 < z_pos``:

    1. each study's patches are added to ``total`` and ``weighted`` in peak order; the voxels
       it reaches get its terms relative to a zero effect, ``w - w_0 = -(c/a) W^2 / D``,
       ``w y = T W / D``, ``w y^2 = W^2 / D`` with ``D = a T^2 + c W^2`` (one division);
    2. each reached voxel's ``z`` and one-pass Q test come from ``sum w = sum_s w_0,s + sum
       (w - w_0)`` and the other sums; where ``z`` lies beyond its error bound from both
       thresholds and ``tau2 = 0`` is certain the fast decision stands, every other reached
       voxel is recomputed by :func:`bank_voxel_z`; voxels no patch reaches have ``z = 0``.

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
    start : ndarray of int64, shape (n_centres + 1,)
        Centre ``c`` owns patch entries ``start[c]:start[c + 1]``.
    index : ndarray of int32, shape (n_entries,)
        Voxel-vector positions, increasing within each patch.
    kernel : ndarray of float32, shape (n_entries,)
        The kernel at each entry (> 0).
    total, weighted, sum_dw, sum_wy, sum_wy2 : ndarray of float64, shape (n_voxels,)
        Work arrays, all zero on entry (left all zero).
    touched, seen_list : ndarray of int64, shape (n_voxels,)
        Work arrays.
    seen : ndarray of int8, shape (n_voxels,)
        Work array, all zero on entry (left all zero).
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
    n_seen = 0
    p = 0
    while p < n_peaks:
        s = study_of[p]
        n_touched = 0
        while p < n_peaks and study_of[p] == s:
            g = peak_g[p]
            c = centre[p]
            for e in range(start[c], start[c + 1]):
                v = index[e]
                value = np.float64(kernel[e])
                if total[v] == 0.0:
                    touched[n_touched] = v
                    n_touched += 1
                total[v] += value
                weighted[v] += value * value * g
            p += 1
        a = sampling[s]
        cc = constant[s]
        r = ratio[s]
        for q in range(n_touched):
            v = touched[q]
            t = total[v]
            w_ = weighted[v]
            w2 = w_ * w_
            inv = 1.0 / (a * (t * t) + cc * w2)
            x = w2 * inv
            sum_dw[v] -= r * x
            sum_wy[v] += (t * w_) * inv
            sum_wy2[v] += x
            total[v] = 0.0
            weighted[v] = 0.0
            if seen[v] == 0:
                seen[v] = 1
                seen_list[n_seen] = v
                n_seen += 1
    n_pos = 0
    n_neg = 0
    n_exact = 0
    for q in range(n_seen):
        v = seen_list[q]
        sw = zero_sum + sum_dw[v]
        swy = sum_wy[v]
        swy2 = sum_wy2[v]
        seen[v] = 0
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
                  or abs(z - z_pos) <= margin_z or abs(z - z_neg) <= margin_z)
        if unsure:
            z = bank_voxel_z(v, centre, peak_g, study_of, start, index, kernel, sampling, constant,
                             y, tot, wei)
            n_exact += 1
        if z >= z_pos:
            pos[n_pos] = v
            n_pos += 1
        if z <= z_neg:
            neg[n_neg] = v
            n_neg += 1
    pos[:n_pos].sort()
    neg[:n_neg].sort()
    return n_pos, n_neg, n_exact


@_jit
def bank_null_randomizations(centre, peak_g, study_of, sampling, constant, z_pos, z_neg, tol, start,
                             index, kernel, padded_index, padded_lookup, offsets, largest, n_exact):
    """Largest clusters of several randomizations (:func:`classify_bank`, then
    :func:`~daskmeta.stats._sparse_null_jit.largest_listed_component` on each direction).

    Parameters
    ----------
    centre : ndarray of int64, shape (n_randomizations, n_peaks)
        Each randomization's bank centres.
    peak_g, study_of, sampling, constant, z_pos, z_neg, tol, start, index, kernel
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
    touched = np.empty(n_voxels, np.int64)
    seen_list = np.empty(n_voxels, np.int64)
    seen = np.zeros(n_voxels, np.int8)
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
            start, index, kernel, total, weighted, touched, sum_dw, sum_wy, sum_wy2, seen, seen_list,
            y, tot, wei, pos, neg)
        largest[0, b] = largest_listed_component(pos, n_pos, padded_index, padded_lookup, offsets,
                                                 slot, parent, size)
        largest[1, b] = largest_listed_component(neg, n_neg, padded_index, padded_lookup, offsets,
                                                 slot, parent, size)
