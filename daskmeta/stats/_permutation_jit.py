"""Numba kernel of the permutation null; imported lazily by :mod:`~daskmeta.stats.permutation`.

Randomization ``b`` relocates study ``s`` by the permutation ``v -> (v + shift_s) mod V`` of
its seeded random arrangement (:class:`~daskmeta.stats.permutation.ShuffledStack`):
voxel ``v`` reads entry ``(v - shift_s) mod V`` of the study's row. The rows carry a copy of
their first :data:`TILE` entries at the end, so a tile of voxels reads one contiguous run of
each row: no random draw and no gather per study-voxel, only a streaming read of the stack.

Per tile of :data:`TILE` voxels the studies are added eight at a time (then four, then one)
into three running sums per voxel (``sum w``, ``sum w y``, ``sum w y^2``) held in L1, so the
sums are loaded and stored once per eight studies; the loops vectorize (AVX-512 / AVX2 by
the host). Arithmetic is float64 in study order with the expressions of
:func:`daskmeta.stats._pooling_jit.accumulate`, so a fixed source is pooled bit for bit as
by that kernel; ``tau2 = 0`` is decided by :func:`~daskmeta.stats._pooling_jit.finish` and
the other voxels (about 0.2 % of null voxels) are recomputed by
:func:`~daskmeta.stats._pooling_jit.exact_z` from their entries (``sum w^2`` is summed
there, in the same order).

Same compile options as :mod:`daskmeta.stats._pooling_jit` (IEEE semantics, no fastmath).

References
----------
Radua J et al. (2012). Eur Psychiatry 27:605-611 (randomization of voxel locations).
DerSimonian R, Laird N (1986). Control Clin Trials 7:177-188 (the pooling).
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._pooling_jit import _jit, exact_z, finish, summarize, uniform_index

#: Voxels per tile: three float64 sums of a tile (12 kB) stay in L1.
TILE = 512


@_jit
def shifts_of(key, n_studies, n_voxels, out):
    """Each study's cyclic shift of randomization ``key``: uniform in ``[0, n_voxels)``.

    Draw ``s`` is SplitMix64 of ``key + (s + 1) * GAMMA`` mapped to the interval by
    multiply-shift (:func:`~daskmeta.stats._pooling_jit.uniform_index`).
    """
    n = np.uint64(np.uint32(n_voxels))
    for s in range(n_studies):
        out[s] = uniform_index(key, s + 1, n)


@_jit
def add_one(sum_w, sum_wy, sum_wy2, row, sampling, constant, m):
    """Add one study's ``w, w y, w y^2`` (``w = 1 / (a + c y^2)``) to a tile's sums."""
    for j in range(m):
        y = np.float64(row[j])
        w = 1.0 / (sampling + constant * (y * y))
        wy = w * y
        sum_w[j] += w
        sum_wy[j] += wy
        sum_wy2[j] += wy * y


@_jit
def add_four(sum_w, sum_wy, sum_wy2, r0, r1, r2, r3, a, c, s, m):
    """Studies ``s .. s+3`` added in order (one load and store of the sums per voxel)."""
    a0, a1, a2, a3 = a[s], a[s + 1], a[s + 2], a[s + 3]
    c0, c1, c2, c3 = c[s], c[s + 1], c[s + 2], c[s + 3]
    for j in range(m):
        sw = sum_w[j]
        su = sum_wy[j]
        sv = sum_wy2[j]
        y = np.float64(r0[j])
        w = 1.0 / (a0 + c0 * (y * y))
        u = w * y
        sw += w
        su += u
        sv += u * y
        y = np.float64(r1[j])
        w = 1.0 / (a1 + c1 * (y * y))
        u = w * y
        sw += w
        su += u
        sv += u * y
        y = np.float64(r2[j])
        w = 1.0 / (a2 + c2 * (y * y))
        u = w * y
        sw += w
        su += u
        sv += u * y
        y = np.float64(r3[j])
        w = 1.0 / (a3 + c3 * (y * y))
        u = w * y
        sum_w[j] = sw + w
        sum_wy[j] = su + u
        sum_wy2[j] = sv + u * y


@_jit
def add_eight(sum_w, sum_wy, sum_wy2, r0, r1, r2, r3, r4, r5, r6, r7, a, c, s, m):
    """Studies ``s .. s+7`` added in order (one load and store of the sums per voxel)."""
    a0, a1, a2, a3 = a[s], a[s + 1], a[s + 2], a[s + 3]
    a4, a5, a6, a7 = a[s + 4], a[s + 5], a[s + 6], a[s + 7]
    c0, c1, c2, c3 = c[s], c[s + 1], c[s + 2], c[s + 3]
    c4, c5, c6, c7 = c[s + 4], c[s + 5], c[s + 6], c[s + 7]
    for j in range(m):
        sw = sum_w[j]
        su = sum_wy[j]
        sv = sum_wy2[j]
        y = np.float64(r0[j])
        w = 1.0 / (a0 + c0 * (y * y))
        u = w * y
        sw += w
        su += u
        sv += u * y
        y = np.float64(r1[j])
        w = 1.0 / (a1 + c1 * (y * y))
        u = w * y
        sw += w
        su += u
        sv += u * y
        y = np.float64(r2[j])
        w = 1.0 / (a2 + c2 * (y * y))
        u = w * y
        sw += w
        su += u
        sv += u * y
        y = np.float64(r3[j])
        w = 1.0 / (a3 + c3 * (y * y))
        u = w * y
        sw += w
        su += u
        sv += u * y
        y = np.float64(r4[j])
        w = 1.0 / (a4 + c4 * (y * y))
        u = w * y
        sw += w
        su += u
        sv += u * y
        y = np.float64(r5[j])
        w = 1.0 / (a5 + c5 * (y * y))
        u = w * y
        sw += w
        su += u
        sv += u * y
        y = np.float64(r6[j])
        w = 1.0 / (a6 + c6 * (y * y))
        u = w * y
        sw += w
        su += u
        sv += u * y
        y = np.float64(r7[j])
        w = 1.0 / (a7 + c7 * (y * y))
        u = w * y
        sum_w[j] = sw + w
        sum_wy[j] = su + u
        sum_wy2[j] = sv + u * y


@_jit
def pool_tile(values, start, m, sampling, constant, sums, y, z, slow):
    """z of the ``m`` voxels of a tile whose study ``s`` reads ``values[s, start[s]:][:m]``."""
    k = sampling.shape[0]
    sum_w = sums[0]
    sum_wy = sums[1]
    sum_wy2 = sums[2]
    sum_w[:m] = 0.0
    sum_wy[:m] = 0.0
    sum_wy2[:m] = 0.0
    s = 0
    while s + 8 <= k:
        add_eight(sum_w, sum_wy, sum_wy2,
                  values[s, start[s]:][:m], values[s + 1, start[s + 1]:][:m],
                  values[s + 2, start[s + 2]:][:m], values[s + 3, start[s + 3]:][:m],
                  values[s + 4, start[s + 4]:][:m], values[s + 5, start[s + 5]:][:m],
                  values[s + 6, start[s + 6]:][:m], values[s + 7, start[s + 7]:][:m],
                  sampling, constant, s, m)
        s += 8
    while s + 4 <= k:
        add_four(sum_w, sum_wy, sum_wy2,
                 values[s, start[s]:][:m], values[s + 1, start[s + 1]:][:m],
                 values[s + 2, start[s + 2]:][:m], values[s + 3, start[s + 3]:][:m],
                 sampling, constant, s, m)
        s += 4
    while s < k:
        add_one(sum_w, sum_wy, sum_wy2, values[s, start[s]:][:m], sampling[s], constant[s], m)
        s += 1
    finish(sum_w, sum_wy, sum_wy2, m, k, z, slow)
    for j in range(m):
        if slow[j]:
            sum_w2 = 0.0
            for s in range(k):
                value = np.float64(values[s, start[s] + j])
                y[s] = value
                w = 1.0 / (sampling[s] + constant[s] * (value * value))
                sum_w2 += w * w
            z[j] = exact_z(y, sum_w[j], sum_wy[j] / sum_w[j], sum_w2, sampling, constant)


@_jit
def permutations(values, n_voxels, sampling, constant, keys, hist, max_z, min_z, maps, keep_maps):
    """Histogram and max/min z of the randomizations with the given keys.

    ``values`` is the (study, n_voxels + TILE) shuffled stack; ``hist`` (int64, added to),
    ``max_z``/``min_z`` (one per key) and, with ``keep_maps``, ``maps`` (n_keys, n_voxels)
    are the outputs.
    """
    k = sampling.shape[0]
    shifts = np.empty(k, np.int64)
    start = np.empty(k, np.int64)
    sums = np.empty((3, TILE))
    y = np.empty(k)
    z = np.empty(TILE)
    slow = np.empty(TILE, np.bool_)
    bins = np.empty(TILE, np.int64)
    for b in range(keys.shape[0]):
        shifts_of(keys[b], k, n_voxels, shifts)
        z_max = -np.inf
        z_min = np.inf
        for t0 in range(0, n_voxels, TILE):
            m = min(TILE, n_voxels - t0)
            for s in range(k):
                d = t0 - shifts[s]
                start[s] = d + n_voxels if d < 0 else d
            pool_tile(values, start, m, sampling, constant, sums, y, z, slow)
            if keep_maps:
                maps[b, t0:t0 + m] = z[:m]
            z_max, z_min = summarize(z, m, bins, hist, z_max, z_min)
        max_z[b] = z_max
        min_z[b] = z_min
