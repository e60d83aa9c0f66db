"""DerSimonian-Laird random-effects pooling of study maps (docs/methods.md, section 4).

Pure NumPy/SciPy kernels: arrays in, arrays out, the study axis given explicitly and
reduced. Inputs may be float32; every sum is accumulated in float64. Nothing here knows
about Dask, xarray or files, so the same functions serve the mean, the jackknife, the
randomization null and the dense reference of the Dask path.

Per voxel, over the k studies, with ``y = effect``, ``v = variance``, ``w = 1/v``::

    Q    = sum w y^2 - (sum w y)^2 / sum w
    C    = sum w - sum w^2 / sum w
    tau2 = max(0, (Q - (k - 1)) / C)
    w*   = 1 / (v + tau2)
    mu   = sum w* y / sum w*,   var(mu) = 1 / sum w*,   z = mu / sqrt(var(mu))
    I2   = max(0, (Q - (k - 1)) / Q)   (0 where Q = 0)

References
----------
DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Control Clin Trials
7:177-188, doi:10.1016/0197-2456(86)90046-2 (method-of-moments tau2, eq. 2-3).
Higgins JPT, Thompson SG (2002). Quantifying heterogeneity in a meta-analysis. Stat Med
21:1539-1558 (I2).
Radua J et al. (2012). A new meta-analytic method for neuroimaging studies that combines
reported peak coordinates and statistical parametric maps. Eur Psychiatry 27:605-611.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from daskmeta.stats._validation import check_study_arrays

__all__ = [
    "Heterogeneity",
    "RandomEffects",
    "WeightedSums",
    "dersimonian_laird",
    "dl_from_sums",
    "heterogeneity_z",
    "pool_with_tau2",
    "weighted_sums",
]

#: ``|q_z|`` is clipped here: ``norm.isf`` of the smallest normal float64 (about 37.5).
Q_Z_LIMIT = float(stats.norm.isf(np.finfo(np.float64).tiny))


class RandomEffects(NamedTuple):
    """Result of :func:`dersimonian_laird`; float64 arrays with the study axis removed.

    Attributes
    ----------
    effect : ndarray
        Pooled random-effects mean ``mu``.
    variance : ndarray
        ``var(mu) = 1 / sum w*``.
    z : ndarray
        SDM-Z, the Wald statistic ``mu / sqrt(var(mu))`` (no Knapp-Hartung).
    tau2 : ndarray
        DerSimonian-Laird between-study variance.
    q : ndarray
        Cochran's Q.
    i2 : ndarray
        ``I2`` as a fraction in [0, 1] (PyMARE reports it in percent).
    p_q : ndarray
        Chi-square survival function of ``q`` with ``k - 1`` degrees of freedom.
    q_z : ndarray
        Heterogeneity z, ``Phi^-1(1 - p_q)``, clipped to ``+-Q_Z_LIMIT``.
    """

    effect: NDArray[np.float64]
    variance: NDArray[np.float64]
    z: NDArray[np.float64]
    tau2: NDArray[np.float64]
    q: NDArray[np.float64]
    i2: NDArray[np.float64]
    p_q: NDArray[np.float64]
    q_z: NDArray[np.float64]


class WeightedSums(NamedTuple):
    """Fixed-effect sums over studies, the sufficient statistics of the DL tau2.

    Sums are additive over studies, so a leave-one-out (jackknife) or subgroup set of sums
    is the full sums minus (or restricted to) the studies' own terms; pass those to
    :func:`dl_from_sums`.

    Attributes
    ----------
    sum_w, sum_wy, sum_wy2, sum_w2 : ndarray
        ``sum w``, ``sum w y``, ``sum w y^2`` and ``sum w^2`` with ``w = 1 / variance``.
    k : int
        Number of studies summed.
    """

    sum_w: NDArray[np.float64]
    sum_wy: NDArray[np.float64]
    sum_wy2: NDArray[np.float64]
    sum_w2: NDArray[np.float64]
    k: int


class Heterogeneity(NamedTuple):
    """Result of :func:`dl_from_sums`: Cochran's Q, the DL tau2 and I2 (float64 arrays)."""

    q: NDArray[np.float64]
    tau2: NDArray[np.float64]
    i2: NDArray[np.float64]


def _study_first(
    effect: ArrayLike, variance: ArrayLike, axis: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate shapes and return float64 views/copies with the study axis first."""
    effect, variance = check_study_arrays(effect, variance, axis)
    k = effect.shape[axis]
    if k < 2:
        raise ValueError(
            f"The random-effects mean needs at least 2 studies along axis {axis}; {k} "
            "was provided. Select more studies for this analysis."
        )
    y = np.moveaxis(effect, axis, 0).astype(np.float64, copy=False)
    v = np.moveaxis(variance, axis, 0).astype(np.float64, copy=False)
    return y, v


def _tau2(q: NDArray[np.float64], c: NDArray[np.float64], k: ArrayLike) -> NDArray[np.float64]:
    """``max(0, (Q - (k - 1)) / C)``, 0 where ``C`` is 0 (one weight dominates)."""
    excess = q - (np.asarray(k, dtype=np.float64) - 1.0)
    tau2 = np.divide(excess, c, out=np.zeros(np.broadcast(excess, c).shape), where=c > 0)
    return np.maximum(tau2, 0.0)


def _i2(q: NDArray[np.float64], k: ArrayLike) -> NDArray[np.float64]:
    """``max(0, (Q - (k - 1)) / Q)``, 0 where ``Q`` is 0."""
    excess = q - (np.asarray(k, dtype=np.float64) - 1.0)
    i2 = np.divide(excess, q, out=np.zeros(np.broadcast(excess, q).shape), where=q > 0)
    return np.maximum(i2, 0.0)


def _pool_core(
    y: NDArray[np.float64], v: NDArray[np.float64]
) -> tuple[NDArray[np.float64], ...]:
    """DL pooling over axis 0 of float64 arrays; returns ``mu, sum_w_star, tau2, q``.

    ``Q`` is computed as ``sum w (y - mu_FE)^2``, algebraically the textbook formula but free of
    the cancellation of ``sum w y^2 - (sum w y)^2 / sum w`` when effects are large and close.
    Temporaries are reused in place: this is the inner loop of the randomization null.
    """
    k = y.shape[0]
    w = np.reciprocal(v)
    sum_w = w.sum(axis=0)
    tmp = w * y
    mu_fixed = tmp.sum(axis=0) / sum_w
    np.subtract(y, mu_fixed, out=tmp)
    tmp *= tmp
    tmp *= w
    q = tmp.sum(axis=0)
    w *= w
    c = sum_w - w.sum(axis=0) / sum_w
    tau2 = _tau2(q, c, k)
    np.add(v, tau2, out=tmp)
    np.reciprocal(tmp, out=tmp)
    sum_w_star = tmp.sum(axis=0)
    tmp *= y
    mu = tmp.sum(axis=0) / sum_w_star
    return mu, sum_w_star, tau2, q


def _pooled_z(y: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.float64]:
    """SDM-Z only, pooled over axis 0 (the randomization null needs nothing else)."""
    mu, sum_w_star, _, _ = _pool_core(y, v)
    return mu * np.sqrt(sum_w_star)


def heterogeneity_z(q: ArrayLike, k: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    """Chi-square p of Cochran's Q and its z, ``Phi^-1(1 - p_Q)``.

    Parameters
    ----------
    q : array_like
        Cochran's Q.
    k : int or array_like
        Number of studies (``k - 1`` degrees of freedom), broadcast against ``q``.

    Returns
    -------
    p_q : ndarray
        ``chi2.sf(q, k - 1)``.
    q_z : ndarray
        ``norm.isf(p_q)``; computed from the chi-square CDF where ``p_q > 0.5`` so the lower
        tail keeps its precision, and clipped to ``+-Q_Z_LIMIT`` (about 37.5) so it stays
        finite where ``p_q`` underflows to 0 or ``Q`` is 0.
    """
    q = np.asarray(q, dtype=np.float64)
    df = np.asarray(k, dtype=np.float64) - 1.0
    p_q = stats.chi2.sf(q, df)
    upper = stats.norm.isf(p_q)
    lower = stats.norm.ppf(stats.chi2.cdf(q, df))
    q_z = np.clip(np.where(p_q < 0.5, upper, lower), -Q_Z_LIMIT, Q_Z_LIMIT)
    return np.asarray(p_q, dtype=np.float64), np.asarray(q_z, dtype=np.float64)


def dersimonian_laird(effect: ArrayLike, variance: ArrayLike, axis: int = 0) -> RandomEffects:
    """Random-effects mean of study maps with the DerSimonian-Laird tau2.

    Parameters
    ----------
    effect : array_like
        Study effect sizes (Hedges g), any float dtype; studies along ``axis``.
    variance : array_like
        Their sampling variances, same shape, strictly positive and finite.
    axis : int, default 0
        The study axis; it is reduced.

    Returns
    -------
    RandomEffects
        ``effect, variance, z, tau2, q, i2, p_q, q_z`` as float64 arrays of the input shape
        without ``axis``. No NaN for finite effects and positive finite variances.

    Raises
    ------
    ValueError
        If the shapes differ, ``axis`` is out of range or fewer than 2 studies are given.

    Notes
    -----
    The Wald z is reported (no Knapp-Hartung adjustment): PyMARE's ``DerSimonianLaird``
    agrees with ``small_sample_correction="wald"``. ``Q`` is accumulated as
    ``sum w (y - mu_FE)^2``, which equals the textbook formula exactly in real arithmetic and
    avoids its cancellation. No Python loop over voxels.

    References
    ----------
    DerSimonian & Laird (1986), eq. 2-3; docs/methods.md, section 4.

    Examples
    --------
    >>> res = dersimonian_laird([0.2, 0.5, 0.8], [0.04, 0.05, 0.1])
    >>> round(float(res.effect), 6), round(float(res.tau2), 6)
    (0.438147, 0.022632)
    """
    y, v = _study_first(effect, variance, axis)
    k = y.shape[0]
    mu, sum_w_star, tau2, q = _pool_core(y, v)
    p_q, q_z = heterogeneity_z(q, k)
    fields = (mu, 1.0 / sum_w_star, mu * np.sqrt(sum_w_star), tau2, q, _i2(q, k), p_q, q_z)
    return RandomEffects(*(np.asarray(field, dtype=np.float64) for field in fields))


def weighted_sums(effect: ArrayLike, variance: ArrayLike, axis: int = 0) -> WeightedSums:
    """Sums ``sum w``, ``sum w y``, ``sum w y^2``, ``sum w^2`` over the study axis.

    Parameters
    ----------
    effect, variance : array_like
        As in :func:`dersimonian_laird`.
    axis : int, default 0
        The study axis; it is reduced.

    Returns
    -------
    WeightedSums
        float64 sums and the number of studies ``k``.
    """
    y, v = _study_first(effect, variance, axis)
    w = 1.0 / v
    wy = w * y
    return WeightedSums(
        sum_w=w.sum(axis=0),
        sum_wy=wy.sum(axis=0),
        sum_wy2=(wy * y).sum(axis=0),
        sum_w2=(w * w).sum(axis=0),
        k=y.shape[0],
    )


def dl_from_sums(
    sum_w: ArrayLike,
    sum_wy: ArrayLike,
    sum_wy2: ArrayLike,
    sum_w2: ArrayLike,
    k: ArrayLike,
) -> Heterogeneity:
    """Cochran's Q, the DL tau2 and I2 from fixed-effect sums (docs/methods.md, section 4).

    The first, sums-only half of the DerSimonian-Laird estimator. Because the sums are
    additive over studies, leave-one-out (jackknife) and subgroup estimates need no second
    pass over the data for tau2: subtract each study's terms from the totals and call this
    once with a leading batch axis. The mean itself then needs ``w* = 1 / (v + tau2)``, i.e.
    one pass with the data (:func:`pool_with_tau2`).

    Parameters
    ----------
    sum_w, sum_wy, sum_wy2, sum_w2 : array_like
        ``sum w``, ``sum w y``, ``sum w y^2`` and ``sum w^2`` with ``w = 1/variance``, e.g.
        the fields of :func:`weighted_sums`; broadcast together.
    k : int or array_like
        Number of studies in each sum (at least 2), broadcast against the sums.

    Returns
    -------
    Heterogeneity
        ``q`` (clipped at 0: the one-pass formula can round slightly negative), ``tau2``
        and ``i2`` as float64 arrays.

    Raises
    ------
    ValueError
        If any ``k`` is below 2.

    Notes
    -----
    ``Q = sum w y^2 - (sum w y)^2 / sum w`` loses relative precision when the effects are
    large compared with their spread; :func:`dersimonian_laird` uses a two-pass form instead,
    and the two agree to about ``1e-10`` relative for effect sizes of order 1.

    References
    ----------
    DerSimonian & Laird (1986), eq. 2-3; docs/methods.md, section 4.
    """
    k_arr = np.asarray(k)
    if np.any(k_arr < 2):
        raise ValueError(
            f"DerSimonian-Laird needs at least 2 studies per sum; 'k' has minimum "
            f"{int(np.min(k_arr))}. Select more studies."
        )
    sum_w = np.asarray(sum_w, dtype=np.float64)
    sum_wy = np.asarray(sum_wy, dtype=np.float64)
    q = np.maximum(np.asarray(sum_wy2, dtype=np.float64) - sum_wy * sum_wy / sum_w, 0.0)
    c = sum_w - np.asarray(sum_w2, dtype=np.float64) / sum_w
    return Heterogeneity(q=q, tau2=_tau2(q, c, k_arr), i2=_i2(q, k_arr))


def pool_with_tau2(
    effect: ArrayLike, variance: ArrayLike, tau2: ArrayLike, axis: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Random-effects mean for a given tau2: the second half of the DL estimator.

    Parameters
    ----------
    effect, variance : array_like
        As in :func:`dersimonian_laird`.
    tau2 : array_like
        Between-study variance, broadcast against the reduced shape.
    axis : int, default 0
        The study axis; it is reduced.

    Returns
    -------
    effect, variance, z : ndarray
        ``mu = sum w* y / sum w*``, ``1 / sum w*`` and ``mu / sqrt(var)``, float64.
    """
    y, v = _study_first(effect, variance, axis)
    w_star = 1.0 / (v + np.asarray(tau2, dtype=np.float64))
    sum_w_star = w_star.sum(axis=0)
    mu = (w_star * y).sum(axis=0) / sum_w_star
    return mu, 1.0 / sum_w_star, mu * np.sqrt(sum_w_star)
