"""Numba kernel of SDM-PSI's linear-model null: Freedman-Lane, meta-regression, Rubin's rules.

docs/methods.md, section 14.5. For each voxel and imputation, :func:`model_z` computes what
:func:`daskmeta.stats.freedman_lane.freedman_lane` and
:func:`daskmeta.stats.freedman_lane.pool_model` compute with NumPy, without any
``(imputation, study, voxel)`` temporary: the reduced fixed-effect fit, the permuted data, the
fixed-effect fit of the full design (``Q_E`` and the method-of-moments tau2), the random-effects
fit, then Rubin's rules across imputations. The ``p x p`` systems (``p`` the number of design
columns, a handful) are solved by Cholesky factorisation, in registers.

Compiled with :func:`daskmeta.stats._pooling_jit._jit` (single-threaded, IEEE semantics). The
results equal the NumPy path to about 1e-12 relative (different order of summation in the
solves); the tests hold them to it.
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._pooling_jit import _jit


@_jit
def _cholesky_solve(matrix, rhs, p, factor, out):
    """Solve ``matrix x = rhs`` (symmetric positive definite, ``p x p``) into ``out``.

    ``factor`` is scratch (``p x p``). Returns False when the matrix is not positive definite.
    """
    for i in range(p):
        for j in range(i + 1):
            total = matrix[i, j]
            for q in range(j):
                total -= factor[i, q] * factor[j, q]
            if i == j:
                if total <= 0.0:
                    return False
                factor[i, i] = np.sqrt(total)
            else:
                factor[i, j] = total / factor[j, j]
    for i in range(p):  # forward: L t = rhs
        total = rhs[i]
        for q in range(i):
            total -= factor[i, q] * out[q]
        out[i] = total / factor[i, i]
    for i in range(p - 1, -1, -1):  # backward: L' x = t
        total = out[i]
        for q in range(i + 1, p):
            total -= factor[q, i] * out[q]
        out[i] = total / factor[i, i]
    return True


@_jit
def _inverse_diagonal_and_solve(matrix, rhs, p, factor, column, unit, out, tested):
    """``x = matrix^-1 rhs`` into ``out``; returns ``(matrix^-1)[tested, tested]``."""
    if not _cholesky_solve(matrix, rhs, p, factor, out):
        return np.nan
    for q in range(p):
        unit[q] = 0.0
    unit[tested] = 1.0
    _cholesky_solve(matrix, unit, p, factor, column)
    return column[tested]


@_jit
def model_z(effects, a, c, design, reduced, tested, order, start, stop, out):
    """Rubin-pooled z of the tested coefficient for voxels ``start..stop-1`` under one order.

    Parameters
    ----------
    effects : ndarray, float32, shape (M, k, V)
        Imputed effects.
    a, c : ndarray, float64, shape (k,)
        Variance model ``v = a + c y^2``.
    design : ndarray, float64, shape (k, p)
        The full design.
    reduced : ndarray, int64, shape (r,)
        The design columns of the reduced model.
    tested : int
        The tested column.
    order : ndarray, int64, shape (k,)
        Study ``s`` receives the residual of study ``order[s]`` (the identity: the data).
    start, stop : int
        The voxels computed.
    out : ndarray, float64, shape (V,)
        Receives z (NaN where a system is singular).
    """
    n_imputations, k, _ = effects.shape
    p = design.shape[1]
    r = reduced.shape[0]
    y = np.empty(k)
    w = np.empty(k)
    fitted = np.empty(k)
    y_star = np.empty(k)
    w_star = np.empty(k)
    xtwx = np.empty((p, p))
    xtwy = np.empty(p)
    beta = np.empty(p)
    factor = np.empty((p, p))
    column = np.empty(p)
    unit = np.empty(p)
    ztwz = np.empty((r, r))
    ztwy = np.empty(r)
    gamma = np.empty(r)
    leverage_matrix = np.empty((p, p))
    slopes = np.empty(n_imputations)
    variances = np.empty(n_imputations)
    df = k - p
    for v in range(start, stop):
        for m in range(n_imputations):
            for s in range(k):
                y[s] = np.float64(effects[m, s, v])
                w[s] = 1.0 / (a[s] + c[s] * (y[s] * y[s]))
            # reduced fixed-effect fit and the permuted data
            for i in range(r):
                ztwy[i] = 0.0
                for j in range(r):
                    ztwz[i, j] = 0.0
            for s in range(k):
                for i in range(r):
                    zi = design[s, reduced[i]] * w[s]
                    ztwy[i] += zi * y[s]
                    for j in range(r):
                        ztwz[i, j] += zi * design[s, reduced[j]]
            _cholesky_solve(ztwz, ztwy, r, factor, gamma)
            for s in range(k):
                total = 0.0
                for i in range(r):
                    total += design[s, reduced[i]] * gamma[i]
                fitted[s] = total
            for s in range(k):
                o = order[s]
                y_star[s] = fitted[s] + (y[o] - fitted[o])
                w_star[s] = 1.0 / (a[o] + c[o] * (y_star[s] * y_star[s]))
            # full fixed-effect fit: Q_E and the method-of-moments tau2
            for i in range(p):
                xtwy[i] = 0.0
                for j in range(p):
                    xtwx[i, j] = 0.0
                    leverage_matrix[i, j] = 0.0
            sum_w = 0.0
            for s in range(k):
                ws = w_star[s]
                sum_w += ws
                for i in range(p):
                    xi = design[s, i] * ws
                    xtwy[i] += xi * y_star[s]
                    for j in range(p):
                        xtwx[i, j] += xi * design[s, j]
                        leverage_matrix[i, j] += xi * ws * design[s, j]
            if not _cholesky_solve(xtwx, xtwy, p, factor, beta):
                slopes[m] = np.nan
                variances[m] = np.nan
                continue
            q_e = 0.0
            for s in range(k):
                total = 0.0
                for i in range(p):
                    total += design[s, i] * beta[i]
                d = y_star[s] - total
                q_e += w_star[s] * (d * d)
            # tr((X'WX)^-1 X'W^2X), column by column
            trace = 0.0
            for j in range(p):
                for i in range(p):
                    unit[i] = leverage_matrix[i, j]
                _cholesky_solve(xtwx, unit, p, factor, column)
                trace += column[j]
            denominator = sum_w - trace
            tau2 = 0.0
            if denominator > 0.0:
                tau2 = (q_e - df) / denominator
                if tau2 < 0.0:
                    tau2 = 0.0
            # random-effects fit
            for i in range(p):
                xtwy[i] = 0.0
                for j in range(p):
                    xtwx[i, j] = 0.0
            for s in range(k):
                o = order[s]
                ws = 1.0 / ((a[o] + c[o] * (y_star[s] * y_star[s])) + tau2)
                for i in range(p):
                    xi = design[s, i] * ws
                    xtwy[i] += xi * y_star[s]
                    for j in range(p):
                        xtwx[i, j] += xi * design[s, j]
            variances[m] = _inverse_diagonal_and_solve(xtwx, xtwy, p, factor, column, unit, beta, tested)
            slopes[m] = beta[tested]
        # Rubin's rules (two-pass between variance, as numpy's var with ddof = 1)
        mean = 0.0
        within = 0.0
        for m in range(n_imputations):
            mean += slopes[m]
            within += variances[m]
        mean /= n_imputations
        within /= n_imputations
        between = 0.0
        if n_imputations > 1:
            for m in range(n_imputations):
                d = slopes[m] - mean
                between += d * d
            between /= n_imputations - 1.0
        total = within + (1.0 + 1.0 / n_imputations) * between
        out[v] = mean / np.sqrt(total)


#: Voxels per tile of :func:`slope_z` (its per-tile buffers stay in L1/L2).
TILE = 64


@_jit
def slope_z(effects, a, c, x, order, out):
    """:func:`model_z` for the design ``[1, x]`` (one regressor, tested), in closed form.

    The reduced model is the weighted mean; the ``2 x 2`` systems are inverted explicitly
    (``det = S0 S2 - S1^2``), ``Q_E`` is the two-pass sum about the fixed-effect line, and the
    leverage trace is ``(S2 L0 - 2 S1 L1 + S0 L2) / det`` with ``L`` the sums of ``w^2 [1, x,
    x^2]``. Voxels run in tiles of :data:`TILE`, innermost, so that every loop over a tile is
    contiguous and vectorizes; each study's permuted value ``y*`` and variance ``v*`` are
    formed once per tile and imputation and kept for the later passes.
    """
    n_imputations, k, n_voxels = effects.shape
    df = k - 2.0
    sw = np.empty(TILE)
    swy = np.empty(TILE)
    mu = np.empty(TILE)
    s0 = np.empty(TILE)
    s1 = np.empty(TILE)
    s2 = np.empty(TILE)
    t0 = np.empty(TILE)
    t1 = np.empty(TILE)
    l0 = np.empty(TILE)
    l1 = np.empty(TILE)
    l2 = np.empty(TILE)
    b0 = np.empty(TILE)
    b1 = np.empty(TILE)
    q = np.empty(TILE)
    tau2 = np.empty(TILE)
    slopes = np.empty((n_imputations, TILE))
    variances = np.empty((n_imputations, TILE))
    permuted = np.empty((k, TILE))
    permuted_v = np.empty((k, TILE))
    for start in range(0, n_voxels, TILE):
        n = min(TILE, n_voxels - start)
        for m in range(n_imputations):
            for j in range(n):
                sw[j] = 0.0
                swy[j] = 0.0
            for s in range(k):
                row = effects[m, s, start:start + n]
                for j in range(n):
                    y = np.float64(row[j])
                    w = 1.0 / (a[s] + c[s] * (y * y))
                    sw[j] += w
                    swy[j] += w * y
            for j in range(n):
                mu[j] = swy[j] / sw[j]
                s0[j] = 0.0
                s1[j] = 0.0
                s2[j] = 0.0
                t0[j] = 0.0
                t1[j] = 0.0
                l0[j] = 0.0
                l1[j] = 0.0
                l2[j] = 0.0
            for s in range(k):
                o = order[s]
                row = effects[m, o, start:start + n]
                ys_row = permuted[s]
                v_row = permuted_v[s]
                xs = x[s]
                for j in range(n):
                    ys = mu[j] + (np.float64(row[j]) - mu[j])
                    v_star = a[o] + c[o] * (ys * ys)
                    ys_row[j] = ys
                    v_row[j] = v_star
                    w = 1.0 / v_star
                    wx = w * xs
                    s0[j] += w
                    s1[j] += wx
                    s2[j] += wx * xs
                    t0[j] += w * ys
                    t1[j] += wx * ys
                    ww = w * w
                    l0[j] += ww
                    l1[j] += ww * xs
                    l2[j] += ww * (xs * xs)
            for j in range(n):
                det = s0[j] * s2[j] - s1[j] * s1[j]
                b0[j] = (s2[j] * t0[j] - s1[j] * t1[j]) / det
                b1[j] = (s0[j] * t1[j] - s1[j] * t0[j]) / det
                q[j] = 0.0
            for s in range(k):
                ys_row = permuted[s]
                v_row = permuted_v[s]
                xs = x[s]
                for j in range(n):
                    d = ys_row[j] - (b0[j] + b1[j] * xs)
                    q[j] += (1.0 / v_row[j]) * (d * d)
            for j in range(n):
                det = s0[j] * s2[j] - s1[j] * s1[j]
                denominator = s0[j] - (s2[j] * l0[j] - 2.0 * s1[j] * l1[j] + s0[j] * l2[j]) / det
                value = 0.0
                if denominator > 0.0:
                    value = (q[j] - df) / denominator
                tau2[j] = value if value > 0.0 else 0.0
                s0[j] = 0.0
                s1[j] = 0.0
                s2[j] = 0.0
                t0[j] = 0.0
                t1[j] = 0.0
            for s in range(k):
                ys_row = permuted[s]
                v_row = permuted_v[s]
                xs = x[s]
                for j in range(n):
                    ys = ys_row[j]
                    w = 1.0 / (v_row[j] + tau2[j])
                    wx = w * xs
                    s0[j] += w
                    s1[j] += wx
                    s2[j] += wx * xs
                    t0[j] += w * ys
                    t1[j] += wx * ys
            for j in range(n):
                det = s0[j] * s2[j] - s1[j] * s1[j]
                slopes[m, j] = (s0[j] * t1[j] - s1[j] * t0[j]) / det
                variances[m, j] = s0[j] / det
        for j in range(n):
            mean = 0.0
            within = 0.0
            for m in range(n_imputations):
                mean += slopes[m, j]
                within += variances[m, j]
            mean /= n_imputations
            within /= n_imputations
            between = 0.0
            if n_imputations > 1:
                for m in range(n_imputations):
                    d = slopes[m, j] - mean
                    between += d * d
                between /= n_imputations - 1.0
            out[start + j] = mean / np.sqrt(within + (1.0 + 1.0 / n_imputations) * between)
