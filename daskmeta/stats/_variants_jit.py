"""Numba kernels of the permutation engine's jackknife and meta-regression nulls.

Imported lazily by :mod:`~daskmeta.stats.permutation`. The relocations are those of
:mod:`daskmeta.stats._permutation_jit` (the same shifts of the same arrangement, read in
tiles); the pooling differs: k leave-one-out DerSimonian-Laird runs per randomization, or a
random-effects meta-regression on ``[1, x]`` per voxel. Same compile options (IEEE
semantics, no fastmath).

References
----------
DerSimonian R, Laird N (1986). Control Clin Trials 7:177-188.
Radua J, Mataix-Cols D (2009). Br J Psychiatry 195:393-402 (jackknife; SDM linear models).
Raudenbush SW (2009). In: The Handbook of Research Synthesis and Meta-Analysis, 2nd ed.,
pp. 295-315 (method-of-moments tau2 for meta-regression, eq. 16.21).
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._permutation_jit import TILE, shifts_of
from daskmeta.stats._pooling_jit import Q_MARGIN, _jit, exact_z_skipping, summarize

# -- leave-one-out (jackknife) nulls -----------------------------------------------------------

#: Voxels per tile of the jackknife kernel: its per-study terms (4 x k x 256 float64) stay in L2.
JACKKNIFE_TILE = 256


@_jit
def study_terms(values, start, m, sampling, constant, terms, totals):
    """Each study's ``w, w y, w y^2, w^2`` on a tile (``terms[:, s, :m]``) and their sums in
    study order (``totals[:, :m]``)."""
    k = sampling.shape[0]
    totals[:, :m] = 0.0
    for s in range(k):
        row = values[s, start[s]:][:m]
        a = sampling[s]
        c = constant[s]
        t_w = terms[0, s]
        t_wy = terms[1, s]
        t_wy2 = terms[2, s]
        t_w2 = terms[3, s]
        s_w = totals[0]
        s_wy = totals[1]
        s_wy2 = totals[2]
        s_w2 = totals[3]
        for j in range(m):
            y = np.float64(row[j])
            w = 1.0 / (a + c * (y * y))
            wy = w * y
            t_w[j] = w
            t_wy[j] = wy
            t_wy2[j] = wy * y
            t_w2[j] = w * w
            s_w[j] += w
            s_wy[j] += wy
            s_wy2[j] += wy * y
            s_w2[j] += w * w


@_jit
def exact_z_without(y, skip, sampling, constant):
    """DerSimonian-Laird SDM-Z of one voxel's effects ``y`` without study ``skip`` (two-pass Q)."""
    k = y.shape[0]
    sum_w = 0.0
    sum_wy = 0.0
    sum_w2 = 0.0
    for s in range(k):
        if s != skip:
            w = 1.0 / (sampling[s] + constant[s] * (y[s] * y[s]))
            sum_w += w
            sum_wy += w * y[s]
            sum_w2 += w * w
    return exact_z_skipping(y, skip, sum_w, sum_wy / sum_w, sum_w2, sampling, constant)


@_jit
def left_out_z(totals, terms, i, m, k, z, slow):
    """z of a tile's voxels without study ``i`` where tau2 = 0 is certain; flags the others.

    The sums are the totals minus study ``i``'s terms; the one-pass Q must be below ``k - 2``
    by more than ``Q_MARGIN * (total sum w y^2 + 1)``, which bounds the rounding of the sums
    and of the subtraction (see :func:`daskmeta.stats._pooling_jit.finish`).
    """
    for j in range(m):
        sum_w = totals[0, j] - terms[0, i, j]
        sum_wy = totals[1, j] - terms[1, i, j]
        sum_wy2 = totals[2, j] - terms[2, i, j]
        mu_fixed = sum_wy / sum_w
        z[j] = mu_fixed * np.sqrt(sum_w)
        slow[j] = sum_wy2 - sum_wy * mu_fixed >= (k - 2.0) - Q_MARGIN * (totals[2, j] + 1.0)


@_jit
def jackknife_permutations(values, n_voxels, sampling, constant, keys, hist, maps, keep_maps):
    """Null histograms of the k leave-one-out runs (``hist``, (k, N_HIST), added to).

    Every randomization relocates the stack once (the shifts of :func:`permutations`) and
    pools it k times, each time without one study. With ``keep_maps``, ``maps`` (n_keys,
    k, n_voxels) receives the z maps.
    """
    k = sampling.shape[0]
    shifts = np.empty(k, np.int64)
    start = np.empty(k, np.int64)
    terms = np.empty((4, k, JACKKNIFE_TILE))
    totals = np.empty((4, JACKKNIFE_TILE))
    y = np.empty(k)
    z = np.empty(JACKKNIFE_TILE)
    slow = np.empty(JACKKNIFE_TILE, np.bool_)
    bins = np.empty(JACKKNIFE_TILE, np.int64)
    for b in range(keys.shape[0]):
        shifts_of(keys[b], k, n_voxels, shifts)
        for t0 in range(0, n_voxels, JACKKNIFE_TILE):
            m = min(JACKKNIFE_TILE, n_voxels - t0)
            for s in range(k):
                d = t0 - shifts[s]
                start[s] = d + n_voxels if d < 0 else d
            study_terms(values, start, m, sampling, constant, terms, totals)
            for i in range(k):
                left_out_z(totals, terms, i, m, k, z, slow)
                for j in range(m):
                    if slow[j]:
                        for s in range(k):
                            y[s] = np.float64(values[s, start[s] + j])
                        z[j] = exact_z_without(y, i, sampling, constant)
                if keep_maps:
                    maps[b, i, t0:t0 + m] = z[:m]
                summarize(z, m, bins, hist[i], 0.0, 0.0)


# -- meta-regression nulls (design [1, x]) ----------------------------------------------------

#: Relative margin of the regression's one-pass Q_E test: the rounding of ``C - beta'B``
#: grows with the condition of ``X'WX``; 1e-7 leaves room for condition numbers up to ~1e6.
REGRESSION_Q_MARGIN = 1e-7


@_jit
def add_regression_study(sums, row, sampling, constant, x, m):
    """Add one study's ``w, w x, w x^2, w y, w x y, w y^2`` (``x`` its regressor) to the sums."""
    x2 = x * x
    s_w = sums[0]
    s_wx = sums[1]
    s_wx2 = sums[2]
    s_wy = sums[3]
    s_wxy = sums[4]
    s_wy2 = sums[5]
    for j in range(m):
        y = np.float64(row[j])
        w = 1.0 / (sampling + constant * (y * y))
        wy = w * y
        s_w[j] += w
        s_wx[j] += w * x
        s_wx2[j] += w * x2
        s_wy[j] += wy
        s_wxy[j] += wy * x
        s_wy2[j] += wy * y


@_jit
def contrast_z(a0, a1, a2, b0, b1, det, contrasts, z, j):
    """z of each contrast ``c' beta`` with ``beta = A^-1 B``, ``cov = A^-1``, ``A = [[a0, a1],
    [a1, a2]]`` (determinant ``det``); written to ``z[:, j]``."""
    beta0 = (a2 * b0 - a1 * b1) / det
    beta1 = (a0 * b1 - a1 * b0) / det
    for r in range(contrasts.shape[0]):
        c0 = contrasts[r, 0]
        c1 = contrasts[r, 1]
        estimate = c0 * beta0 + c1 * beta1
        variance = (c0 * c0 * a2 - 2.0 * c0 * c1 * a1 + c1 * c1 * a0) / det
        z[r, j] = estimate / np.sqrt(variance)


@_jit
def exact_regression_z(y, sampling, constant, x, contrasts, z, j):
    """Contrast z of one voxel's meta-regression on ``[1, x]`` with the method-of-moments
    tau2 (two-pass ``Q_E``): :func:`daskmeta.stats.regression.meta_regression` per voxel."""
    k = y.shape[0]
    a0 = a1 = a2 = b0 = b1 = 0.0
    d0 = d1 = d2 = 0.0
    for s in range(k):
        w = 1.0 / (sampling[s] + constant[s] * (y[s] * y[s]))
        a0 += w
        a1 += w * x[s]
        a2 += w * x[s] * x[s]
        b0 += w * y[s]
        b1 += w * x[s] * y[s]
        d0 += w * w
        d1 += w * w * x[s]
        d2 += w * w * x[s] * x[s]
    det = a0 * a2 - a1 * a1
    beta0 = (a2 * b0 - a1 * b1) / det
    beta1 = (a0 * b1 - a1 * b0) / det
    q_e = 0.0
    for s in range(k):
        w = 1.0 / (sampling[s] + constant[s] * (y[s] * y[s]))
        r = y[s] - beta0 - beta1 * x[s]
        q_e += w * (r * r)
    leverage = (a2 * d0 - 2.0 * a1 * d1 + a0 * d2) / det
    c = a0 - leverage
    tau2 = 0.0
    if c > 0.0:
        tau2 = (q_e - (k - 2.0)) / c
    if tau2 < 0.0:
        tau2 = 0.0
    a0 = a1 = a2 = b0 = b1 = 0.0
    for s in range(k):
        w = 1.0 / ((sampling[s] + constant[s] * (y[s] * y[s])) + tau2)
        a0 += w
        a1 += w * x[s]
        a2 += w * x[s] * x[s]
        b0 += w * y[s]
        b1 += w * x[s] * y[s]
    contrast_z(a0, a1, a2, b0, b1, a0 * a2 - a1 * a1, contrasts, z, j)


@_jit
def regression_permutations(values, n_voxels, sampling, constant, x, contrasts, keys, hist, maps,
                            keep_maps):
    """Null histograms of the contrasts of a ``[1, x]`` meta-regression (``hist``,
    (n_contrasts, N_HIST), added to); the relocations of :func:`permutations`.

    Where the one-pass ``Q_E = sum w y^2 - beta_FE' X'Wy`` is below ``k - 2`` by more than
    :data:`REGRESSION_Q_MARGIN` ``* (sum w y^2 + 1)``, tau2 = 0 and the fixed-effect fit is the
    random-effects one; elsewhere :func:`exact_regression_z` refits from the voxel's effects.
    With ``keep_maps``, ``maps`` (n_keys, n_contrasts, n_voxels) receives the z maps.
    """
    k = sampling.shape[0]
    n_contrasts = contrasts.shape[0]
    shifts = np.empty(k, np.int64)
    start = np.empty(k, np.int64)
    sums = np.empty((6, TILE))
    y = np.empty(k)
    z = np.empty((n_contrasts, TILE))
    bins = np.empty(TILE, np.int64)
    for b in range(keys.shape[0]):
        shifts_of(keys[b], k, n_voxels, shifts)
        for t0 in range(0, n_voxels, TILE):
            m = min(TILE, n_voxels - t0)
            sums[:, :m] = 0.0
            for s in range(k):
                d = t0 - shifts[s]
                start[s] = d + n_voxels if d < 0 else d
                add_regression_study(sums, values[s, start[s]:][:m], sampling[s], constant[s], x[s], m)
            for j in range(m):
                a0 = sums[0, j]
                a1 = sums[1, j]
                a2 = sums[2, j]
                b0 = sums[3, j]
                b1 = sums[4, j]
                det = a0 * a2 - a1 * a1
                beta0 = (a2 * b0 - a1 * b1) / det
                beta1 = (a0 * b1 - a1 * b0) / det
                q_e = sums[5, j] - (beta0 * b0 + beta1 * b1)
                if q_e < (k - 2.0) - REGRESSION_Q_MARGIN * (sums[5, j] + 1.0):
                    contrast_z(a0, a1, a2, b0, b1, det, contrasts, z, j)
                else:
                    for s in range(k):
                        y[s] = np.float64(values[s, start[s] + j])
                    exact_regression_z(y, sampling, constant, x, contrasts, z, j)
            for r in range(n_contrasts):
                if keep_maps:
                    maps[b, r, t0:t0 + m] = z[r, :m]
                summarize(z[r], m, bins, hist[r], 0.0, 0.0)
