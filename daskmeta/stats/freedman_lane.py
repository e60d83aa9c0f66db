"""SDM-PSI's linear models: multiply imputed meta-regression and its Freedman-Lane permutations.

docs/methods.md, section 14.5. A PSI linear model tests one coefficient (the first regressor)
of the random-effects meta-regression ``y = X beta`` of section 8, fitted per imputation and
voxel and pooled across imputations by Rubin's rules; any further regressors are covariates
of no interest. Its permutation null exchanges studies, not subjects, by Freedman and Lane
(1983): the reduced model ``Z`` (``X`` without the tested column) is fitted by fixed-effect
weighted least squares, and permutation ``pi`` gives study ``s`` the data

::

    y*_s = (Z gamma)_s + r_pi(s),      r = y - Z gamma
    v*_s = a_pi(s) + c_pi(s) (y*_s)^2

A residual keeps the variance model (the sample sizes) of the study it came from, so with one
regressor (``Z = 1``) ``y*_s = y_pi(s)`` and ``v*_s = v_pi(s)``: the study's effect and
variance move together and the test is the permutation of the covariate of Higgins and
Thompson (2004). The same permutation serves every imputation and every voxel, so the maxima
of the permuted maps keep the spatial dependence that family-wise error needs.

Arrays in, arrays out: studies on axis 0, any voxel shape after it (e.g. ``(k, M, V)``: the
imputations are just more "voxels" for the fits; Rubin's rules then reduce them).

References
----------
Freedman D, Lane D (1983). A nonstochastic interpretation of reported significance levels.
J Bus Econ Stat 1:292-298.
Higgins JPT, Thompson SG (2004). Controlling the risk of spurious findings from
meta-regression. Stat Med 23:1663-1682.
Winkler AM, Ridgway GR, Webster MA, Smith SM, Nichols TE (2014). Permutation inference for the
general linear model. NeuroImage 92:381-397.
Albajes-Eizagirre A, Solanes A, Vieta E, Radua J (2019). Voxel-based meta-analysis via
permutation of subject images (PSI): theory and implementation for SDM. NeuroImage 186:174-184.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.stats.regression import meta_regression
from daskmeta.stats.rubin import pool_chi_square, pool_estimates, pool_square_root

__all__ = ["PooledModel", "TESTED_COLUMN", "freedman_lane", "pool_model", "reduced_design", "reduced_fit"]

#: The tested coefficient of a PSI linear model: the first regressor (after the intercept).
TESTED_COLUMN = 1


class PooledModel(NamedTuple):
    """Rubin-pooled tested coefficient of a meta-regression (imputation axis removed).

    Attributes
    ----------
    effect, variance, z : ndarray
        The tested coefficient (the slope over the regressor's rescaled [0, 1] range), its
        total variance ``W + (1 + 1/M) B`` and ``effect / sqrt(variance)``.
    tau2, i2 : ndarray
        Residual between-study variance and residual I2, pooled as the square of the mean of
        their square roots.
    q : ndarray
        Residual heterogeneity ``Q_E`` pooled by the D2 rule, as the chi-square with ``k - p``
        degrees of freedom of the same p.
    """

    effect: NDArray[np.float64]
    variance: NDArray[np.float64]
    z: NDArray[np.float64]
    tau2: NDArray[np.float64]
    i2: NDArray[np.float64]
    q: NDArray[np.float64]


def reduced_design(design: ArrayLike, tested: int = TESTED_COLUMN) -> NDArray[np.float64]:
    """The design without its tested column (the covariates of no interest)."""
    x = np.asarray(design, dtype=np.float64)
    if x.ndim != 2 or not 0 < tested < x.shape[1]:
        raise ValueError(f"the tested column {tested} must be a regressor of the design (shape {x.shape})")
    return np.delete(x, tested, axis=1)


def reduced_fit(effect: ArrayLike, variance: ArrayLike, reduced: ArrayLike) -> NDArray[np.float64]:
    """Fitted values ``Z gamma`` of the fixed-effect weighted least-squares fit, per voxel.

    Parameters
    ----------
    effect, variance : array_like, shape (k, ...)
        Study effects and variances, studies on axis 0.
    reduced : array_like, shape (k, r)
        The reduced design (``r >= 1``; its first column the intercept).

    Returns
    -------
    ndarray, shape (k, ...)
        ``Z (Z'WZ)^-1 Z'W y`` with ``W = diag(1 / v)`` (float64).
    """
    y = np.asarray(effect, dtype=np.float64)
    w = 1.0 / np.asarray(variance, dtype=np.float64)
    z = np.asarray(reduced, dtype=np.float64)
    k, r = z.shape
    shape = y.shape
    y, w = y.reshape(k, -1), w.reshape(k, -1)
    if r == 1:  # the weighted mean
        column = z[:, 0]
        gamma = (column[:, None] * w * y).sum(axis=0) / (column[:, None] ** 2 * w).sum(axis=0)
        return (column[:, None] * gamma).reshape(shape)
    ztwz = np.einsum("sa,sb,sn->nab", z, z, w)
    ztwy = np.einsum("sa,sn->na", z, w * y)
    gamma = np.linalg.solve(ztwz, ztwy[..., None])[..., 0]  # (N, r)
    return (z @ gamma.T).reshape(shape)


def freedman_lane(
    effect: ArrayLike,
    a: ArrayLike,
    c: ArrayLike,
    reduced: ArrayLike,
    order: ArrayLike,
    fitted: ArrayLike | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The permuted study data ``(y*, v*)`` of one Freedman-Lane permutation.

    Parameters
    ----------
    effect : array_like, shape (k, ...)
        Study effects (Hedges g), studies on axis 0.
    a, c : array_like, shape (k,)
        Each study's variance model ``v(y) = a + c y^2`` (docs/methods.md, section 3.6).
    reduced : array_like, shape (k, r)
        The reduced design (:func:`reduced_design`).
    order : array_like of int, shape (k,)
        The permutation: study ``s`` receives the residual of study ``order[s]``.
    fitted : array_like, optional
        ``Z gamma`` from :func:`reduced_fit` (computed here when not given; pass it to share
        it between permutations).

    Returns
    -------
    (ndarray, ndarray)
        ``y* = Z gamma + r[order]`` and ``v* = a[order] + c[order] y*^2`` (float64, the shape
        of ``effect``).

    Notes
    -----
    With the identity order, ``y*`` is ``y`` up to rounding. docs/methods.md, section 14.5.
    """
    y = np.asarray(effect, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    order = np.asarray(order)
    k = y.shape[0]
    if sorted(order.tolist()) != list(range(k)):
        raise ValueError(f"'order' must be a permutation of the {k} studies")
    expand = (slice(None),) + (None,) * (y.ndim - 1)
    if fitted is None:
        fitted = reduced_fit(y, a[expand] + c[expand] * y * y, reduced)
    fitted = np.asarray(fitted, dtype=np.float64)
    y_star = fitted + (y - fitted)[order]
    v_star = a[order][expand] + c[order][expand] * y_star * y_star
    return y_star, v_star


def pool_model(
    effect: ArrayLike, variance: ArrayLike, design: ArrayLike, tested: int = TESTED_COLUMN
) -> PooledModel:
    """Meta-regression per imputation, then Rubin's rules on the tested coefficient.

    Parameters
    ----------
    effect, variance : array_like, shape (k, M, ...)
        Studies on axis 0, imputations on axis 1, voxels after.
    design : array_like, shape (k, p)
        ``[1, x01, ...]`` (docs/methods.md, section 8).
    tested : int
        The tested column of the design.

    Returns
    -------
    PooledModel

    Notes
    -----
    Each imputation's fit is :func:`daskmeta.stats.regression.meta_regression` (method-of-
    moments tau2, Wald covariance). Residual ``I2 = max(0, (Q_E - (k - p)) / Q_E)``.
    docs/methods.md, sections 8 and 14.5.
    """
    fit = meta_regression(effect, variance, design, axis=0)
    beta, var = fit.beta[tested], fit.cov[tested, tested]
    pooled = pool_estimates(beta, var, axis=0)
    df = fit.df
    i2 = np.divide(fit.q_e - df, fit.q_e, out=np.zeros_like(fit.q_e), where=fit.q_e > 0)
    return PooledModel(
        pooled.effect, pooled.variance, pooled.z,
        pool_square_root(fit.tau2, axis=0), pool_square_root(np.maximum(i2, 0.0), axis=0),
        pool_chi_square(fit.q_e, df, axis=0).q,
    )
