"""Numba kernels of the cluster-extent null: kernel pasting, fused pooling, cluster labelling.

Imported lazily by :mod:`daskmeta.null.cluster_extent` and :class:`daskmeta.stats.peak_kernel.KernelPaster`.
Everything here is compiled with ``numba.njit(cache=True, error_model="numpy", nogil=True)``,
single-threaded (parallelism comes from Dask workers), with IEEE semantics (no fastmath, so no
reassociation or FMA contraction). Arrays in, arrays out.

**Pasting by grid rows.** The mask's voxel vector is in C order of the grid, so the mask voxels
of one grid row ``(i, j)`` between ``k0`` and ``k1`` are the consecutive vector positions
``before[i, j, k0] .. before[i, j, k1 + 1] - 1`` (``before``: mask voxels preceding each grid
voxel). The isotropic kernel's support in one row ``(di, dj)`` of offsets is the contiguous
``|dk| <= half[di, dj]``. A peak is therefore pasted row by row, visiting only the mask voxels
its kernel reaches (about a fifth of the kernel's box for the grey-matter mask), never
building ``(peaks, offsets)`` temporaries. Each voxel receives its peaks' terms in peak order,
as the ``bincount`` of :meth:`~daskmeta.stats.peak_kernel.KernelPaster.__call__` adds them: the effect
``sum K^2 g / sum K`` is the same bit for bit.

**Fused pooling.** :func:`relocated_z` computes the SDM-Z of the pasted maps plane by plane
(grid planes ``i``, at most a few thousand mask voxels each), so the ``(study, voxel)`` stack
is never written: for each study the plane is pasted into two plane-sized accumulators, turned
into effects and added to the plane's four DerSimonian-Laird sums with
:func:`daskmeta.stats._pooling_jit.accumulate`; voxels no peak of the study reaches (outside
the span its kernels touched) add the study's zero-effect weight ``w = 1 / (a + c 0^2)``, the
very terms that ``accumulate`` adds for a zero effect (the ``w y`` and ``w y^2`` terms are
``+0.0``, which leaves a sum unchanged). The plane is finished with
:func:`~daskmeta.stats._pooling_jit.finish` and :func:`~daskmeta.stats._pooling_jit.exact_z`:
the arithmetic of :func:`daskmeta.stats.sdm_model.pooled_z`, voxel for voxel, so the z map is
the same bit for bit.

**Certified decisions** (the sparse null of :mod:`daskmeta.null.cluster_extent`) are in
:mod:`daskmeta.stats._sparse_null_jit`.

**Labelling.** :func:`largest_component` finds the largest 26-connected component of the
supra-threshold mask voxels by union-find (union by index, path halving) over each voxel's 13
preceding neighbours in scan order (Rosenheim's two-pass idea without the relabelling pass):
the components, hence the sizes, of ``scipy.ndimage.label`` with a 3x3x3 structure.

References
----------
DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Control Clin Trials 7:177-188.
Radua J et al. (2012). A new meta-analytic method for neuroimaging studies that combines
reported peak coordinates and statistical parametric maps. Eur Psychiatry 27:605-611.
Tarjan RE (1975). Efficiency of a good but not linear set union algorithm. J ACM 22:215-225
(union-find).
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._pooling_jit import _jit, accumulate, exact_z, finish


@_jit
def paste_rows(pi, pj, pk, g, before, mask_k, half, table, reach, plane, base, total, weighted):
    """Add one peak's kernel terms ``K`` and ``K^2 g`` on grid plane ``plane``.

    Parameters
    ----------
    pi, pj, pk : int
        The peak's grid voxel.
    g : float
        The peak's effect.
    before : ndarray of int64, shape (nx, ny, nz + 1)
        Mask voxels preceding each grid voxel in C order (``before[i, j, nz]`` ends row ``(i,
        j)``).
    mask_k : ndarray of int64, shape (n_voxels,)
        Third grid index of each mask voxel.
    half : ndarray of int64, shape (2 reach + 1, 2 reach + 1)
        Half length of the kernel's support along ``k`` in offset row ``(di, dj)`` (-1: none).
    table : ndarray of float64, shape (2 reach + 1,) * 3
        Kernel value at each offset (its values of :func:`~daskmeta.stats.peak_kernel.isotropic_offsets`).
    reach : int
        Largest offset of the kernel along any axis.
    plane : int
        The grid plane ``i`` pasted (``|plane - pi| <= reach``).
    base : int
        Accumulator index 0 is mask position ``base``.
    total, weighted : ndarray of float64
        ``sum K`` and ``sum K^2 g`` accumulators, added to.

    Returns
    -------
    (int, int)
        First and one-past-last accumulator index touched (``(n, 0)``-like empty when none).
    """
    nx, ny, nzp = before.shape
    nz = nzp - 1
    di = plane - pi + reach
    lo = total.shape[0]
    hi = 0
    for dj in range(-reach, reach + 1):
        j = pj + dj
        if j < 0 or j >= ny:
            continue
        h = half[di, dj + reach]
        if h < 0:
            continue
        k0 = max(pk - h, 0)
        k1 = min(pk + h, nz - 1)
        if k0 > k1:
            continue
        first = before[plane, j, k0]
        last = before[plane, j, k1 + 1]
        if first == last:
            continue
        row = table[di, dj + reach]
        ks = mask_k[first:last]
        tot = total[first - base:last - base]
        wei = weighted[first - base:last - base]
        dk = reach - pk
        for q in range(last - first):
            kernel = row[ks[q] + dk]
            tot[q] += kernel
            wei[q] += kernel * kernel * g
        lo = min(lo, first - base)
        hi = max(hi, last - base)
    return lo, hi


@_jit
def paste_studies(peak_ijk, peak_g, study_start, before, mask_k, half, table, reach, out, total):
    """Effect maps of several studies, ``sum K^2 g / sum K`` (0 where no kernel reaches).

    Parameters
    ----------
    peak_ijk : ndarray of int64, shape (n_peaks, 3)
        All studies' peaks, study after study (each on the grid, its plane inside it).
    peak_g : ndarray of float64, shape (n_peaks,)
        Their effects.
    study_start : ndarray of int64, shape (n_studies + 1,)
        Study ``s`` owns peaks ``study_start[s]:study_start[s + 1]``.
    before, mask_k, half, table, reach
        As in :func:`paste_rows`.
    out : ndarray of float64, shape (n_studies, n_voxels)
        The effect maps (overwritten).
    total : ndarray of float64, shape (n_voxels,)
        Work array.
    """
    n_planes = before.shape[0]
    n_voxels = out.shape[1]
    for s in range(out.shape[0]):
        weighted = out[s]
        weighted[:] = 0.0
        total[:] = 0.0
        lo = n_voxels
        hi = 0
        for p in range(study_start[s], study_start[s + 1]):
            pi = peak_ijk[p, 0]
            for plane in range(max(pi - reach, 0), min(pi + reach + 1, n_planes)):
                a, b = paste_rows(pi, peak_ijk[p, 1], peak_ijk[p, 2], peak_g[p], before, mask_k,
                                  half, table, reach, plane, 0, total, weighted)
                lo = min(lo, a)
                hi = max(hi, b)
        for v in range(lo, hi):
            t = total[v]
            weighted[v] = weighted[v] / t if t > 0.0 else 0.0


@_jit
def relocated_z(peak_ijk, peak_g, study_start, before, mask_k, half, table, reach, sampling,
                constant, out):
    """SDM-Z of the studies' pasted effect maps, pooled plane by plane (no study stack).

    Equals ``pooled_z(paste_studies(...), sampling, constant)`` bit for bit (see the module
    notes).

    Parameters
    ----------
    peak_ijk, peak_g, study_start, before, mask_k, half, table, reach
        As in :func:`paste_studies`.
    sampling, constant : ndarray of float64, shape (n_studies,)
        The variance model ``v = a + c y^2`` of each study.
    out : ndarray of float64, shape (n_voxels,)
        The z map (overwritten).
    """
    n_planes = before.shape[0]
    k = sampling.shape[0]
    plane_start = np.empty(n_planes + 1, np.int64)
    for i in range(n_planes):
        plane_start[i] = before[i, 0, 0]
    plane_start[n_planes] = out.shape[0]
    width = 1
    for i in range(n_planes):
        width = max(width, plane_start[i + 1] - plane_start[i])
    total = np.zeros(width)
    weighted = np.zeros(width)
    effect = np.empty((k, width))
    span = np.empty((k, 2), np.int64)
    sums = np.empty((4, width))
    z = np.empty(width)
    slow = np.empty(width, np.bool_)
    y = np.empty(k)
    zero_w = np.empty(k)
    for s in range(k):
        zero_w[s] = 1.0 / (sampling[s] + constant[s] * (0.0 * 0.0))
    for i in range(n_planes):
        base = plane_start[i]
        m = plane_start[i + 1] - base
        if m == 0:
            continue
        sum_w = sums[0, :m]
        sum_wy = sums[1, :m]
        sum_wy2 = sums[2, :m]
        sum_w2 = sums[3, :m]
        sums[:, :m] = 0.0
        for s in range(k):
            lo = m
            hi = 0
            for p in range(study_start[s], study_start[s + 1]):
                pi = peak_ijk[p, 0]
                if abs(pi - i) > reach:
                    continue
                a, b = paste_rows(pi, peak_ijk[p, 1], peak_ijk[p, 2], peak_g[p], before, mask_k,
                                  half, table, reach, i, base, total, weighted)
                lo = min(lo, a)
                hi = max(hi, b)
            span[s, 0] = lo
            span[s, 1] = hi
            w = zero_w[s]
            w2 = w * w
            for j in range(min(lo, m)):
                sum_w[j] += w
                sum_w2[j] += w2
            if hi > lo:
                row = effect[s, lo:hi]
                for j in range(hi - lo):
                    t = total[lo + j]
                    row[j] = weighted[lo + j] / t if t > 0.0 else 0.0
                    total[lo + j] = 0.0
                    weighted[lo + j] = 0.0
                accumulate(sum_w[lo:hi], sum_wy[lo:hi], sum_wy2[lo:hi], sum_w2[lo:hi], row,
                           sampling[s], constant[s], hi - lo)
            for j in range(max(hi, lo), m):
                sum_w[j] += w
                sum_w2[j] += w2
        finish(sum_w, sum_wy, sum_wy2, m, k, z, slow)
        for j in range(m):
            if slow[j]:
                for s in range(k):
                    y[s] = effect[s, j] if span[s, 0] <= j < span[s, 1] else 0.0
                z[j] = exact_z(y, sum_w[j], sum_wy[j] / sum_w[j], sum_w2[j], sampling, constant)
        out[base:base + m] = z[:m]


@_jit
def _root(parent, v):
    """Root of ``v``'s tree, halving the path on the way."""
    while parent[v] != v:
        parent[v] = parent[parent[v]]
        v = parent[v]
    return v


@_jit
def largest_component(selected, padded_index, padded_lookup, offsets, parent, size):
    """Size of the largest 26-connected component of the selected mask voxels (0 if none).

    Parameters
    ----------
    selected : ndarray of bool, shape (n_voxels,)
        The supra-threshold voxels of the mask's voxel vector.
    padded_index : ndarray of int64, shape (n_voxels,)
        Flat index of each mask voxel in the grid padded by one voxel on every side.
    padded_lookup : ndarray of int64
        The padded grid's voxel-vector positions (-1 off the mask), raveled.
    offsets : ndarray of int64, shape (13,)
        Flat offsets of the 13 neighbours that precede a voxel in C order.
    parent, size : ndarray of int64, shape (n_voxels,)
        Work arrays.
    """
    best = 0
    for v in range(selected.shape[0]):
        if not selected[v]:
            continue
        parent[v] = v
        size[v] = 1
        centre = padded_index[v]
        for n in range(offsets.shape[0]):
            u = padded_lookup[centre + offsets[n]]
            if u < 0 or not selected[u]:
                continue
            a = _root(parent, u)
            b = _root(parent, v)
            if a == b:
                continue
            if a > b:
                a, b = b, a
            parent[b] = a  # the earlier voxel stays the root
            size[a] += size[b]
    for v in range(selected.shape[0]):
        if selected[v] and parent[v] == v and size[v] > best:
            best = size[v]
    return best


@_jit
def largest_components(z, z_pos, z_neg, padded_index, padded_lookup, offsets, parent, size):
    """Largest components of ``z >= z_pos`` and of ``z <= z_neg`` (see :func:`largest_component`)."""
    above = np.empty(z.shape[0], np.bool_)
    below = np.empty(z.shape[0], np.bool_)
    for v in range(z.shape[0]):
        above[v] = z[v] >= z_pos
        below[v] = z[v] <= z_neg
    return (largest_component(above, padded_index, padded_lookup, offsets, parent, size),
            largest_component(below, padded_index, padded_lookup, offsets, parent, size))


# ---------------------------------------------------------------------------------------------
# The certified cluster-extent null: sparse pooling, exact decisions, labelling of candidates.
