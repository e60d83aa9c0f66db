"""Numba kernels of threshold-free cluster enhancement (TFCE) over a mask's voxel vector.

Imported lazily by :mod:`daskmeta.stats.tfce`, which documents the statistic and validates the
inputs. Everything here is compiled with ``numba.njit(cache=True, error_model="numpy",
nogil=True)``, single-threaded (parallelism comes from Dask workers), with IEEE semantics (no
fastmath). Arrays in, arrays out.

**Levels.** A voxel of value ``x`` (``z`` for the positive part, ``-z`` for the negative part)
lies in the level sets ``{x >= k dh}`` for ``k = 1 .. n``, with ``n = floor(x / dh + 1e-9)``
(:data:`LEVEL_TOLERANCE`; so a voxel exactly on a level counts at that level despite rounding
of the division) and ``n = 0`` when ``x / dh + 1e-9 < 1`` or ``x`` is NaN. Level ``k`` has
height ``h_k = k dh``.

**Component tree.** The 26-connected components of all the level sets nest into a tree (the
max-tree, Salembier et al. 1998). It is built in one sweep by union-find (Berger et al. 2007):
the voxels with ``n >= 1`` are ordered by decreasing level (a counting sort; ties in voxel
order), and each voxel ``p`` in turn becomes the tree parent of the current representative of
every component of already visited neighbours, which are then joined to ``p``'s set
(union by rank, path halving). Then each voxel's parent is moved to the canonical voxel of its
flat zone (the last visited voxel of a component at that level), visiting from the lowest
voxel up. A canonical voxel ``c`` of level ``a`` whose tree parent has level ``b`` (0 for a
root) stands for one component that keeps the same voxels at levels ``b + 1 .. a``; its size
``e`` is its subtree's voxel count, summed bottom-up in visiting order.

**Enhancement.** A voxel's TFCE is the sum over the tree path from its canonical voxel to the
root of ``e^E dh (S[a] - S[b])``, with ``S[k] = sum_{j <= k} h_j^H`` (all terms positive), done
top-down in reverse visiting order. Cost: one counting sort, 26 neighbour tests and at most as
many finds per voxel, two linear passes; no per-level relabelling, no per-level work per
component.

References
----------
Smith SM, Nichols TE (2009). Threshold-free cluster enhancement: addressing problems of
smoothing, threshold dependence and localisation in cluster inference. NeuroImage 44:83-98.
Salembier P, Oliveras A, Garrido L (1998). Antiextensive connected operators for image and
sequence processing. IEEE Trans Image Process 7:555-570 (the max-tree).
Berger C, Geraud T, Levillain R, Widynski N, Baillard A, Bertin E (2007). Effective component
tree computation with application to pattern recognition in astronomical imaging. ICIP 2007,
IV-41-44 (union-find construction and canonicalization).
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._pooling_jit import _jit

#: Added to ``x / dh`` before the floor that gives a voxel's level count.
LEVEL_TOLERANCE = 1e-9


@_jit
def level_counts(z, sign, dh, levels):
    """Level count ``n`` of every voxel of ``sign * z`` (see the module notes); the largest."""
    top = 0
    for v in range(z.shape[0]):
        q = sign * z[v] / dh + LEVEL_TOLERANCE
        if q >= 1.0:
            n = np.int32(np.floor(q))
            levels[v] = n
            if n > top:
                top = n
        else:
            levels[v] = 0
    return top


@_jit
def _find(zpar, v):
    """Root of ``v``'s set, halving the path on the way."""
    while zpar[v] != v:
        zpar[v] = zpar[zpar[v]]
        v = zpar[v]
    return v


@_jit
def enhance_part(z, sign, indptr, indices, E, H, dh, out, work):
    """TFCE of the part of ``sign * z`` above zero, written as ``sign * tfce`` into ``out``.

    Voxels whose level count is 0 are left untouched in ``out``.

    Parameters
    ----------
    z : ndarray of float64, shape (n_voxels,)
        The map.
    sign : float
        1.0 for the positive part, -1.0 for the negative part.
    indptr : ndarray of int64, shape (n_voxels + 1,)
        The 26-neighbours of voxel ``v`` are ``indices[indptr[v]:indptr[v + 1]]``.
    indices : ndarray of int32 or int64
        Neighbour voxel positions.
    E, H, dh : float
        Extent and height exponents, level step.
    out : ndarray of float64, shape (n_voxels,)
        Written where the level count is at least 1.
    work : ndarray of int32, shape (6, n_voxels)
        Work array (overwritten).

    Returns
    -------
    float
        The largest TFCE of the part (0.0 when no voxel reaches ``dh``).
    """
    n_voxels = z.shape[0]
    levels = work[0]
    order = work[1]
    parent = work[2]
    zpar = work[3]
    rank = work[4]
    represent = work[5]
    top = level_counts(z, sign, dh, levels)
    if top == 0:
        return 0.0
    # counting sort by decreasing level, ties in voxel order
    start = np.zeros(top + 2, np.int64)
    for v in range(n_voxels):
        n = levels[v]
        if n > 0:
            start[top - n + 1] += 1
    for k in range(1, top + 2):
        start[k] += start[k - 1]
    count = start[top + 1]
    for v in range(n_voxels):
        n = levels[v]
        zpar[v] = -1  # not visited yet
        if n > 0:
            slot = top - n
            order[start[slot]] = v
            start[slot] += 1
    # tree construction (Berger et al. 2007)
    for i in range(count):
        p = order[i]
        parent[p] = p
        zpar[p] = p
        rank[p] = 0
        represent[p] = p
        zp = p
        for e in range(indptr[p], indptr[p + 1]):
            q = indices[e]
            if zpar[q] < 0:
                continue
            zq = _find(zpar, q)
            if zq == zp:
                continue
            parent[represent[zq]] = p
            if rank[zp] < rank[zq]:
                zp, zq = zq, zp
            zpar[zq] = zp
            represent[zp] = p
            if rank[zp] == rank[zq]:
                rank[zp] += 1
    # canonical parents, from the lowest voxel up
    for i in range(count - 1, -1, -1):
        p = order[i]
        q = parent[p]
        if levels[parent[q]] == levels[q]:
            parent[p] = parent[q]
    # component sizes, children before parents (``zpar`` is free again)
    area = zpar
    for i in range(count):
        area[order[i]] = 1
    for i in range(count):
        p = order[i]
        q = parent[p]
        if q != p:
            area[q] += area[p]
    # S[k] = sum_{j <= k} (j dh)^H
    heights = np.empty(top + 1)
    heights[0] = 0.0
    for k in range(1, top + 1):
        heights[k] = heights[k - 1] + (k * dh) ** H
    # enhancement, parents before children; canonical voxels hold their path sums
    best = 0.0
    for i in range(count - 1, -1, -1):
        p = order[i]
        q = parent[p]
        n = levels[p]
        if q == p:
            value = float(area[p]) ** E * dh * heights[n]
        elif levels[q] == n:
            value = out[q] * sign
        else:
            value = out[q] * sign + float(area[p]) ** E * dh * (heights[n] - heights[levels[q]])
        out[p] = sign * value
        if value > best:
            best = value
    return best


@_jit
def enhance(z, indptr, indices, E, H, dh, out, work):
    """Signed TFCE of ``z``: the positive part where ``z > 0``, minus the negative part where ``z < 0``.

    Returns the largest positive TFCE and the largest negative TFCE magnitude.
    """
    out[:] = 0.0
    best_pos = enhance_part(z, 1.0, indptr, indices, E, H, dh, out, work)
    best_neg = enhance_part(z, -1.0, indptr, indices, E, H, dh, out, work)
    return best_pos, best_neg


@_jit
def enhance_maxima(z_batch, indptr, indices, E, H, dh, max_pos, max_neg):
    """Largest positive TFCE and largest negative TFCE magnitude of each map of a batch."""
    n_voxels = z_batch.shape[1]
    out = np.empty(n_voxels)
    work = np.empty((6, n_voxels), np.int32)
    for m in range(z_batch.shape[0]):
        best_pos, best_neg = enhance(z_batch[m], indptr, indices, E, H, dh, out, work)
        max_pos[m] = best_pos
        max_neg[m] = best_neg
