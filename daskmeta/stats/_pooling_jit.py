"""Numba primitives shared by the null kernels: DL pooling sums, exact z, summaries, streams.

The permutation engine (:mod:`daskmeta.stats._permutation_jit`, :mod:`daskmeta.stats._variants_jit`)
and the cluster-extent null (:mod:`daskmeta.stats._paste_jit`) pool with these; imported lazily
by :mod:`daskmeta.stats.sdm_model`, whose :func:`~daskmeta.stats.sdm_model.pooled_z` runs
:func:`pooled_maps`.

Everything here is compiled with ``numba.njit(cache=True, error_model="numpy", nogil=True)``
(:func:`_jit`; the on-disk cache is keyed by the source of every kernel module, since a kernel
inlines the kernels it calls from other modules), single-threaded (parallelism comes from Dask
workers), with IEEE semantics (no fastmath, so no reassociation or FMA contraction: the sums
are the sequential study-by-study sums of :func:`daskmeta.stats.random_effects._pool_core`, bit
for bit). Arrays in, arrays out.

Pooling keeps four running sums per voxel (``sum w``, ``sum w y``, ``sum w y^2``, ``sum w^2``)
with ``w = 1 / (a_s + c_s y^2)``: only the effect is read. :func:`finish` decides ``tau2 = 0``
from the one-pass Q with a safety margin (:data:`Q_MARGIN`); the few voxels where it cannot
(about 0.2 % of null voxels) are recomputed exactly (two-pass Q, then ``w* = 1 / (v +
tau2)``) by :func:`exact_z`.

Random numbers: SplitMix64 (Steele, Lea and Flood 2014) as a counter-based generator
(:func:`uniform_index`): the value for counter ``i`` is ``mix(key + (i + 1) * GAMMA)``, so it
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

import hashlib
from pathlib import Path

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


def kernel_digest(folder: Path | None = None) -> str:
    """SHA-256 of the names and sources of every kernel module (``_*_jit.py``) in ``folder``
    (this package's by default)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder or Path(__file__).parent).glob("_*_jit.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


#: :func:`kernel_digest` of this package, part of every kernel's cache stamp.
KERNEL_DIGEST = kernel_digest()


def _jit(function):
    """``njit`` with an on-disk cache; without a writable cache directory, compile per process.

    Numba keys a function's cache by its own module's source only, but a kernel inlines the
    kernels it calls, often from other modules: after a change to those, its cached machine
    code would be stale. The cache stamp therefore also holds :data:`KERNEL_DIGEST`, so any
    change to any kernel module recompiles every kernel.
    """
    options = {"error_model": "numpy", "nogil": True}
    try:
        dispatcher = numba.njit(cache=True, **options)(function)
    except RuntimeError:  # numba found no writable cache locator
        return numba.njit(**options)(function)
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    if cache_file is not None and hasattr(cache_file, "_source_stamp"):
        cache_file._source_stamp = (cache_file._source_stamp, KERNEL_DIGEST)
    else:  # a Numba whose cache this cannot stamp: compile per process rather than risk stale code
        dispatcher = numba.njit(**options)(function)
    return dispatcher


@_jit
def splitmix64(state):
    """The SplitMix64 output function of a 64-bit state (wrapping uint64 arithmetic)."""
    state = (state ^ (state >> np.uint64(30))) * MIX1
    state = (state ^ (state >> np.uint64(27))) * MIX2
    return state ^ (state >> np.uint64(31))


@_jit
def uniform_index(key, counter, n):
    """The uniform integer in ``[0, n)`` of this counter (1-based) of the stream ``key``.

    ``floor(r * n / 2^64)`` of the SplitMix64 word ``r``, exact from two 32 x 32-bit products
    (``n < 2^32``): uniform up to a relative bias below ``n / 2^64`` (Lemire 2019).
    """
    r = splitmix64(key + np.uint64(counter) * GAMMA)
    high = r >> np.uint64(32)
    low = r & LOW32
    return np.int64((high * n + ((low * n) >> np.uint64(32))) >> np.uint64(32))


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
