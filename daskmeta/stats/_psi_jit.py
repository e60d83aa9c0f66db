"""Numba kernel of the SDM-PSI permutation null: permuted g, DerSimonian-Laird, Rubin, fused.

:func:`pooled_z` computes, for a block of P permutations and a chunk of voxels, the
Rubin-pooled z of every permutation directly from each study's permuted noise term ``A``
(the ``(P, n) x (n, V)`` matrix product, computed by the caller with BLAS) and the imputed
effects ``(M, k, V)`` (docs/methods.md, sections 14.2 and 14.3). Per permutation,
imputation, study and voxel it forms the permuted Hedges g of
:mod:`daskmeta.stats.psi_group`,

    ``m = A + d b``, ``g' = J m / sqrt(max(S + s d^2 - s m^2, 0) / df)``, ``d = g / J``

(one-sample: ``S = df = n - 1``, ``s = n``; two-sample: ``S = df = N - 2``,
``s = n1 n2 / N``), its variance ``v' = a + c g'^2``, the DerSimonian-Laird mean of the k
studies (:func:`daskmeta.stats.random_effects.dersimonian_laird`) and, across the M
imputations, Rubin's rules (:func:`daskmeta.stats.rubin.pool_estimates`). Nothing of shape
``(P, M, k, V)`` is formed: the loops run over tiles of :data:`TILE` voxels, the innermost
over contiguous voxels (so that it vectorizes), with per-tile buffers of ``k x TILE`` (the
studies' d, ``S + s d^2``, g', w) and ``M x P x TILE`` (each imputation's DL mean, for the
two-pass between-imputation variance) that stay in L1/L2.

Arithmetic (compiled by :func:`daskmeta.stats._pooling_jit._jit`: single-threaded, IEEE, no
fastmath, so no reassociation or FMA contraction). The pooling follows the NumPy reference
(:func:`daskmeta.stats.psi_group.one_sample_g` / :func:`~daskmeta.stats.psi_group.two_sample_g`,
then :func:`daskmeta.null.psi.pool_imputations`) operation for operation: sums over studies
and over imputations in order (NumPy reduces a strided axis sequentially), ``Q = sum ((g -
mu_FE)^2) w`` two-pass, ``tau2 = max(0, (Q - (k - 1)) / C)`` (0 where ``C <= 0``),
``w* = 1 / (v + tau2)``, Rubin's mean and within variance as sums divided by M, the between
variance two-pass with ``ddof = 1`` (0 for ``M = 1``, as
:func:`~daskmeta.stats.rubin.pool_estimates`), ``z = mean / sqrt(within + (1 + 1/M)
between)``. Where every voxel of a tile has ``tau2 = 0`` the pass ``w* = 1 / (v + 0)`` is
skipped: it would reproduce ``w`` exactly. Two differences from the reference, both of
rounding: (1) ``g'`` and ``w = 1 / v'`` are formed with one division and one square root
(:func:`_permuted_g`) instead of the reference's ``(J m) / sqrt(x / df)`` and
``1 / (a + c g'^2)`` (three divisions and a root, the larger part of the cost): each is a
few ulps from the reference's (measured below 5e-16 relative); (2) the caller's matrix
products are separate BLAS calls. So ``z`` agrees with the reference to about 1e-15
absolute (1e-13 relative where ``|z| > 1e-3``; relative differences grow only where ``z``
itself is near 0). Where the max(., 0) guard binds (``S + s d^2 < s m^2``, reachable only
by rounding with standardised noise) ``g'`` is infinite and ``z`` NaN in both.

:func:`standardize_columns` builds the standardised subject noise those noise terms come
from (:func:`daskmeta.stats.subject_images.restricted_noise`), bit for bit as
:func:`~daskmeta.stats.subject_images.standardize`.

References
----------
Albajes-Eizagirre A, Solanes A, Vieta E, Radua J (2019). Voxel-based meta-analysis via
permutation of subject images (PSI): theory and implementation for SDM. NeuroImage
186:174-184, doi:10.1016/j.neuroimage.2018.10.077.
DerSimonian R, Laird N (1986). Control Clin Trials 7:177-188.
Rubin DB (1987). Multiple Imputation for Nonresponse in Surveys. Wiley, New York.
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._pooling_jit import _jit

#: Voxels per tile: the tile's buffers (``k x TILE`` per study quantity, ``M x P x TILE``
#: DL means) stay in L1/L2.
TILE = 128


@_jit
def _study_terms(effects, m, start, width, j_factor, base, square, d, ss):
    """``d = g / J`` and ``S + (s d) d`` of imputation ``m`` for a tile, every study."""
    k = effects.shape[1]
    for s in range(k):
        jf = j_factor[s]
        b0 = base[s]
        sq = square[s]
        for t in range(width):
            value = np.float64(effects[m, s, start + t]) / jf
            d[s, t] = value
            ss[s, t] = b0 + (sq * value) * value


@_jit
def _permuted_g(noise_term, s, p, t0, d, ss, bs, jf, sq, inv_df, a_s, c_s, g, w, width):
    """Study ``s``'s permuted g' and weight ``w = 1 / (a + c g'^2)`` over a tile.

    With ``u = x / df`` (``x = max(S + s d^2 - s m^2, 0)``, ``m = A + d b``), ``r = sqrt(u)``
    and ``D = a u + c (J m)^2`` (``= v u``): ``g' = J m / r = J m D / (D r)`` and
    ``w = u / D = u r / (D r)``, one division and one square root instead of the
    reference's three divisions and a root (a few ulps apart; see the module notes). One
    loop with two stores, so that LLVM's runtime alias checks stay below its threshold and
    the loop vectorizes; rows are indexed, not sliced (a slice is a new array view).
    """
    for t in range(width):
        mean = noise_term[s, p, t0 + t] + d[s, t] * bs
        x = ss[s, t] - (sq * mean) * mean
        if x < 0.0:  # np.maximum(x, 0.0): NaN passes through
            x = 0.0
        u = x * inv_df
        r = np.sqrt(u)
        jm = jf * mean
        scaled = a_s * u + c_s * (jm * jm)
        inverse = 1.0 / (scaled * r)
        g[s, t] = (jm * scaled) * inverse
        w[s, t] = (u * r) * inverse


@_jit
def _add_weights(w, g, s, sums, width):
    """``sum w`` (row 0) and ``sum w g`` (row 1) += study ``s``'s."""
    for t in range(width):
        weight = w[s, t]
        sums[0, t] += weight
        sums[1, t] += weight * g[s, t]


@_jit
def _add_squares(g, w, s, sums, width):
    """``sum w^2`` (row 2) and ``Q`` (row 3) += study ``s``'s ``w^2`` and
    ``(g - mu_FE)^2 w``; ``mu_FE`` is in row 4."""
    for t in range(width):
        weight = w[s, t]
        delta = g[s, t] - sums[4, t]
        sums[2, t] += weight * weight
        sums[3, t] += (delta * delta) * weight


@_jit
def _add_random_weights(g, s, a_s, c_s, sums, width):
    """``sum w*`` (row 0) and ``sum w* g`` (row 1) += study ``s``'s, ``w* = 1 / (v + tau2)``
    with tau2 in row 5."""
    for t in range(width):
        gp = g[s, t]
        weight = 1.0 / ((a_s + (c_s * gp) * gp) + sums[5, t])
        sums[0, t] += weight
        sums[1, t] += weight * gp


@_jit
def _dersimonian_laird(noise_term, p, t0, b, j_factor, square, df, sampling, constant,
                       d, ss, g, w, sums, mus, m, variance, width):
    """DL mean and variance of permutation ``p`` for one tile of imputation ``m``.

    ``noise_term[s, p, t0:]`` is ``A``; ``d, ss`` the imputation's study terms; ``sums``
    (6, TILE) rows ``sum w, sum w g, sum w^2, Q, mu_FE, tau2``. Writes ``mus[m, p, :width]``
    and ``variance[:width]`` (``1 / sum w*``).
    """
    k = d.shape[0]
    for row in range(4):  # sum w, sum w g, sum w^2, Q
        for t in range(width):
            sums[row, t] = 0.0
    for s in range(k):  # permuted g, its weight, the fixed-effect sums (in study order)
        _permuted_g(noise_term, s, p, t0, d, ss, b[s, p], j_factor[s], square[s], 1.0 / df[s],
                    sampling[s], constant[s], g, w, width)
        _add_weights(w, g, s, sums, width)
    for t in range(width):  # the fixed-effect mean
        sums[4, t] = sums[1, t] / sums[0, t]
    for s in range(k):  # sum w^2 and Q = sum (g - mu_FE)^2 w, two-pass
        _add_squares(g, w, s, sums, width)
    df_q = k - 1.0
    for t in range(width):
        c = sums[0, t] - sums[2, t] / sums[0, t]
        value = 0.0
        if c > 0.0:
            value = (sums[3, t] - df_q) / c
        if value < 0.0:
            value = 0.0
        sums[5, t] = value
    heterogeneous = False
    for t in range(width):
        if sums[5, t] != 0.0:  # NaN counts too
            heterogeneous = True
            break
    if heterogeneous:  # w* = 1 / (v + tau2); rows 0 and 1 become sum w*, sum w* g
        for t in range(width):
            sums[0, t] = 0.0
            sums[1, t] = 0.0
        for s in range(k):
            _add_random_weights(g, s, sampling[s], constant[s], sums, width)
    for t in range(width):
        mus[m, p, t] = sums[1, t] / sums[0, t]
    for t in range(width):
        variance[t] = 1.0 / sums[0, t]


@_jit
def pooled_z(noise_term, b, effects, start, j_factor, base, square, df, sampling, constant, z):
    """Rubin-pooled z of P permutations over a chunk of voxels (docs/methods.md, section 14.2).

    Parameters
    ----------
    noise_term : float64 array, shape (k, P, C)
        Each study's permuted noise term ``A`` (``sigma E / n`` or ``(1/n1 + 1/n2) L E``)
        over the chunk's C voxels.
    b : float64 array, shape (k, P)
        ``b = mean(sigma)`` or ``B = |P' n P| / n1 - |C' n P| / n2``.
    effects : float32 or float64 array, shape (M, k, V)
        The imputed Hedges g; the chunk is voxels ``start .. start + C - 1``.
    start : int
        First voxel of the chunk.
    j_factor, base, square, df, sampling, constant : float64 arrays, shape (k,)
        Per study: Hedges' J, ``S``, ``s``, ``df`` (see the module notes), and ``a, c`` of
        the variance ``a + c g^2``.
    z : float64 array, shape (P, C)
        Output.
    """
    k, n_perm, width_all = noise_term.shape
    n_imp = effects.shape[0]
    tile = TILE
    d = np.empty((k, tile))
    ss = np.empty((k, tile))
    g = np.empty((k, tile))
    w = np.empty((k, tile))
    sums = np.empty((6, tile))
    variance = np.empty(tile)
    mus = np.empty((n_imp, n_perm, tile))
    sum_mu = np.empty((n_perm, tile))
    sum_var = np.empty((n_perm, tile))
    inflation = 1.0 + 1.0 / n_imp
    for t0 in range(0, width_all, tile):
        width = min(tile, width_all - t0)
        sum_mu[:, :] = 0.0
        sum_var[:, :] = 0.0
        for m in range(n_imp):
            _study_terms(effects, m, start + t0, width, j_factor, base, square, d, ss)
            for p in range(n_perm):
                _dersimonian_laird(noise_term, p, t0, b, j_factor, square, df, sampling, constant,
                                   d, ss, g, w, sums, mus, m, variance, width)
                for t in range(width):
                    sum_mu[p, t] += mus[m, p, t]
                for t in range(width):
                    sum_var[p, t] += variance[t]
        for p in range(n_perm):  # Rubin's rules; sums rows 0-2: mean, within, between
            for t in range(width):
                sums[0, t] = sum_mu[p, t] / n_imp
                sums[1, t] = sum_var[p, t] / n_imp
                sums[2, t] = 0.0
            if n_imp > 1:
                for m in range(n_imp):
                    for t in range(width):
                        delta = mus[m, p, t] - sums[0, t]
                        sums[2, t] += delta * delta
                for t in range(width):
                    sums[2, t] = sums[2, t] / (n_imp - 1.0)
            for t in range(width):
                z[p, t0 + t] = sums[0, t] / np.sqrt(sums[1, t] + inflation * sums[2, t])


#: Voxels per tile of :func:`standardize_columns` (a tile of every subject stays in L2).
STANDARDIZE_TILE = 256


@_jit
def standardize_columns(images, columns, rows, bounds, out):
    """Standardise selected columns of subject images per group; write float32, transposed.

    Bit for bit the arithmetic of :func:`daskmeta.stats.subject_images.standardize` on
    ``images[:, columns]`` (float64), cast to float32 (docs/methods.md, section 14.2): per
    group and voxel, twice, the mean as the sequential sum over the group's subjects (in
    row order) divided by ``n_g``, subtracted; the sum of squares sequentially; the scale
    ``sqrt((n_g - 1) / ss)``.

    Parameters
    ----------
    images : float32 array, shape (n, n_columns)
        Subject images (:func:`daskmeta.stats.subject_images.subject_images`).
    columns : int64 array, shape (V,)
        The columns to standardise (the analysis mask's voxels), increasing.
    rows, bounds : int64 arrays
        Group ``i``'s subjects are ``rows[bounds[i]:bounds[i + 1]]``.
    out : float32 array, shape (V, n)
        Output, voxel-major (``out.T`` is the (n, V) noise).

    Returns
    -------
    int
        The first voxel with a zero (or NaN) sum of squares in some group, or -1.
    """
    n = images.shape[0]
    n_voxels = columns.shape[0]
    tile = STANDARDIZE_TILE
    block = np.empty((n, tile))
    total = np.empty(tile)
    bad = -1
    for v0 in range(0, n_voxels, tile):
        width = min(tile, n_voxels - v0)
        for i in range(n):
            for t in range(width):
                block[i, t] = np.float64(images[i, columns[v0 + t]])
        for group in range(bounds.shape[0] - 1):
            first = bounds[group]
            last = bounds[group + 1]
            size = last - first
            for _ in range(2):  # the second pass corrects the rounding of the first
                r0 = rows[first]
                for t in range(width):
                    total[t] = block[r0, t]
                for i in range(first + 1, last):
                    r = rows[i]
                    for t in range(width):
                        total[t] += block[r, t]
                for t in range(width):
                    total[t] = total[t] / size
                for i in range(first, last):
                    r = rows[i]
                    for t in range(width):
                        block[r, t] -= total[t]
                for t in range(width):
                    total[t] = block[r0, t] * block[r0, t]
                for i in range(first + 1, last):
                    r = rows[i]
                    for t in range(width):
                        total[t] += block[r, t] * block[r, t]
                for t in range(width):
                    if not total[t] > 0.0 and bad < 0:
                        bad = v0 + t
                    total[t] = np.sqrt((size - 1) / total[t])
                for i in range(first, last):
                    r = rows[i]
                    for t in range(width):
                        block[r, t] *= total[t]
        for t in range(width):
            for i in range(n):
                out[v0 + t, i] = np.float32(block[i, t])
    return bad
