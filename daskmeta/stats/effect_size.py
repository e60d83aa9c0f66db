"""Effect sizes: Hedges-corrected g and its variance, and statistic conversions.

Pure NumPy/SciPy functions (docs/methods.md, sections 1 and 2). ``n2`` may be NaN for a
one-sample design; every function broadcasts over arrays.

References
----------
Hedges LV (1981). Distribution theory for Glass's estimator of effect size and related
estimators. J Educ Stat 6:107-128.
Radua J et al. (2012). A new meta-analytic method for neuroimaging studies that combines
reported peak coordinates and statistical parametric maps. Eur Psychiatry 27:605-611.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats


def degrees_of_freedom(n1: ArrayLike, n2: ArrayLike | None = None) -> NDArray[np.float64]:
    """Degrees of freedom of the study's t test.

    ``n1 + n2 - 2`` for two samples, ``n1 - 1`` when ``n2`` is missing (NaN or None).
    """
    n1 = np.asarray(n1, dtype=np.float64)
    if n2 is None:
        return n1 - 1.0
    n2 = np.asarray(n2, dtype=np.float64)
    return np.where(np.isnan(n2), n1 - 1.0, n1 + np.nan_to_num(n2) - 2.0)


def hedges_j(df: ArrayLike) -> NDArray[np.float64]:
    """Exact small-sample correction factor J(df) of Hedges (1981).

    ``J = Gamma(df/2) / (sqrt(df/2) * Gamma((df-1)/2))``, evaluated with ``gammaln``.
    """
    df = np.asarray(df, dtype=np.float64)
    return np.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / np.sqrt(df / 2)


def variance_constant(df: ArrayLike) -> NDArray[np.float64]:
    """The constant ``c = 1 - (df - 2) / (df * J^2)`` of the variance of g (docs/methods.md, section 2)."""
    df = np.asarray(df, dtype=np.float64)
    return 1.0 - (df - 2.0) / (df * hedges_j(df) ** 2)


def sampling_term(n1: ArrayLike, n2: ArrayLike | None = None) -> NDArray[np.float64]:
    """``1/n1 + 1/n2`` (two-sample) or ``1/n1`` (one-sample): the variance of g at g = 0."""
    n1 = np.asarray(n1, dtype=np.float64)
    if n2 is None:
        return 1.0 / n1
    n2 = np.asarray(n2, dtype=np.float64)
    return np.where(np.isnan(n2), 1.0 / n1, 1.0 / n1 + 1.0 / np.where(np.isnan(n2), 1.0, n2))


def hedges_g(t: ArrayLike, n1: ArrayLike, n2: ArrayLike | None = None) -> NDArray[np.float64]:
    """Hedges-corrected standardized mean difference from a t statistic.

    Two-sample: ``g = J * t * sqrt(1/n1 + 1/n2)``; one-sample: ``g = J * t / sqrt(n)``.

    Examples
    --------
    >>> round(float(hedges_g(4.0, 20, 20)), 6)
    1.239752
    """
    df = degrees_of_freedom(n1, n2)
    return hedges_j(df) * np.asarray(t, dtype=np.float64) * np.sqrt(sampling_term(n1, n2))


def g_variance(g: ArrayLike, n1: ArrayLike, n2: ArrayLike | None = None) -> NDArray[np.float64]:
    """Variance of Hedges g: ``1/n1 + 1/n2 + c * g^2`` (one-sample ``1/n + c * g^2``)."""
    df = degrees_of_freedom(n1, n2)
    g = np.asarray(g, dtype=np.float64)
    return sampling_term(n1, n2) + variance_constant(df) * g**2


def t_from_z(z: ArrayLike, df: ArrayLike) -> NDArray[np.float64]:
    """Convert a z statistic to the t with the same one-tailed p at ``df`` degrees of freedom.

    ``t = sign(z) * T_df^-1(Phi(|z|))``, through survival functions so large z stay finite.
    """
    z = np.asarray(z, dtype=np.float64)
    # beyond z ~ 37 the normal tail underflows; the smallest double keeps t finite and huge
    p = np.maximum(stats.norm.sf(np.abs(z)), np.finfo(np.float64).tiny)
    return np.sign(z) * stats.t.isf(p, df)


def t_from_p(p: ArrayLike, df: ArrayLike, sign: ArrayLike = 1.0) -> NDArray[np.float64]:
    """Convert a one-tailed p-value to ``|t| = T_df^-1(1 - p)``, with the given sign."""
    p = np.asarray(p, dtype=np.float64)
    return np.sign(sign) * stats.t.isf(p, df)
