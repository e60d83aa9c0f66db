"""Numba kernels of the imputation draws: one discretised CDF, many uniforms (docs/methods.md, section 14.1).

:func:`daskmeta.stats.imputation.truncated_draws_many` builds each voxel's CDF table over the
bins once and inverts it at the uniforms of every imputation. The table is built with exactly
the operations of :func:`daskmeta.stats.imputation.truncated_draws`, in the same order, so
the draws are the same bit for bit:

1. :func:`bin_scores`: ``y = width * centre + low``, ``var = y * y * c + (a + tau2)`` and
   ``(y - mu)^2 / var``;
2. ``log(var)`` in NumPy (the caller);
3. :func:`centred_scores`: ``score = (y - mu)^2 / var + log(var)``, minus the row's minimum,
   times ``-0.5``;
4. ``exp`` in NumPy (the caller): the density of each bin;
5. :func:`invert`: the running sum (the CDF) and, for each uniform, the first bin with
   ``cdf > u * cdf[-1]`` (binary search: the CDF is nondecreasing, so this is the count of
   bins with ``cdf <= target`` that ``truncated_draws`` takes) and the linear interpolation
   within it.

The transcendental functions stay in NumPy: its SIMD ``exp`` and ``log`` may differ from
Numba's (libm's) in the last bit. Everything here is compiled with
``numba.njit(cache=True, error_model="numpy", nogil=True)`` (no fastmath: no reassociation
or FMA contraction), single-threaded.

References
----------
Albajes-Eizagirre A, Solanes A, Vieta E, Radua J (2019). Voxel-based meta-analysis via
permutation of subject images (PSI): theory and implementation for SDM. NeuroImage
186:174-184, doi:10.1016/j.neuroimage.2018.10.077.
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._pooling_jit import _jit


@_jit
def bin_scores(low, width, mu, c, base, centres, y_out, var_out):  # pragma: no cover - compiled
    """Per voxel ``i`` and bin ``b``: ``var_out = y * y * c + base`` and ``y_out = (y - mu)^2 / var``.

    ``y = width[i] * centres[b] + low[i]``; the rows of the outputs beyond ``low.size`` are
    left untouched. docs/methods.md, section 14.1.
    """
    bins = centres.size
    for i in range(low.size):
        w, lo_i, m_i, c_i, b_i = width[i], low[i], mu[i], c[i], base[i]
        for b in range(bins):
            y = w * centres[b]
            y = y + lo_i
            var = y * y
            var = var * c_i
            var = var + b_i
            r = y - m_i
            r = r * r
            y_out[i, b] = r / var
            var_out[i, b] = var


@_jit
def centred_scores(score, log_var, rows):  # pragma: no cover - compiled
    """``score = -0.5 * ((score + log_var) - min_row)``, in place over the first ``rows`` rows.

    The minimum propagates NaN as NumPy's does. docs/methods.md, section 14.1.
    """
    bins = score.shape[1]
    for i in range(rows):
        smallest = np.inf
        nan = False
        for b in range(bins):
            s = score[i, b] + log_var[i, b]
            score[i, b] = s
            if s != s:
                nan = True
            elif s < smallest:
                smallest = s
        if nan:
            smallest = np.nan
        for b in range(bins):
            s = score[i, b] - smallest
            score[i, b] = s * -0.5


@_jit
def _clip(x, lower, upper):  # pragma: no cover - compiled
    """``np.clip(x, lower, upper)`` for one float: NaN passes, ``max`` then ``min``."""
    if not (x != x or x > lower):
        x = lower
    if not (x != x or x < upper):
        x = upper
    return x


@_jit
def invert(density, cdf, columns, low, width, up, u, out):  # pragma: no cover - compiled
    """Inverse CDF of each row of ``density`` at the uniforms ``u[:, columns[i]]``.

    Row ``i`` (of ``columns.size``) is voxel ``columns[i]``; ``cdf`` receives the running
    sums; ``out[r, columns[i]]`` the draw at ``u[r, columns[i]]``, for every row ``r`` of
    ``u``, exactly as :func:`daskmeta.stats.imputation.truncated_draws` computes it.
    docs/methods.md, section 14.1.
    """
    bins = density.shape[1]
    fbins = float(bins)
    for i in range(columns.size):
        total = 0.0
        for b in range(bins):
            total = total + density[i, b]
            cdf[i, b] = total
    for r in range(u.shape[0]):
        for i in range(columns.size):
            v = columns[i]
            target = u[r, v] * cdf[i, bins - 1]
            # the count of bins with cdf <= target (the cdf is nondecreasing; a NaN target
            # counts none): it lies in [first, first + n], halved without branches
            first, n = 0, bins
            while n > 1:
                half = n >> 1
                first = first + half if cdf[i, first + half] <= target else first
                n -= half
            if cdf[i, first] <= target:
                first += 1
            j = min(first, bins - 1)
            before = cdf[i, j - 1] if j > 0 else 0.0
            fraction = _clip((target - before) / density[i, j], 0.0, 1.0)
            lo_i = low[i]
            value = lo_i + width[i] * (j + fraction) / fbins
            out[r, v] = _clip(value, lo_i, up[i])

