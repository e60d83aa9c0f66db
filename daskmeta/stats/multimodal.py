"""Multimodal overlap of two analyses: the conservative union-bound p-value (docs/methods.md, section 10).

Pure NumPy/SciPy kernels. Two meta-analyses of the same voxels (e.g. grey matter volume and
resting-state activity) are abnormal in the same voxel, in the same direction, only if both are;
the probability that at least one of them is a false positive is at most the union of the two
errors, ``p_mm = p1 + p2 - p1 * p2`` (Radua et al. 2013). SDM "takes the error of the p-values
into account": a randomization p-value ``p = (1 + n) / (1 + N)`` estimates a tail probability
from ``n`` of ``N`` null values, so each p is replaced by the upper one-sided 95%
Clopper-Pearson bound of ``n / N`` before combining.

The p-values of :func:`daskmeta.stats.pvalues.p_from_histogram` have exactly that form, so the
null count ``n`` is recovered from ``p`` and ``N`` (:func:`null_count`) rather than stored.

References
----------
Radua J, Romeo M, Mataix-Cols D, Fusar-Poli P (2013). A general approach for combining voxel-
based meta-analyses conducted in different neuroimaging modalities. Curr Med Chem 20:462-466.
Clopper CJ, Pearson ES (1934). The use of confidence or fiducial limits illustrated in the case
of the binomial. Biometrika 26:404-413.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from daskmeta.errors import plain

__all__ = ["DEFAULT_LEVEL", "MultimodalP", "clopper_pearson_upper", "multimodal_p", "null_count"]

#: One-sided confidence level of the Clopper-Pearson bound (docs/methods.md, section 10: one-sided 95%).
DEFAULT_LEVEL: float = 0.95


class MultimodalP(NamedTuple):
    """Overlap maps of two analyses, from :func:`multimodal_p` (arrays of the broadcast shape).

    Attributes
    ----------
    z : ndarray of float64
        Where both z have the same sign: that sign times the smaller ``|z|`` (the height used
        for peaks and the cluster peak criterion); 0 elsewhere.
    p : ndarray of float64
        Where both z have the same sign: the union bound ``p_mm``; 1 elsewhere.
    z_opposite : ndarray of float64
        Where the signs differ: the sign of analysis 1 times the smaller ``|z|``; 0 elsewhere.
    p_opposite : ndarray of float64
        Where the signs differ: ``p_mm``; 1 elsewhere.
    """

    z: NDArray[np.float64]
    p: NDArray[np.float64]
    z_opposite: NDArray[np.float64]
    p_opposite: NDArray[np.float64]


def _check_n(n_null: ArrayLike, name: str) -> NDArray[np.int64]:
    n = np.asarray(n_null)
    if not (np.issubdtype(n.dtype, np.integer) or (np.issubdtype(n.dtype, np.floating)
                                                   and np.all(n == np.round(n)))):
        raise TypeError(f"'{name}' must be an integer count of null values; {plain(n)!r} was provided")
    if np.any(n < 1):
        raise ValueError(f"'{name}' must be >= 1 (the null holds no values); {plain(n)!r} was provided")
    return n.astype(np.int64)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"'level' must be in (0, 1), e.g. 0.95; {level} was provided")


def null_count(p: ArrayLike, n_null: ArrayLike) -> NDArray[np.int64]:
    """The null count ``n`` behind a randomization p-value ``p = (1 + n) / (1 + N)``.

    ``n = round(p * (1 + N) - 1)``, clipped to ``[0, N]``. A p-value that is not of this form
    (not from a null of ``N`` values) is rounded to the nearest count.

    Parameters
    ----------
    p : array_like
        One-tailed p-values in ``[0, 1]``, e.g. from
        :func:`~daskmeta.stats.pvalues.p_from_histogram`; no NaN.
    n_null : int or array_like of int
        ``N``, the number of null values (``hist.sum()``); broadcast against ``p``.

    Returns
    -------
    ndarray of int64
        ``n``, the broadcast shape of ``p`` and ``n_null``.

    Examples
    --------
    >>> null_count([0.01, 0.05, 1.0], 99)
    array([ 0,  4, 99])
    """
    p = np.asarray(p, dtype=np.float64)
    if np.isnan(p).any():
        raise ValueError("'p' holds NaN; null counts exist only for finite p-values")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"'p' must lie in [0, 1]; values in [{p.min()}, {p.max()}] were provided")
    n = _check_n(n_null, "n_null")
    count = np.rint(p * (1.0 + n) - 1.0).astype(np.int64)
    return np.asarray(np.clip(count, 0, n), dtype=np.int64)


def clopper_pearson_upper(
    count: ArrayLike, n: ArrayLike, level: float = DEFAULT_LEVEL
) -> NDArray[np.float64]:
    """One-sided upper Clopper-Pearson confidence bound of a binomial proportion ``count / n``.

    The ``level`` quantile of ``Beta(count + 1, n - count)``; 1 when ``count == n``. With
    ``level = 0.95`` it equals the upper limit of the two-sided exact 90% interval.

    Parameters
    ----------
    count : array_like of int
        Successes (here: null values at least as extreme), in ``[0, n]``.
    n : int or array_like of int
        Trials (here: null values), ``>= 1``; broadcast against ``count``.
    level : float, default 0.95
        One-sided confidence level in (0, 1).

    Returns
    -------
    ndarray of float64
        The upper bound, the broadcast shape of ``count`` and ``n``.

    Notes
    -----
    For ``level >= 1 - 1/e`` (about 0.632) the bound is at least ``(1 + count) / (1 + n)``,
    the mean of that Beta distribution (a log-concave distribution puts at most ``1 - 1/e``
    of its mass below its mean), so replacing a randomization p-value by it is conservative.

    References
    ----------
    Clopper CJ, Pearson ES (1934). Biometrika 26:404-413.

    Examples
    --------
    >>> float(clopper_pearson_upper(0, 99))  # 1 - 0.05 ** (1 / 99)
    0.0298066...
    """
    _check_level(level)
    n = _check_n(n, "n")
    count = np.asarray(count)
    if not np.issubdtype(count.dtype, np.integer):
        raise TypeError(f"'count' must hold integers; dtype {count.dtype} was provided")
    count, n = np.broadcast_arrays(count.astype(np.int64), n)
    if np.any((count < 0) | (count > n)):
        raise ValueError("'count' must lie in [0, n]")
    full = count == n
    upper = np.ones(count.shape, dtype=np.float64)
    if n.ndim == 0 or np.all(n == n.flat[0]):
        # p-values from one null histogram take few distinct counts: evaluate each once
        values, inverse = np.unique(count[~full], return_inverse=True)
        n_scalar = int(n.flat[0]) if n.size else 1
        upper[~full] = stats.beta.ppf(level, values + 1, n_scalar - values)[inverse]
    else:
        upper[~full] = stats.beta.ppf(level, count[~full] + 1, (n - count)[~full])
    return upper


def multimodal_p(
    z1: ArrayLike,
    p1: ArrayLike,
    n1: ArrayLike,
    z2: ArrayLike,
    p2: ArrayLike,
    n2: ArrayLike,
    level: float = DEFAULT_LEVEL,
) -> MultimodalP:
    """Voxel-wise overlap of two analyses: smaller ``|z|`` and conservative union-bound p.

    Each analysis' one-tailed p (of its own z's sign, ``p = (1 + n) / (1 + N)``) is replaced by
    the upper Clopper-Pearson bound ``u`` of its null count ``n / N``; the two are combined as
    the probability that at least one is a false positive, ``p_mm = u1 + u2 - u1 * u2``
    (docs/methods.md, section 10). Same-sign voxels (both increased, or both decreased) go to ``z``/``p``,
    opposite-sign voxels to ``z_opposite``/``p_opposite``. A voxel where either z is 0 overlaps
    in neither (z 0, p 1); a NaN in any input gives NaN in all four outputs.

    Parameters
    ----------
    z1, z2 : array_like
        SDM-Z of analyses 1 and 2 (broadcast together).
    p1, p2 : array_like
        Their one-tailed randomization p-values (for the sign of z), as from
        :func:`~daskmeta.stats.pvalues.p_from_histogram`.
    n1, n2 : int
        Number of null values behind ``p1`` and ``p2`` (each null histogram's sum).
    level : float, default 0.95
        One-sided level of the Clopper-Pearson bounds.

    Returns
    -------
    MultimodalP
        ``z, p, z_opposite, p_opposite`` as float64 arrays.

    References
    ----------
    Radua J et al. (2013). Curr Med Chem 20:462-466 (the multimodal overlap).
    Clopper CJ, Pearson ES (1934). Biometrika 26:404-413.

    Examples
    --------
    >>> mm = multimodal_p([3.0, 3.0], [0.05, 0.05], 99, [2.5, -2.5], [0.01, 0.01], 99)
    >>> mm.z, mm.z_opposite
    (array([2.5, 0. ]), array([0. , 2.5]))
    """
    z1, p1, z2, p2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (z1, p1, z2, p2)))
    missing = np.isnan(z1) | np.isnan(p1) | np.isnan(z2) | np.isnan(p2)
    upper1 = clopper_pearson_upper(null_count(np.where(missing, 1.0, p1), n1), n1, level)
    upper2 = clopper_pearson_upper(null_count(np.where(missing, 1.0, p2), n2), n2, level)
    p_mm = upper1 + upper2 - upper1 * upper2

    sign1, sign2 = np.sign(z1), np.sign(z2)
    overlap = (sign1 != 0) & (sign2 != 0) & ~missing
    same = overlap & (sign1 == sign2)
    opposite = overlap & (sign1 != sign2)
    height = sign1 * np.minimum(np.abs(z1), np.abs(z2))

    fields = (
        np.where(same, height, 0.0), np.where(same, p_mm, 1.0),
        np.where(opposite, height, 0.0), np.where(opposite, p_mm, 1.0),
    )
    for field in fields:
        field[missing] = np.nan
    return MultimodalP(*fields)
