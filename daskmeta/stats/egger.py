"""Egger's regression test for funnel-plot asymmetry at a peak (docs/methods.md, section 9).

Ordinary least squares of the standardized effect ``effect / se`` on the precision ``1 / se``
(``se = sqrt(variance)``), with an intercept. Without small-study effects the line runs through
the origin; an intercept far from 0 (t with ``k - 2`` degrees of freedom, two-sided p < 0.05)
suggests that small, imprecise studies report systematically different effects -- publication
bias or another small-study effect.

A pure NumPy/SciPy kernel with an explicit study axis: the simple-regression formulas are
closed-form, so any trailing shape (several peaks at once) is handled without a loop.

References
----------
Egger M, Davey Smith G, Schneider M, Minder C (1997). Bias in meta-analysis detected by a
simple, graphical test. BMJ 315:629-634, doi:10.1136/bmj.315.7109.629.
Sterne JAC et al. (2011). Recommendations for examining and interpreting funnel plot asymmetry
in meta-analyses of randomised controlled trials. BMJ 343:d4002 (at least 10 studies advised).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from daskmeta.stats._validation import check_study_arrays

__all__ = ["EggerResult", "egger_test"]


class EggerResult(NamedTuple):
    """Result of :func:`egger_test`: float64 scalars for 1-D input, else arrays.

    Attributes
    ----------
    intercept : float or ndarray
        Intercept of ``effect / se`` regressed on ``1 / se``: the asymmetry (bias) estimate.
    intercept_se : float or ndarray
        Its OLS standard error.
    t : float or ndarray
        ``intercept / intercept_se``.
    df : int
        ``k - 2``.
    p : float or ndarray
        Two-sided p of ``t`` on ``df`` degrees of freedom; bias suggested when below 0.05.
    slope : float or ndarray
        Slope of the regression, an estimate of the effect corrected for small-study bias.
    k : int
        Number of studies.
    """

    intercept: NDArray[np.float64] | np.float64
    intercept_se: NDArray[np.float64] | np.float64
    t: NDArray[np.float64] | np.float64
    df: int
    p: NDArray[np.float64] | np.float64
    slope: NDArray[np.float64] | np.float64
    k: int


def egger_test(effect: ArrayLike, variance: ArrayLike, axis: int = 0) -> EggerResult:
    """Egger's regression test of funnel-plot asymmetry.

    Parameters
    ----------
    effect : array_like
        Study effect sizes at one voxel (1-D), or several voxels with studies along ``axis``.
    variance : array_like
        Their sampling variances, same shape, strictly positive and finite.
    axis : int, default 0
        The study axis; it is reduced.

    Returns
    -------
    EggerResult
        ``intercept, intercept_se, t, df, p, slope, k``; float64 scalars for 1-D input,
        otherwise arrays of the input shape without ``axis``.

    Raises
    ------
    ValueError
        If the shapes differ, ``axis`` is out of range, fewer than 3 studies are given, a
        value is not finite or a variance not positive, or all studies share one variance
        (the precision does not vary, so the regression has no slope to fit).

    Notes
    -----
    With ``x = 1/se`` and ``y = effect/se``: ``slope = Sxy / Sxx``,
    ``intercept = ybar - slope xbar``, ``s2 = sum(residual^2) / (k - 2)`` and
    ``se(intercept) = sqrt(s2 (1/k + xbar^2 / Sxx))``, the textbook OLS formulas, equal to
    ``statsmodels`` ``OLS(y, add_constant(x))``. Where the points lie exactly on a line
    ``s2 = 0`` and ``t`` is infinite (``p = 0``) or NaN. Egger's test has low power with
    few studies; Sterne et al. (2011) advise at least 10.

    References
    ----------
    Egger et al. (1997), BMJ 315:629, the regression of the standard normal deviate on
    precision; docs/methods.md, section 9.

    Examples
    --------
    >>> res = egger_test([0.9, 0.7, 0.5, 0.35, 0.3], [0.2, 0.12, 0.06, 0.03, 0.02])
    >>> round(float(res.intercept), 3), res.df
    (1.967, 3)
    """
    effect, variance = check_study_arrays(effect, variance, axis)
    k = effect.shape[axis]
    if k < 3:
        raise ValueError(
            f"Egger's test needs at least 3 studies (t has k - 2 degrees of freedom); {k} "
            f"were given along axis {axis}."
        )
    y = np.moveaxis(effect, axis, 0).astype(np.float64, copy=False)
    v = np.moveaxis(variance, axis, 0).astype(np.float64, copy=False)
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError(
            "'effect' must be finite and 'variance' finite and strictly positive for Egger's "
            "test; drop the studies without a value at this voxel."
        )
    precision = 1.0 / np.sqrt(v)
    if np.any(np.ptp(precision, axis=0) == 0):
        raise ValueError(
            "All studies have the same variance, so the precision 1/se does not vary and "
            "Egger's regression is undefined; the test needs studies of different sizes."
        )
    snd = y * precision
    x_mean = precision.mean(axis=0)
    y_mean = snd.mean(axis=0)
    dx = precision - x_mean
    sxx = (dx * dx).sum(axis=0)
    slope = (dx * (snd - y_mean)).sum(axis=0) / sxx
    intercept = y_mean - slope * x_mean
    resid = snd - intercept - slope * precision
    df = k - 2
    s2 = (resid * resid).sum(axis=0) / df
    intercept_se = np.sqrt(s2 * (1.0 / k + x_mean * x_mean / sxx))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = intercept / intercept_se
    p = 2.0 * stats.t.sf(np.abs(t), df)
    return EggerResult(
        intercept=np.asarray(intercept, dtype=np.float64)[()],
        intercept_se=np.asarray(intercept_se, dtype=np.float64)[()],
        t=np.asarray(t, dtype=np.float64)[()],
        df=df,
        p=np.asarray(p, dtype=np.float64)[()],
        slope=np.asarray(slope, dtype=np.float64)[()],
        k=k,
    )
