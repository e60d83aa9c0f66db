"""Numba kernels of the fast randomization null; imported lazily by :mod:`~daskmeta.stats.fast_null`.

Everything here is compiled with ``numba.njit(cache=True, error_model="numpy", nogil=True)``,
single-threaded (parallelism comes from Dask workers), with IEEE semantics (no fastmath, so
no reassociation or FMA contraction: the sums are the sequential study-by-study sums of
:func:`daskmeta.stats.random_effects._pool_core`, bit for bit). Arrays in, arrays out.

Layout of one randomization: studies are taken in *groups* of cache-sized tables (one group
up to 8 MB of tables, 2 MB groups beyond; see :func:`~daskmeta.stats.fast_null.study_groups`),
voxels in chunks of :data:`CHUNK`. For each chunk and each study of the group, the chunk's
source positions are drawn (a vectorized loop), the values gathered from the study's
compressed table, and four running sums per voxel (``sum w``, ``sum w y``, ``sum w y^2``,
``sum w^2``; a chunk's worth with one group, all voxels' with several) updated (a vectorized
loop). Only the effect is read: ``w = 1 / (a_s + c_s y^2)``. After the last group a chunk
is finished at once, while its sums are in L1: ``tau2 = 0`` is
decided from the one-pass Q with a safety margin, and the few voxels where it cannot be
(about 0.2 % of null voxels) are recomputed exactly (two-pass Q, then ``w* = 1 / (v +
tau2)``) from their regenerated draws.

Random numbers: SplitMix64 (Steele, Lea and Flood 2014) as a counter-based generator: the
draw of study ``s`` at voxel ``v`` is ``mix(key + (s * n_voxels + v + 1) * GAMMA)``, so it
depends only on the randomization's key, never on the chunking or the block.

References
----------
Steele GL, Lea D, Flood CH (2014). Fast splittable pseudorandom number generators. OOPSLA
'14, 453-472, doi:10.1145/2660193.2660195 (SplitMix64).
Lemire D (2019). Fast random integer generation in an interval. ACM TOMACS 29:3
(multiply-shift mapping of random words to an interval).
DerSimonian R, Laird N (1986). Control Clin Trials 7:177-188 (the pooling).
"""

from __future__ import annotations

import numba
import numpy as np

#: SplitMix64 increment and mixing constants.
GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
LOW32 = np.uint64(0xFFFFFFFF)
#: Voxels per chunk: a chunk's buffers (positions, values, sums, z) stay in L1.
CHUNK = 256
#: Histogram layout of :mod:`daskmeta.stats.null` (``floor(1000 z)`` clipped, then shifted).
BINS_PER_UNIT = 1000.0
LOWEST_BIN = -15001.0
HIGHEST_BIN = 15000.0
BIN_SHIFT = 15001
#: Relative margin of the one-pass Q test (see :func:`finish`).
Q_MARGIN = 1e-9


def _jit(function):
    """``njit`` with an on-disk cache; without a writable cache directory, compile per process."""
    options = {"error_model": "numpy", "nogil": True}
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError:  # numba found no writable cache locator
        return numba.njit(**options)(function)


@_jit
def splitmix64(state):
    """The SplitMix64 output function of a 64-bit state (wrapping uint64 arithmetic)."""
    state = (state ^ (state >> np.uint64(30))) * MIX1
    state = (state ^ (state >> np.uint64(27))) * MIX2
    return state ^ (state >> np.uint64(31))


@_jit
def position(key, counter, n, shift, offset):
    """Table position of the draw with this counter (1-based) for one study.

    ``u = floor(r * n / 2^64)`` (exact, from two 32 x 32-bit products; ``n < 2^32``) is a
    source voxel uniform up to a relative bias below ``n / 2^64``; the study's zero voxels
    come first in that order, so ``max(u - shift, 0)`` with ``shift = n_zero - 1`` is the
    position in the study's table, whose entry 0 is the zero.
    """
    r = splitmix64(key + np.uint64(counter) * GAMMA)
    high = r >> np.uint64(32)
    low = r & LOW32
    u = np.int64((high * n + ((low * n) >> np.uint64(32))) >> np.uint64(32)) - shift
    return offset + (u if u > 0 else 0)


@_jit
def draw(index, key, counter, n_voxels, shift, offset, m):
    """Table positions of ``m`` consecutive draws of one study (counters ``counter + 1 ..``)."""
    n = np.uint64(np.uint32(n_voxels))
    for j in range(m):
        index[j] = position(key, counter + j + 1, n, shift, offset)


@_jit
def gather(row, values, index, m):
    """``row[j] = values[index[j]]`` as float64."""
    for j in range(m):
        row[j] = values[index[j]]


@_jit
def accumulate(sum_w, sum_wy, sum_wy2, sum_w2, row, sampling, constant, m):
    """Add one study's ``w, w y, w y^2, w^2`` (``w = 1 / (a + c y^2)``) to a chunk's sums.

    The sums are the chunk's slices of the per-voxel arrays (contiguous, indexed from 0 so
    that the loop vectorizes).
    """
    for j in range(m):
        y = row[j]
        w = 1.0 / (sampling + constant * (y * y))
        wy = w * y
        sum_w[j] += w
        sum_wy[j] += wy
        sum_wy2[j] += wy * y
        sum_w2[j] += w * w


@_jit
def exact_z(y, sum_w, mu_fixed, sum_w2, sampling, constant):
    """SDM-Z of one voxel (its effects ``y``) with the two-pass Q and ``w* = 1 / (v + tau2)``."""
    return exact_z_skipping(y, -1, sum_w, mu_fixed, sum_w2, sampling, constant)


@_jit
def exact_z_skipping(y, skip, sum_w, mu_fixed, sum_w2, sampling, constant):
    """:func:`exact_z` over the studies other than ``skip`` (-1: all), given their
    ``sum w``, fixed-effect mean and ``sum w^2``."""
    k = y.shape[0]
    df = (k - 1.0) if skip < 0 else (k - 2.0)
    q = 0.0
    for s in range(k):
        if s != skip:
            w = 1.0 / (sampling[s] + constant[s] * (y[s] * y[s]))
            d = y[s] - mu_fixed
            q += (d * d) * w
    c = sum_w - sum_w2 / sum_w
    tau2 = 0.0
    if c > 0.0:
        tau2 = (q - df) / c
    if tau2 < 0.0:
        tau2 = 0.0
    sum_ws = 0.0
    sum_wsy = 0.0
    for s in range(k):
        if s != skip:
            ws = 1.0 / ((sampling[s] + constant[s] * (y[s] * y[s])) + tau2)
            sum_ws += ws
            sum_wsy += ws * y[s]
    return sum_wsy / sum_ws * np.sqrt(sum_ws)


@_jit
def finish(sum_w, sum_wy, sum_wy2, m, k, z, slow):
    """z of a chunk's voxels where tau2 = 0 is certain; ``slow`` flags the others.

    Where the one-pass ``Q = sum w y^2 - (sum w y)^2 / sum w`` is below ``k - 1`` by more
    than ``Q_MARGIN * (sum w y^2 + 1)`` (far above its rounding error, about
    ``3 k eps sum w y^2``), tau2 is 0, ``w* = w`` and ``z = (sum w y / sum w) sqrt(sum w)``:
    exactly the reference's arithmetic. Branch-free, so it vectorizes; the caller recomputes
    the flagged voxels with :func:`exact_z`.
    """
    for j in range(m):
        mu_fixed = sum_wy[j] / sum_w[j]
        q_one_pass = sum_wy2[j] - sum_wy[j] * mu_fixed
        z[j] = mu_fixed * np.sqrt(sum_w[j])
        slow[j] = q_one_pass >= (k - 1.0) - Q_MARGIN * (sum_wy2[j] + 1.0)


@_jit
def summarize(z, m, bins, hist, z_max, z_min):
    """Add ``z[:m]`` to the histogram (bins of :mod:`daskmeta.stats.null`); running max/min."""
    for j in range(m):
        scaled = np.floor(z[j] * BINS_PER_UNIT)
        bins[j] = np.int64(min(max(scaled, LOWEST_BIN), HIGHEST_BIN)) + BIN_SHIFT
    for j in range(m):
        hist[bins[j]] += 1
    for j in range(m):
        value = z[j]
        if value > z_max:
            z_max = value
        if value < z_min:
            z_min = value
    return z_max, z_min


@_jit
def one_randomization(values, offsets, shifts, n_voxels, sampling, constant, groups, key,
                      sums, index, row, y, z, slow, out, hist, keep_maps):
    """z of every voxel of one randomization, summarized into ``hist`` (and ``out``).

    Returns ``(max z, min z)``. ``groups`` holds the first study of each study group and
    the number of studies last; ``sums`` is a (4, n_voxels) work array with several groups,
    a (4, CHUNK) one with one group (then a chunk's sums never leave L1).
    """
    k = sampling.shape[0]
    n = np.uint64(np.uint32(n_voxels))
    z_max = -np.inf
    z_min = np.inf
    n_groups = groups.shape[0] - 1
    for g in range(n_groups):
        for start in range(0, n_voxels, CHUNK):
            m = min(CHUNK, n_voxels - start)
            base = start if n_groups > 1 else 0
            sum_w = sums[0, base:base + m]
            sum_wy = sums[1, base:base + m]
            sum_wy2 = sums[2, base:base + m]
            sum_w2 = sums[3, base:base + m]
            if g == 0:
                sum_w[:] = 0.0
                sum_wy[:] = 0.0
                sum_wy2[:] = 0.0
                sum_w2[:] = 0.0
            for s in range(groups[g], groups[g + 1]):
                draw(index, key, s * n_voxels + start, n_voxels, shifts[s], offsets[s], m)
                gather(row, values, index, m)
                accumulate(sum_w, sum_wy, sum_wy2, sum_w2, row, sampling[s], constant[s], m)
            if g < n_groups - 1:
                continue
            finish(sum_w, sum_wy, sum_wy2, m, k, z, slow)
            for j in range(m):
                if slow[j]:
                    for s in range(k):
                        counter = s * n_voxels + start + j + 1
                        y[s] = values[position(key, counter, n, shifts[s], offsets[s])]
                    z[j] = exact_z(y, sum_w[j], sum_wy[j] / sum_w[j], sum_w2[j], sampling, constant)
            if keep_maps:
                out[start:start + m] = z[:m]
            z_max, z_min = summarize(z, m, index, hist, z_max, z_min)
    return z_max, z_min


@_jit
def randomizations(values, offsets, shifts, n_voxels, sampling, constant, groups, keys, hist,
                   max_z, min_z, maps, keep_maps):
    """Histogram and max/min of the randomizations with the given keys, fused.

    Parameters are those of :class:`~daskmeta.stats.fast_null.StudyTables` (``shifts =
    n_zero - 1``), the study groups, one uint64 key per randomization, and the outputs:
    ``hist`` (int64, N_HIST, added to), ``max_z`` and ``min_z`` (float64, one per key), and
    with ``keep_maps`` the z maps in ``maps`` (float64, (n_keys, n_voxels)).
    """
    k = sampling.shape[0]
    sums = np.empty((4, n_voxels if groups.shape[0] > 2 else CHUNK))
    index = np.empty(CHUNK, np.int64)
    row = np.empty(CHUNK)
    y = np.empty(k)
    z = np.empty(CHUNK)
    slow = np.empty(CHUNK, np.bool_)
    for b in range(keys.shape[0]):
        max_z[b], min_z[b] = one_randomization(
            values, offsets, shifts, n_voxels, sampling, constant, groups, keys[b], sums, index,
            row, y, z, slow, maps[b if keep_maps else 0], hist, keep_maps)


@_jit
def pooled_maps(effect, sampling, constant, out):
    """SDM-Z of given (study, voxel) effects with the kernel's own pooling (a fixed source)."""
    k, n_voxels = effect.shape
    sums = np.zeros((4, CHUNK))
    row = np.empty(CHUNK)
    y = np.empty(k)
    z = np.empty(CHUNK)
    slow = np.empty(CHUNK, np.bool_)
    for start in range(0, n_voxels, CHUNK):
        m = min(CHUNK, n_voxels - start)
        sums[:, :] = 0.0
        for s in range(k):
            for j in range(m):
                row[j] = effect[s, start + j]
            accumulate(sums[0], sums[1], sums[2], sums[3], row, sampling[s], constant[s], m)
        finish(sums[0], sums[1], sums[2], m, k, z, slow)
        for j in range(m):
            if slow[j]:
                for s in range(k):
                    y[s] = effect[s, start + j]
                z[j] = exact_z(y, sums[0, j], sums[1, j] / sums[0, j], sums[3, j], sampling, constant)
        out[start:start + m] = z[:m]
