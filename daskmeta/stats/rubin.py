"""Rubin's rules across the imputations of SDM-PSI (docs/methods.md, section 14).

SDM-PSI runs the meta-analysis once per imputation of the subject images and combines
the M results (Albajes-Eizagirre et al. 2019):

- estimates by Rubin's rules (Rubin 1987): ``beta = mean_m beta_m``,
  ``var = W + (1 + 1/m) B`` with ``W = mean_m var_m`` and ``B`` the sample variance of the
  ``beta_m`` (``ddof = 1``), ``z = beta / sqrt(var)`` against the normal distribution;
- tau2 and I2 as the square of the mean of their square roots (:func:`pool_square_root`);
- Cochran's Q by the D2 rule of Li, Meng, Raghunathan & Rubin (1991) for chi-square
  statistics (:func:`pool_chi_square`)::

      r   = (1 + 1/m) var_m(sqrt Q_m)                       (ddof = 1)
      F   = (mean_m Q_m / df - (m + 1) / (m - 1) r) / (1 + r),   clipped at 0
      df2 = (m - 1) / df^(3/m) (1 + 1/r)^2

  and reported back as the chi-square Q (``df = k - 1``) with the same p as
  ``F(df, df2)``. With ``r = 0`` (identical imputations) ``df2`` is infinite and
  ``F df ~ chi2(df)``, so the pooled Q is ``mean Q_m``; with one imputation (``m = 1``)
  there is no between-imputation variance and everything is that imputation's.

All functions are vectorised over voxels with the imputation axis given (and reduced);
sums are float64.

References
----------
Rubin DB (1987). Multiple Imputation for Nonresponse in Surveys. Wiley, New York.
Li KH, Meng XL, Raghunathan TE, Rubin DB (1991). Significance levels from repeated
p-values with multiply-imputed data. Stat Sin 1:65-92.
Albajes-Eizagirre A, Solanes A, Vieta E, Radua J (2019). Voxel-based meta-analysis via
permutation of subject images (PSI): theory and implementation for SDM. NeuroImage
186:174-184, doi:10.1016/j.neuroimage.2018.10.077.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

__all__ = ["PooledChiSquare", "PooledEstimate", "pool_chi_square", "pool_estimates", "pool_square_root"]

#: Smallest p reported: the chi-square Q of a p that underflows stays finite.
P_FLOOR = float(np.finfo(np.float64).tiny)


class PooledEstimate(NamedTuple):
    """Rubin's rules (float64 arrays, imputation axis removed).

    Attributes
    ----------
    effect : ndarray
        ``mean_m beta_m``.
    variance : ndarray
        ``W + (1 + 1/m) B``.
    z : ndarray
        ``effect / sqrt(variance)``.
    within : ndarray
        ``W = mean_m var_m``.
    between : ndarray
        ``B``, the sample variance of the ``beta_m`` (0 when ``m = 1``).
    """

    effect: NDArray[np.float64]
    variance: NDArray[np.float64]
    z: NDArray[np.float64]
    within: NDArray[np.float64]
    between: NDArray[np.float64]


class PooledChiSquare(NamedTuple):
    """The D2 rule (float64 arrays, imputation axis removed).

    Attributes
    ----------
    q : ndarray
        The chi-square statistic with ``df`` degrees of freedom and the same p as
        ``F(df, df2)`` (``chi2.isf(p, df)``; 0 where ``F`` is clipped to 0).
    p : ndarray
        ``P(F(df, df2) >= F)``, at least :data:`P_FLOOR`.
    f : ndarray
        The D2 statistic, clipped at 0.
    df2 : ndarray
        Denominator degrees of freedom (``inf`` where ``r = 0`` or ``m = 1``).
    r : ndarray
        Relative increase in variance due to the imputation.
    """

    q: NDArray[np.float64]
    p: NDArray[np.float64]
    f: NDArray[np.float64]
    df2: NDArray[np.float64]
    r: NDArray[np.float64]


def _first(values: ArrayLike, axis: int) -> NDArray[np.float64]:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0:
        raise ValueError("need an imputation axis; a scalar was provided")
    values = np.moveaxis(values, axis, 0)
    if values.shape[0] < 1:
        raise ValueError("need at least one imputation")
    return values


def _between(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Sample variance (ddof = 1) over axis 0; 0 for one imputation."""
    if values.shape[0] == 1:
        return np.zeros(values.shape[1:])
    return values.var(axis=0, ddof=1)


def pool_estimates(effect: ArrayLike, variance: ArrayLike, axis: int = 0) -> PooledEstimate:
    """Rubin's rules for an estimate and its variance across M imputations.

    Parameters
    ----------
    effect, variance : array_like
        Each imputation's estimate and its sampling variance, the imputations along
        ``axis`` (same shapes).
    axis : int, default 0
        The imputation axis; it is reduced.

    Returns
    -------
    PooledEstimate

    Notes
    -----
    ``beta = mean beta_m``; ``var = mean var_m + (1 + 1/m) var_m(beta_m)``;
    ``z = beta / sqrt(var)`` (normal reference, as SDM-PSI; Rubin 1987, section 3.1;
    docs/methods.md, section 14).

    Examples
    --------
    >>> res = pool_estimates([0.5, 0.7], [0.04, 0.06])
    >>> round(float(res.variance), 6)
    0.08
    """
    beta = _first(effect, axis)
    var = _first(variance, axis)
    if beta.shape != var.shape:
        raise ValueError(f"effect and variance shapes differ: {beta.shape} and {var.shape}")
    m = beta.shape[0]
    within = var.mean(axis=0)
    between = _between(beta)
    total = within + (1.0 + 1.0 / m) * between
    mean = beta.mean(axis=0)
    return PooledEstimate(mean, total, mean / np.sqrt(total), within, between)


def pool_square_root(values: ArrayLike, axis: int = 0) -> NDArray[np.float64]:
    """``(mean_m sqrt(x_m))^2``: how SDM-PSI pools tau2 and I2 across imputations.

    Negative inputs (rounding of a non-negative quantity) count as 0.
    """
    values = _first(values, axis)
    return np.sqrt(np.maximum(values, 0.0)).mean(axis=0) ** 2


def pool_chi_square(q: ArrayLike, df: ArrayLike, axis: int = 0) -> PooledChiSquare:
    """The D2 rule of Li et al. (1991) for chi-square statistics (Cochran's Q).

    Parameters
    ----------
    q : array_like
        Each imputation's chi-square statistic, imputations along ``axis``.
    df : array_like
        Its degrees of freedom (``k - 1`` for Q), broadcast against the reduced shape;
        positive.
    axis : int, default 0
        The imputation axis; it is reduced.

    Returns
    -------
    PooledChiSquare

    Notes
    -----
    ``r = (1 + 1/m) var(sqrt Q_m)``,
    ``F = max(0, (mean Q_m / df - (m + 1)/(m - 1) r) / (1 + r))``,
    ``df2 = (m - 1) df^(-3/m) (1 + 1/r)^2``, ``p = P(F(df, df2) >= F)`` and the reported
    ``Q = chi2.isf(p, df)``. Where ``r = 0`` (also ``m = 1``): ``F = mean Q / df``,
    ``df2 = inf``, ``p = chi2.sf(F df, df)`` and ``Q = mean Q``. p is floored at
    :data:`P_FLOOR` so that Q stays finite (docs/methods.md, section 14).
    """
    qs = _first(q, axis)
    m = qs.shape[0]
    df = np.asarray(df, dtype=np.float64)
    if np.any(df <= 0):
        raise ValueError("df must be positive")
    mean_q = qs.mean(axis=0)
    r = (1.0 + 1.0 / m) * _between(np.sqrt(np.maximum(qs, 0.0)))
    shape = np.broadcast_shapes(mean_q.shape, df.shape)
    mean_q, r, df = (np.broadcast_to(x, shape) for x in (mean_q, r, df))
    spread = r > 0
    correction = (m + 1.0) / (m - 1.0) if m > 1 else 0.0
    f = np.maximum((mean_q / df - correction * r) / (1.0 + r), 0.0)
    with np.errstate(divide="ignore"):
        df2 = np.where(spread, (m - 1.0) / df ** (3.0 / m) * (1.0 + 1.0 / np.where(spread, r, 1.0)) ** 2,
                       np.inf)
    p = np.where(spread, stats.f.sf(f, df, np.where(spread, df2, 1.0)), stats.chi2.sf(f * df, df))
    p = np.maximum(p, P_FLOOR)
    pooled_q = np.where(spread, stats.chi2.isf(p, df), f * df)
    pooled_q = np.where(f > 0, pooled_q, 0.0)
    return PooledChiSquare(*(np.asarray(x, dtype=np.float64) for x in (pooled_q, p, f, df2, r)))
