"""Numba kernels of one voxel's SDM-Z in the cluster-extent nulls: the certified decision.

Shared by the isotropic null (:mod:`daskmeta.stats._sparse_null_jit`) and the bank null
(:mod:`daskmeta.stats._cell_null_jit`). :func:`fast_decision` gives a voxel's fast z from the
plane's or cell's running sums relative to a zero effect, a bound on its rounding error and
whether the decision is unsure (``tau2 = 0`` not certain, or ``z`` within its bound of a
threshold); :func:`study_sums_z` is the reference arithmetic those unsure voxels get, from each
study's kernel sums. The argument is in :mod:`daskmeta.null.cluster_extent` and
docs/methods.md, 5.4. Compiled like :mod:`daskmeta.stats._pooling_jit` (single-threaded, IEEE
semantics, no fastmath).

References
----------
DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Control Clin Trials 7:177-188.
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._pooling_jit import Q_MARGIN, _jit, exact_z


@_jit
def study_sums_z(tot, wei, sampling, constant, y):
    """SDM-Z of one voxel from each study's ``sum K`` and ``sum K^2 g`` (the reference's arithmetic).

    Each study's effect is ``y = sum K^2 g / sum K`` (``0`` where no kernel reaches), then the
    four DerSimonian-Laird sums in study order, the one-pass Q test of
    :func:`~daskmeta.stats._pooling_jit.finish` and, where it fails,
    :func:`~daskmeta.stats._pooling_jit.exact_z`: the operations of ``pooled_z`` of the pasted
    maps at one voxel.

    Parameters
    ----------
    tot, wei : ndarray of float64, shape (n_studies,)
        ``sum K`` and ``sum K^2 g`` of each study's peaks at the voxel, in peak order.
    sampling, constant : ndarray of float64, shape (n_studies,)
    y : ndarray of float64, shape (n_studies,)
        Work array (holds the effects on return).

    Returns
    -------
    float
    """
    k = sampling.shape[0]
    sum_w = 0.0
    sum_wy = 0.0
    sum_wy2 = 0.0
    sum_w2 = 0.0
    for s in range(k):
        t = tot[s]
        value = wei[s] / t if t > 0.0 else 0.0
        y[s] = value
        w = 1.0 / (sampling[s] + constant[s] * (value * value))
        wy = w * value
        sum_w += w
        sum_wy += wy
        sum_wy2 += wy * value
        sum_w2 += w * w
    mu_fixed = sum_wy / sum_w
    q_one_pass = sum_wy2 - sum_wy * mu_fixed
    z = mu_fixed * np.sqrt(sum_w)
    if q_one_pass >= (k - 1.0) - Q_MARGIN * (sum_wy2 + 1.0):
        z = exact_z(y, sum_w, sum_wy / sum_w, sum_w2, sampling, constant)
    return z


@_jit
def fast_decision(zero_sum, dw, swy, swy2, k, tol, z_pos, z_neg):
    """A voxel's fast z from its sums, its error bound and whether a decision is unsure.

    ``sum w = zero_sum + dw`` (``zero_sum`` the studies' weights at a zero effect, ``dw`` the
    change where kernels reach), ``swy = sum w y``, ``swy2 = sum w y^2``; ``tol`` the relative
    rounding bound of the sums (:func:`~daskmeta.null.cluster_extent._tolerance`). Unsure
    where ``tau2 = 0`` is not certain (the one-pass Q within ``Q_MARGIN`` and its rounding
    bound of ``k - 1``) or ``z`` lies within ``margin_z`` of a threshold: the caller then uses
    the reference arithmetic (docs/methods.md, 5.4).
    """
    sw = zero_sum + dw
    inv = 1.0 / sw
    mu = swy * inv
    z = mu * np.sqrt(sw)
    spread = zero_sum * inv
    margin_z = tol * (0.5 * (spread + swy2) + abs(z) * spread + 1.0)
    margin_q = tol * ((swy2 + 1.0) * (1.0 + spread) + k)
    unsure = ((swy2 - swy * mu >= (k - 1.0) - Q_MARGIN * (swy2 + 1.0) - margin_q)
              | (abs(z - z_pos) <= margin_z) | (abs(z - z_neg) <= margin_z))
    return z, margin_z, unsure
