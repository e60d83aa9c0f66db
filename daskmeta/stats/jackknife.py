"""Leave-one-out (jackknife) random-effects pooling (docs/methods.md, section 7).

Pure NumPy. All k leave-one-out DerSimonian-Laird analyses of a stack of study maps:
the first half of the estimator (Q, tau2, I2) follows from the full sums minus each
study's terms, so no run is recomputed from scratch; only the second half (the weights
``1 / (v + tau2_j)`` with each run's own tau2) needs one pass per left-out study.

References
----------
DerSimonian R, Laird N (1986). Control Clin Trials 7:177.
Radua J, Mataix-Cols D (2009). Br J Psychiatry 195:393 (jackknife sensitivity analysis).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.stats.null import N_HIST, histogram, relocation_source
from daskmeta.stats.random_effects import RandomEffects, dl_from_sums, heterogeneity_z


def leave_one_out(effect: ArrayLike, variance: ArrayLike, axis: int = 0) -> RandomEffects:
    """The k leave-one-out random-effects means, with a leading ``left_out`` axis.

    Parameters
    ----------
    effect, variance : array_like
        Study maps with the study axis ``axis`` (k >= 3 studies: each run keeps k - 1 >= 2).
    axis : int
        The study axis.

    Returns
    -------
    RandomEffects
        Each field has shape ``(k, *rest)``: row ``j`` is the analysis without study ``j``.

    Notes
    -----
    The sums are taken around the full fixed-effect mean (``d = y - mu_FE``), which leaves
    Q unchanged in exact arithmetic and keeps the subtraction of one study's terms free of
    cancellation, so each run agrees with its explicit recomputation to about 1e-12.
    """
    y = np.moveaxis(np.asarray(effect, dtype=np.float64), axis, 0)
    v = np.moveaxis(np.asarray(variance, dtype=np.float64), axis, 0)
    if y.shape != v.shape:
        raise ValueError(f"effect and variance shapes differ: {y.shape} vs {v.shape}")
    k = y.shape[0]
    if k < 3:
        raise ValueError(f"a leave-one-out analysis needs at least 3 studies; {k} was provided")
    w = 1.0 / v
    sum_w = w.sum(0)
    d = y - (w * y).sum(0) / sum_w
    wd = w * d
    sums = (sum_w - w, wd.sum(0) - wd, (wd * d).sum(0) - wd * d, (w * w).sum(0) - w * w)
    het = dl_from_sums(*sums, k - 1)
    mu = np.empty_like(y)
    sum_w_star = np.empty_like(y)
    for j in range(k):  # one pass per left-out study (a loop over studies, not voxels)
        w_star = 1.0 / (v + het.tau2[j])
        w_star[j] = 0.0
        sum_w_star[j] = w_star.sum(0)
        mu[j] = (w_star * y).sum(0) / sum_w_star[j]
    p_q, q_z = heterogeneity_z(het.q, k - 1)
    return RandomEffects(mu, 1.0 / sum_w_star, mu * np.sqrt(sum_w_star), het.tau2, het.q,
                         het.i2, p_q, q_z)


def jackknife_null_block(
    effect: ArrayLike, variance: ArrayLike, seeds: Sequence[np.random.SeedSequence]
) -> NDArray[np.int64]:
    """Null histograms of the k leave-one-out analyses over a block of randomizations.

    Each randomization relocates every study's voxels (uniform draws with replacement, one
    ``rng.integers(0, V, size=(k, V))`` call, as :func:`daskmeta.stats.null.relocate`) and
    pools the k leave-one-out means of the relocated stack; all runs share the relocation.

    Returns
    -------
    ndarray of int64, shape (k, N_HIST)
        Row ``j``: counts of the null z of the run without study ``j`` on the null bins.
    """
    y = np.asarray(effect, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    k, n_voxels = y.shape
    hist = np.zeros((k, N_HIST), dtype=np.int64)
    for sequence in seeds:
        source = relocation_source(np.random.default_rng(sequence), k, n_voxels)
        z = leave_one_out(y.take(source), v.take(source)).z
        for j in range(k):
            hist[j] += histogram(z[j])
    return hist
