"""Random-effects meta-regression of study maps, one model per voxel (docs/methods.md, section 8).

Pure NumPy kernels: arrays in, arrays out, the study axis given explicitly and reduced. The
design matrix ``X`` (k studies x p columns) is shared by every voxel; effects and variances
vary by voxel. Every sum is accumulated in float64.

Per voxel, with ``y = effect``, ``v = variance``, ``W = diag(1/v)``::

    beta_FE = (X'WX)^-1 X'Wy                               fixed-effect WLS fit
    Q_E     = sum w (y - X beta_FE)^2                      residual heterogeneity, df k - p
    tau2    = max(0, (Q_E - (k - p)) / (tr(W) - tr((X'WX)^-1 X'W^2X)))
    W*      = diag(1/(v + tau2))
    beta    = (X'W*X)^-1 X'W*y,   cov = (X'W*X)^-1,   z = beta / sqrt(diag cov)

With the intercept-only design ``X = 1`` this is exactly the DerSimonian-Laird mean of
:mod:`daskmeta.stats.random_effects`. SDM rescales a regressor to [0, 1] (:func:`rescale`) and
fits ``[1, x01]``, so that ``beta_0`` is the prediction at the covariate's minimum (output
``0``), ``beta_0 + beta_1`` the prediction at its maximum (``1``) and ``beta_1`` the slope
(``1m0``); :func:`linear_contrasts` computes the three with their z. A group comparison is the
same model with a 0/1 regressor.

References
----------
DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Control Clin Trials
7:177-188, doi:10.1016/0197-2456(86)90046-2.
Raudenbush SW (2009). Analyzing effect sizes: random-effects models. In Cooper H, Hedges LV,
Valentine JC (eds.), The Handbook of Research Synthesis and Meta-Analysis, 2nd ed., Russell
Sage Foundation, pp. 295-315 (method-of-moments tau2 for meta-regression, eq. 16.21).
Viechtbauer W (2010). Conducting meta-analyses in R with the metafor package. J Stat Softw
36(3):1-48, doi:10.18637/jss.v036.i03 (``rma(method="DL")`` with moderators).
Radua J, Mataix-Cols D (2009). Voxel-wise meta-analysis of grey matter changes in
obsessive-compulsive disorder. Br J Psychiatry 195:393-402 (SDM linear models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.errors import plain
from daskmeta.stats._validation import check_study_arrays
from daskmeta.stats.null import N_HIST, histogram, relocation_source

__all__ = [
    "SDM_CONTRASTS",
    "Contrast",
    "MetaRegression",
    "linear_contrasts",
    "meta_regression",
    "original_units",
    "rescale",
]

#: SDM's outputs of a ``[1, x01]`` model: prediction at the minimum (``0``), at the maximum
#: (``1``) and their difference, the slope (``1m0``). For a 0/1 group regressor: group A's
#: mean, group B's mean and B - A.
SDM_CONTRASTS: Mapping[str, tuple[float, ...]] = MappingProxyType(
    {"0": (1.0, 0.0), "1": (1.0, 1.0), "1m0": (0.0, 1.0)}
)


class MetaRegression(NamedTuple):
    """Result of :func:`meta_regression`; float64 arrays, ``...`` the voxel shape.

    Attributes
    ----------
    beta : ndarray, shape (p, ...)
        Random-effects coefficients ``(X'W*X)^-1 X'W*y``.
    cov : ndarray, shape (p, p, ...)
        Their covariance ``(X'W*X)^-1`` (Wald; no Knapp-Hartung adjustment).
    z : ndarray, shape (p, ...)
        ``beta / sqrt(diag(cov))``: SDM-Z of each coefficient, for the randomization null.
    tau2 : ndarray, shape (...)
        Method-of-moments (DerSimonian-Laird) residual between-study variance.
    q_e : ndarray, shape (...)
        Residual heterogeneity ``Q_E`` of the fixed-effect fit.
    df : int
        ``k - p``, the degrees of freedom of ``Q_E``.
    """

    beta: NDArray[np.float64]
    cov: NDArray[np.float64]
    z: NDArray[np.float64]
    tau2: NDArray[np.float64]
    q_e: NDArray[np.float64]
    df: int


class Contrast(NamedTuple):
    """One linear combination ``c' beta`` of :func:`linear_contrasts`, per voxel.

    Attributes
    ----------
    estimate : ndarray
        ``c' beta``.
    variance : ndarray
        ``c' cov c``.
    z : ndarray
        ``estimate / sqrt(variance)``.
    """

    estimate: NDArray[np.float64]
    variance: NDArray[np.float64]
    z: NDArray[np.float64]


def rescale(x: ArrayLike) -> tuple[NDArray[np.float64], float, float]:
    """Rescale a study-level regressor to [0, 1]: its minimum to 0, its maximum to 1.

    Parameters
    ----------
    x : array_like, shape (k,)
        One value per study (age, % medicated, a 0/1 group code, ...).

    Returns
    -------
    x01 : ndarray, shape (k,)
        ``(x - low) / (high - low)``, float64.
    low, high : float
        The minimum and maximum of ``x``, to map results back with :func:`original_units`.

    Raises
    ------
    ValueError
        If ``x`` is not 1-D, has a NaN or infinite value (drop studies missing the covariate
        first, docs/methods.md, section 8) or is constant (it would be collinear with the intercept).

    References
    ----------
    Spec section 8; Radua & Mataix-Cols (2009).

    Examples
    --------
    >>> x01, low, high = rescale([20, 30, 40])
    >>> x01.tolist(), low, high
    ([0.0, 0.5, 1.0], 20.0, 40.0)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"'x' must be 1-D, one value per study; got shape {x.shape}.")
    if x.size == 0 or not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x)).tolist()
        raise ValueError(
            f"'x' must be non-empty and finite; non-finite values at study positions {bad}. "
            "Drop the studies missing the covariate before the meta-regression."
        )
    low, high = float(x.min()), float(x.max())
    if high == low:
        raise ValueError(
            f"'x' is constant ({plain(low)!r} for all {x.size} studies); a constant regressor is "
            "collinear with the intercept. Choose a covariate that varies across studies."
        )
    return (x - low) / (high - low), low, high


def original_units(
    intercept: ArrayLike, slope: ArrayLike, low: float, high: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Map a line fitted on the rescaled regressor back to the covariate's own units.

    ``intercept + slope * x01`` with ``x01 = (x - low) / (high - low)`` equals
    ``a + b * x`` with ``b = slope / (high - low)`` and ``a = intercept - b * low``.

    Parameters
    ----------
    intercept, slope : array_like
        ``beta_0`` and ``beta_1`` of a ``[1, x01]`` model (broadcast together).
    low, high : float
        As returned by :func:`rescale`.

    Returns
    -------
    intercept, slope : ndarray
        The same line in the covariate's original units, float64.
    """
    if not high > low:
        raise ValueError(f"'high' must exceed 'low'; got low={plain(low)!r}, high={plain(high)!r}.")
    b = np.asarray(slope, dtype=np.float64) / (high - low)
    return np.asarray(intercept, dtype=np.float64) - b * low, b


def _validate(
    effect: ArrayLike, variance: ArrayLike, design: ArrayLike, axis: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], tuple[int, ...]]:
    """Return ``y, v`` as float64 (k, V), the float64 design and the voxel shape."""
    effect, variance = check_study_arrays(effect, variance, axis)
    x = np.asarray(design, dtype=np.float64)
    k = effect.shape[axis]
    if x.ndim != 2 or x.shape[0] != k:
        raise ValueError(
            f"'design' must be 2-D with one row per study, shape ({k}, p); got shape {x.shape}. "
            "For one regressor use np.column_stack([np.ones(k), x01])."
        )
    k, p = x.shape
    if p == 0 or not np.all(np.isfinite(x)):
        raise ValueError(
            "'design' must have at least one column and only finite values; drop the studies "
            "missing a covariate first."
        )
    if k <= p:
        raise ValueError(
            f"Meta-regression needs more studies than design columns to estimate tau2; got "
            f"k={k} studies and p={p} columns. Select more studies or fewer regressors."
        )
    if np.linalg.matrix_rank(x) < p:
        raise ValueError(
            f"'design' of shape {x.shape} is rank deficient (rank {np.linalg.matrix_rank(x)}): "
            "a column is constant alongside the intercept or a combination of others. Remove it."
        )
    y = np.moveaxis(effect, axis, 0).astype(np.float64, copy=False)
    v = np.moveaxis(variance, axis, 0).astype(np.float64, copy=False)
    voxel_shape = y.shape[1:]
    return y.reshape(k, -1), v.reshape(k, -1), x, voxel_shape


def _fit(
    y: NDArray[np.float64], v: NDArray[np.float64], x: NDArray[np.float64]
) -> tuple[NDArray[np.float64], ...]:
    """Meta-regression of float64 ``y, v`` of shape (k, V) on ``x`` (k, p).

    Returns ``beta`` (p, V), ``cov`` (V, p, p), ``tau2`` (V,) and ``q_e`` (V,). The stacked
    ``X'WX`` are one matrix product ``G' w`` with ``G[s] = vec(x_s x_s')``, so the voxel loop
    runs inside BLAS; the (V, p, p) systems are solved by NumPy's stacked LAPACK calls. Two
    (k, V) temporaries are reused in place: this is the inner loop of the randomization null.
    """
    k, p = x.shape
    n_voxels = y.shape[1]
    outer_t = (x[:, :, None] * x[:, None, :]).reshape(k, p * p).T

    def stacked(products: NDArray[np.float64]) -> NDArray[np.float64]:
        return products.T.reshape(n_voxels, p, p)

    w = np.reciprocal(v)
    tmp = w * y
    xtwx = stacked(outer_t @ w)
    beta_fe = np.linalg.solve(xtwx, (x.T @ tmp).T[..., None])[..., 0]
    np.matmul(x, beta_fe.T, out=tmp)
    np.subtract(y, tmp, out=tmp)
    tmp *= tmp
    tmp *= w
    q_e = tmp.sum(axis=0)
    np.multiply(w, w, out=tmp)
    leverage = np.trace(np.linalg.solve(xtwx, stacked(outer_t @ tmp)), axis1=1, axis2=2)
    c = w.sum(axis=0) - leverage
    excess = q_e - (k - p)
    tau2 = np.maximum(np.divide(excess, c, out=np.zeros_like(excess), where=c > 0), 0.0)
    np.add(v, tau2, out=w)
    np.reciprocal(w, out=w)
    np.multiply(w, y, out=tmp)
    cov = np.linalg.inv(stacked(outer_t @ w))
    beta = np.einsum("vpq,qv->pv", cov, x.T @ tmp)
    return beta, cov, tau2, q_e


def meta_regression(
    effect: ArrayLike, variance: ArrayLike, design: ArrayLike, axis: int = 0
) -> MetaRegression:
    """Random-effects meta-regression per voxel with the method-of-moments tau2.

    Parameters
    ----------
    effect : array_like
        Study effect sizes (Hedges g), any float dtype; studies along ``axis``, any voxel
        shape on the other axes (e.g. (k, V)).
    variance : array_like
        Their sampling variances, same shape, strictly positive and finite.
    design : array_like, shape (k, p)
        Design matrix shared by all voxels, usually ``[1, x01]`` (:func:`rescale`); full
        column rank, finite, with ``k > p``.
    axis : int, default 0
        The study axis; it is reduced.

    Returns
    -------
    MetaRegression
        ``beta`` (p, ...), ``cov`` (p, p, ...), ``z`` (p, ...), ``tau2`` (...), ``q_e`` (...)
        as float64, ``...`` the input shape without ``axis``, and ``df = k - p``.

    Raises
    ------
    ValueError
        If the shapes differ, ``axis`` is out of range, ``design`` is not (k, p), not finite,
        rank deficient, or has ``p >= k``.

    Notes
    -----
    ``tau2`` is 0 where its denominator ``tr(W) - tr((X'WX)^-1 X'W^2X)`` is not positive.
    Coefficient covariances are Wald (no Knapp-Hartung): PyMARE's ``DerSimonianLaird`` with
    ``small_sample_correction="wald"`` and metafor's ``rma(method="DL", test="z")`` agree.
    The z is "SDM-Z": its p-values come from the randomization null (docs/methods.md, section 5), not
    the normal curve. No Python loop over voxels; memory is O(V p^2) besides the inputs.

    References
    ----------
    DerSimonian & Laird (1986); Raudenbush (2009), eq. 16.21; docs/methods.md, section 8.

    Examples
    --------
    >>> x01, _, _ = rescale([20, 25, 30, 40, 60])
    >>> design = np.column_stack([np.ones(5), x01])
    >>> res = meta_regression([0.1, 0.3, 0.2, 0.6, 0.9], [0.05, 0.04, 0.06, 0.05, 0.08], design)
    >>> res.beta.round(4).tolist(), float(res.tau2), res.df
    ([0.1301, 0.7999], 0.0, 3)
    """
    y, v, x, voxel_shape = _validate(effect, variance, design, axis)
    beta, cov, tau2, q_e = _fit(y, v, x)
    p = x.shape[1]
    z = beta / np.sqrt(np.diagonal(cov, axis1=1, axis2=2).T)
    return MetaRegression(
        beta=beta.reshape(p, *voxel_shape),
        cov=np.moveaxis(cov, 0, -1).reshape(p, p, *voxel_shape),
        z=z.reshape(p, *voxel_shape),
        tau2=tau2.reshape(voxel_shape),
        q_e=q_e.reshape(voxel_shape),
        df=int(x.shape[0] - p),
    )


def linear_contrasts(
    result: MetaRegression, contrasts: Mapping[str, ArrayLike] = SDM_CONTRASTS
) -> dict[str, Contrast]:
    """Estimate, variance and z of linear combinations ``c' beta`` of a meta-regression.

    Parameters
    ----------
    result : MetaRegression
        From :func:`meta_regression`.
    contrasts : mapping of str to array_like, default :data:`SDM_CONTRASTS`
        Name to contrast vector of length p. The default gives SDM's ``0``, ``1`` and ``1m0``
        maps of a ``[1, x01]`` design (p = 2).

    Returns
    -------
    dict of str to Contrast
        In the order of ``contrasts``; each field float64 of the voxel shape.

    Raises
    ------
    ValueError
        If a vector is not of length p, not finite, or all zero.

    References
    ----------
    Spec section 8 (outputs ``0``, ``1``, ``1m0``).

    Examples
    --------
    >>> res = meta_regression([0.1, 0.4, 0.9], [0.05, 0.05, 0.05], [[1, 0], [1, 0.5], [1, 1]])
    >>> {name: round(float(c.estimate), 4) for name, c in linear_contrasts(res).items()}
    {'0': 0.0667, '1': 0.8667, '1m0': 0.8}
    """
    p = result.beta.shape[0]
    out = {}
    for name, vector in contrasts.items():
        c = np.asarray(vector, dtype=np.float64)
        if c.shape != (p,) or not np.all(np.isfinite(c)) or not np.any(c):
            raise ValueError(
                f"Contrast {name!r} must be a finite, non-zero vector of length p={p} (one weight "
                f"per design column); got {np.asarray(vector).tolist()!r}."
            )
        estimate = np.tensordot(c, result.beta, axes=(0, 0))
        variance = np.einsum("p,pq...,q->...", c, result.cov, c)
        out[name] = Contrast(estimate, variance, estimate / np.sqrt(variance))
    return out


def regression_null_block(
    effect: ArrayLike, variance: ArrayLike, design: ArrayLike,
    seeds: Sequence[np.random.SeedSequence], contrasts: Mapping[str, ArrayLike] = SDM_CONTRASTS,
) -> NDArray[np.int64]:
    """Null histograms of the SDM contrasts' z over a block of randomizations.

    Each randomization relocates every study's voxels (uniform draws with replacement, the
    draw of :func:`daskmeta.stats.null.relocate`); each study keeps its covariate row of
    ``design`` (docs/methods.md, section 8).

    Returns
    -------
    ndarray of int64, shape (n_contrasts, N_HIST)
        One histogram per contrast, in the order of ``contrasts``.
    """
    y = np.asarray(effect, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    hist = np.zeros((len(contrasts), N_HIST), dtype=np.int64)
    for sequence in seeds:
        source = relocation_source(np.random.default_rng(sequence), *y.shape)
        fitted = linear_contrasts(meta_regression(y.take(source), v.take(source), design), contrasts)
        for row, contrast in enumerate(fitted.values()):
            hist[row] += histogram(contrast.z)
    return hist
