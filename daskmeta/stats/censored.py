"""Censored maximum likelihood of study effects, voxel by voxel (docs/methods.md, section 14).

The first step of SDM-PSI (Albajes-Eizagirre et al. 2019, NeuroImage) fits, at every voxel,
the model of the study effects by maximum likelihood when some studies give the effect only
as an interval: MetaNSUE's likelihood (Albajes-Eizagirre et al. 2019, Stat Methods Med Res).
A study is *known* at a voxel when ``upper - lower <`` :data:`KNOWN_WIDTH` (its value is
``y = (lower + upper) / 2``) and *censored* to ``[lo, up]`` otherwise. With the design ``X``
(k studies x p columns), the variance model ``v(y) = a + c y^2`` of each study
(:func:`~daskmeta.stats.sdm_model.variance_model`) and ``mu = X b``::

    NLL(b, tau2) = sum_known    [log(v(y) + tau2) + (y - mu)^2 / (v(y) + tau2)] / 2
                 - sum_censored log(Phi((up - mu) / s_up) - Phi((lo - mu) / s_lo))
    s_up = sqrt(v(up) + tau2),  s_lo = sqrt(v(lo) + tau2)

The variances depend on the data, not on ``b``; the constant ``log(2 pi) / 2`` per known
study is left out.

**Step 1** (``b``, ``tau2 = 0``): Newton's method with the analytic gradient and Hessian,
all voxels of a chunk at once (the ``p x p`` systems solved batched), started from the
weighted least-squares fit that puts censored studies at their midpoints (weights
``1 / v(midpoint)``), with step halving (Armijo's rule) so that every accepted step lowers
the NLL (steps below :data:`STEP_TRUST`, whose effect on the NLL is at its rounding level,
are taken whole). A voxel stops when the largest component of its Newton step is below
:data:`BETA_TOL` (the step is still taken, so with quadratic convergence the error left is
far smaller), or after :data:`MAX_NEWTON` iterations (``converged`` is False there). With the
same variance at both ends of an interval the NLL is convex in ``b`` (the probability of an
interval of a normal is log-concave in its mean); with ``s_up != s_lo`` it is so wherever
the interval's probability is not negligible, which holds from the start onward (where the
Hessian is not positive definite the step falls back to steepest descent).

**Step 2** (``tau2``, ``b`` fixed): golden-section search of the same NLL over
``s = sqrt(tau2)`` in ``[0, sqrt(999)]`` (the square root is better conditioned: the NLL is
close to quadratic in a standard deviation, and the search resolves small ``tau2`` finely),
:data:`GOLDEN_ITERATIONS` iterations, so the bracket shrinks below ``1e-8`` in ``s``; the
result is compared with ``tau2 = 0``, the better kept.

**Leave-one-out protection**: before step 2, :func:`loo_count` studies are discarded one at a
time, at each voxel the study whose removal brings the tested contrast of ``b`` closest to 0
(every remaining study refitted out in turn: ``k`` refits per discarded study, warm-started).
Different voxels may discard different studies. A removal that would leave the included
rows of the design rank-deficient is not a candidate.

``log(Phi(alpha) - Phi(beta))`` (:func:`log_interval_probability`) works with ``(hi, lo) =
(alpha, beta)``, or ``(-beta, -alpha)`` (the upper tails) when ``alpha + beta > 0``; far in
the tail (``hi <= -30``) it is ``logPhi(hi) + log(-expm1(logPhi(lo) - logPhi(hi)))``
(``scipy.special.log_ndtr``), so nothing underflows in either tail.

References
----------
Albajes-Eizagirre A, Solanes A, Vieta E, Radua J (2019). Voxel-based meta-analysis via
permutation of subject images (PSI): theory and implementation for SDM. NeuroImage
186:174-184, doi:10.1016/j.neuroimage.2018.10.077.
Albajes-Eizagirre A, Solanes A, Radua J (2019). Meta-analysis of non-statistically
significant unreported effects. Stat Methods Med Res 28:3741-3754,
doi:10.1177/0962280218811349.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import erfc, log_ndtr

#: A study is known at a voxel when ``upper - lower`` is below this.
KNOWN_WIDTH = 1e-6
#: Newton stops at a voxel when every component of its step is below this (absolute).
BETA_TOL = 1e-10
#: Newton steps smaller than this (every component) are taken without step halving: they
#: change the NLL by about ``H step^2 < 1e-12``, near its rounding error, so Armijo's test
#: could not judge them, and so close to the optimum Newton's method is reliable.
STEP_TRUST = 1e-6
#: Most Newton iterations per fit.
MAX_NEWTON = 60
#: Most halvings of a Newton step.
MAX_HALVINGS = 40
#: Largest between-study variance searched.
TAU2_MAX = 999.0
#: Golden-section iterations: ``sqrt(999) * 0.618^46 < 1e-8``.
GOLDEN_ITERATIONS = 46

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0
_SQRT_HALF = math.sqrt(0.5)


@dataclass(frozen=True)
class CensoredFit:
    """The censored ML fit of every voxel (:func:`censored_ml`).

    Attributes
    ----------
    beta : ndarray, shape (p, n_voxels)
        Coefficients of step 1, fitted on the studies kept.
    tau2 : ndarray, shape (n_voxels,)
        Between-study variance of step 2 (``beta`` fixed).
    discarded : ndarray of int, shape (L, n_voxels)
        The studies discarded by the leave-one-out protection, in order (-1 where no study
        could be discarded without making the design rank-deficient).
    included : ndarray of bool, shape (k, n_voxels)
        The studies kept at each voxel.
    nll : ndarray, shape (n_voxels,)
        The NLL at ``(beta, tau2)`` over the studies kept.
    converged : ndarray of bool, shape (n_voxels,)
        Whether the final Newton fit met :data:`BETA_TOL`.
    """

    beta: NDArray[np.float64]
    tau2: NDArray[np.float64]
    discarded: NDArray[np.int64]
    included: NDArray[np.bool_]
    nll: NDArray[np.float64]
    converged: NDArray[np.bool_]


def loo_count(k: int) -> int:
    """How many studies the leave-one-out protection discards out of ``k``.

    1 up to 30 studies, 2 up to 59, 3 up to 77, else the smallest ``L`` with
    ``k <= 34 + 15 L`` (docs/methods.md, section 14).
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"the number of studies must be at least 1; got {k}.")
    if k <= 30:
        return 1
    if k <= 59:
        return 2
    if k <= 77:
        return 3
    return max(3, -(-(k - 34) // 15))


def log_interval_probability(alpha: ArrayLike, beta: ArrayLike) -> NDArray[np.float64]:
    """``log(Phi(alpha) - Phi(beta))``, stable in both tails; ``-inf`` where ``alpha <= beta``.

    With ``(hi, lo) = (alpha, beta)``, or ``(-beta, -alpha)`` when ``alpha + beta > 0`` (the
    same probability through the upper tails), ``lo <= 0`` so ``Phi(lo)`` has full relative
    precision. Where ``-30 < hi <= 0`` the result is ``log(Phi(hi) - Phi(lo))``; where
    ``hi > 0`` it is ``log1p(-Phi(lo) - Phi(-hi))`` (both tails exact, so a probability near
    1 keeps its small deficit); the tails come from ``erfc``. Where ``hi <= -30`` it is
    ``logPhi(hi) + log(-expm1(logPhi(lo) - logPhi(hi)))`` (``scipy.special.log_ndtr``), so
    nothing underflows.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    flip = (alpha + beta) > 0
    hi = np.where(flip, -beta, alpha)
    lo = np.where(flip, -alpha, beta)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail_lo = 0.5 * erfc(lo * -_SQRT_HALF)  # Phi(lo)
        tail_hi = 0.5 * erfc(np.abs(hi) * _SQRT_HALF)  # Phi(-|hi|)
        out = np.array(np.where(hi > 0, np.log1p(-(tail_lo + tail_hi)), np.log(tail_hi - tail_lo)))
        far = hi <= -30.0
        if far.any():
            log_hi = log_ndtr(hi[far])
            out[far] = log_hi + np.log(-np.expm1(log_ndtr(lo[far]) - log_hi))
    return np.where(alpha > beta, out, -np.inf)


class _Data:
    """The per-(study, voxel) quantities of the likelihood, for a subset of voxels."""

    __slots__ = ("known", "censored", "y", "v_y", "lo", "up", "v_lo", "v_up")

    def __init__(self, **arrays: NDArray) -> None:
        for name, value in arrays.items():
            setattr(self, name, value)

    @classmethod
    def build(cls, lower: NDArray, upper: NDArray, a: NDArray, c: NDArray, include: NDArray) -> _Data:
        known_all = (upper - lower) < KNOWN_WIDTH
        y = 0.5 * (lower + upper)
        a_, c_ = a[:, None], c[:, None]
        return cls(
            known=known_all & include,
            censored=~known_all & include,
            y=y,
            v_y=a_ + c_ * y * y,
            lo=lower,
            up=upper,
            v_lo=a_ + c_ * lower * lower,
            v_up=a_ + c_ * upper * upper,
        )

    def take(self, columns: NDArray) -> _Data:
        return _Data(**{name: getattr(self, name)[:, columns] for name in self.__slots__})

    def with_include(self, include: NDArray) -> _Data:
        """The same data with the studies outside ``include`` (k, n) left out."""
        arrays = {name: getattr(self, name) for name in self.__slots__}
        arrays["known"] = self.known & include
        arrays["censored"] = self.censored & include
        return _Data(**arrays)


def _evaluate(data: _Data, mu: NDArray, tau2: NDArray | float, derivatives: bool = False):
    """NLL per voxel and, with ``derivatives``, its first and second derivatives in ``mu``."""
    known, censored = data.known, data.censored
    var = data.v_y + tau2
    resid = data.y - mu
    nll = 0.5 * np.sum(np.where(known, np.log(var) + resid * resid / var, 0.0), axis=0)
    s_up = np.sqrt(data.v_up + tau2)
    s_lo = np.sqrt(data.v_lo + tau2)
    alpha = np.where(censored, (data.up - mu) / s_up, 1.0)
    beta = np.where(censored, (data.lo - mu) / s_lo, -1.0)
    log_p = log_interval_probability(alpha, beta)
    nll = nll - np.sum(np.where(censored, log_p, 0.0), axis=0)
    if not derivatives:
        return nll
    with np.errstate(over="ignore", invalid="ignore"):
        r_a = np.exp(-0.5 * alpha * alpha - _LOG_SQRT_2PI - log_p) / s_up
        r_b = np.exp(-0.5 * beta * beta - _LOG_SQRT_2PI - log_p) / s_lo
        g_cens = r_a - r_b  # d(-log P)/d mu
        h_cens = g_cens * g_cens - beta * r_b / s_lo + alpha * r_a / s_up
    grad = np.where(known, -resid / var, np.where(censored, g_cens, 0.0))
    hess = np.where(known, 1.0 / var, np.where(censored, h_cens, 0.0))
    return nll, grad, hess


def _gram(weights: NDArray, X: NDArray) -> NDArray:
    """``X' diag(w_v) X`` for every voxel: shape (n, p, p)."""
    return np.einsum("sn,si,sj->nij", weights, X, X, optimize=True)


def _wls_start(data: _Data, X: NDArray) -> NDArray:
    """Weighted least squares with censored studies at their midpoints (weights 1/v(mid))."""
    included = data.known | data.censored
    w = np.where(included, 1.0 / data.v_y, 0.0)
    G = _gram(w, X)
    rhs = (X.T @ (w * data.y)).T[..., None]
    return np.linalg.solve(G, rhs)[..., 0].T


def _newton(data: _Data, X: NDArray, beta: NDArray) -> tuple[NDArray, NDArray]:
    """Step 1 from ``beta`` (p, n): the ML coefficients and whether each voxel converged."""
    beta = np.array(beta, dtype=np.float64, copy=True)
    n = beta.shape[1]
    converged = np.zeros(n, dtype=bool)
    active = np.arange(n)
    sub = data
    nll, g, h = _evaluate(sub, X @ beta, 0.0, derivatives=True)
    p = X.shape[1]
    eye = np.eye(p)
    for _ in range(MAX_NEWTON):
        b = beta[:, active]
        grad = X.T @ g  # (p, n_active)
        H = _gram(h, X)
        H = H + eye * (1e-12 * np.trace(H, axis1=1, axis2=2)[:, None, None] + 1e-300)
        try:
            step = np.linalg.solve(H, -grad.T[..., None])[..., 0].T
        except np.linalg.LinAlgError:
            step = np.full_like(grad, np.nan)
        slope = np.sum(grad * step, axis=0)
        bad = ~(np.isfinite(slope) & (slope < 0))
        if bad.any():  # not a descent direction: steepest descent, scaled by the curvature
            scale = 1.0 / np.maximum(np.abs(np.trace(H, axis1=1, axis2=2)), 1e-12)
            step[:, bad] = -grad[:, bad] * scale[bad]
            slope[bad] = np.sum(grad[:, bad] * step[:, bad], axis=0)
        size = np.max(np.abs(step), axis=0)
        small = size < BETA_TOL
        # step halving (Armijo), voxel by voxel; steps below STEP_TRUST are taken whole
        t = np.ones(active.size)
        trusted = size < STEP_TRUST
        accepted = trusted.copy()
        new_b = b + np.where(trusted, step, 0.0)
        todo = np.flatnonzero(~trusted)
        for _ in range(MAX_HALVINGS):
            trial = b[:, todo] + t[todo] * step[:, todo]
            f = _evaluate(sub.take(todo), X @ trial, 0.0)
            ok = f <= nll[todo] + 1e-4 * t[todo] * slope[todo]
            hit = todo[ok]
            accepted[hit] = True
            new_b[:, hit] = trial[:, ok]
            todo = todo[~ok]
            if todo.size == 0:
                break
            t[todo] *= 0.5
        beta[:, active] = new_b
        # a voxel is done when its Newton step was negligible, or no step lowered the NLL
        done = small | ~accepted
        converged[active[done & small]] = True
        keep = ~done
        if not keep.any():
            active = active[:0]
            break
        active = active[keep]
        sub = sub.take(np.flatnonzero(keep)) if not keep.all() else sub
        nll, g, h = _evaluate(sub, X @ beta[:, active], 0.0, derivatives=True)
    return beta, converged


def _tau2_objective(data: _Data, mu: NDArray):
    """The NLL as a function of ``tau2`` (n,) at fixed ``mu``, on the included entries only."""
    n = mu.shape[1]
    k_study, k_voxel = np.nonzero(data.known)
    r2 = (data.y - mu)[k_study, k_voxel] ** 2
    v_known = data.v_y[k_study, k_voxel]
    c_study, c_voxel = np.nonzero(data.censored)
    up_gap = (data.up - mu)[c_study, c_voxel]
    lo_gap = (data.lo - mu)[c_study, c_voxel]
    v_up = data.v_up[c_study, c_voxel]
    v_lo = data.v_lo[c_study, c_voxel]

    def nll(tau2: NDArray) -> NDArray:
        var = v_known + tau2[k_voxel]
        known = np.bincount(k_voxel, np.log(var) + r2 / var, minlength=n)
        t = tau2[c_voxel]
        log_p = log_interval_probability(up_gap / np.sqrt(v_up + t), lo_gap / np.sqrt(v_lo + t))
        return 0.5 * known - np.bincount(c_voxel, log_p, minlength=n)

    return nll


def _tau2_search(data: _Data, mu: NDArray) -> tuple[NDArray, NDArray]:
    """Step 2: golden-section search of ``sqrt(tau2)`` in ``[0, sqrt(999)]``; (tau2, nll)."""
    objective = _tau2_objective(data, mu)
    n = mu.shape[1]
    left = np.zeros(n)
    right = np.full(n, math.sqrt(TAU2_MAX))
    x1 = right - _INV_PHI * (right - left)
    x2 = left + _INV_PHI * (right - left)
    f1 = objective(x1 * x1)
    f2 = objective(x2 * x2)
    for _ in range(GOLDEN_ITERATIONS):
        lower_half = f1 <= f2  # the minimum is in [left, x2]
        right = np.where(lower_half, x2, right)
        left = np.where(lower_half, left, x1)
        new_x = np.where(lower_half, right - _INV_PHI * (right - left), left + _INV_PHI * (right - left))
        f_new = objective(new_x * new_x)
        x1, f1, x2, f2 = (
            np.where(lower_half, new_x, x2),
            np.where(lower_half, f_new, f2),
            np.where(lower_half, x1, new_x),
            np.where(lower_half, f1, f_new),
        )
    s = 0.5 * (left + right)
    tau2 = s * s
    f = objective(tau2)
    f0 = objective(np.zeros(n))
    zero = (f0 <= f) | (s < 1e-7)  # below the search's resolution in s: tau2 = 0
    return np.where(zero, 0.0, tau2), np.where(zero, f0, f)


def _full_rank(include: NDArray, X: NDArray) -> NDArray[np.bool_]:
    """Per voxel, whether the included rows of ``X`` have full column rank."""
    G = _gram(include.astype(np.float64), X)
    eig = np.linalg.eigvalsh(G)
    return eig[:, 0] > 1e-10 * np.maximum(eig[:, -1], 1e-300)


def _checked(lower, upper, a, c, design, contrast):
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    if lower.ndim != 2 or upper.shape != lower.shape:
        raise ValueError(
            "'lower' and 'upper' must be (study, voxel) arrays of the same shape; got "
            f"{lower.shape} and {upper.shape}."
        )
    k = lower.shape[0]
    if not (np.isfinite(lower).all() and np.isfinite(upper).all()):
        raise ValueError("'lower' and 'upper' must be finite.")
    if np.any(lower - upper > KNOWN_WIDTH):
        raise ValueError("'lower' exceeds 'upper' at some (study, voxel).")
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    if a.shape != (k,) or c.shape != (k,):
        raise ValueError(f"'a' and 'c' need one value per study ({k}); got {a.shape} and {c.shape}.")
    if not (np.all(a > 0) and np.all(c >= 0) and np.isfinite(a + c).all()):
        raise ValueError("the variance model needs a > 0 and c >= 0 for every study.")
    X = np.ones((k, 1)) if design is None else np.asarray(design, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] != k or not np.isfinite(X).all():
        raise ValueError(f"'design' must be a finite (study, column) array with {k} rows; got {X.shape}.")
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ValueError("'design' must have full column rank.")
    p = X.shape[1]
    L = np.zeros(p)
    L[0] = 1.0
    if contrast is not None:
        L = np.asarray(contrast, dtype=np.float64).reshape(-1)
        if L.shape != (p,):
            raise ValueError(f"'contrast' needs one weight per design column ({p}); got {L.shape}.")
    return lower, upper, a, c, X, L


def censored_nll(
    lower: ArrayLike,
    upper: ArrayLike,
    a: ArrayLike,
    c: ArrayLike,
    beta: ArrayLike,
    tau2: ArrayLike = 0.0,
    design: ArrayLike | None = None,
    included: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """The NLL of the module's docstring at ``beta`` (p, n_voxels) and ``tau2``, per voxel.

    ``included`` (k, n_voxels), bool, leaves studies out (all kept by default).
    """
    lower, upper, a, c, X, _ = _checked(lower, upper, a, c, design, None)
    include = np.ones(lower.shape, dtype=bool) if included is None else np.asarray(included, dtype=bool)
    data = _Data.build(lower, upper, a, c, include)
    beta = np.asarray(beta, dtype=np.float64).reshape(X.shape[1], -1)
    return _evaluate(data, X @ beta, np.asarray(tau2, dtype=np.float64))


def censored_ml(
    lower: ArrayLike,
    upper: ArrayLike,
    a: ArrayLike,
    c: ArrayLike,
    design: ArrayLike | None = None,
    contrast: ArrayLike | None = None,
    protect: bool = True,
) -> CensoredFit:
    """Censored ML of ``beta`` and ``tau2`` at every voxel (SDM-PSI's first step).

    Parameters
    ----------
    lower, upper : array_like, shape (k, n_voxels)
        The bounds of each study's effect (``effect_lower``, ``effect_upper`` of
        docs/methods.md, section 3.5); equal (within :data:`KNOWN_WIDTH`) where it is known.
    a, c : array_like, shape (k,)
        Each study's variance model ``v(y) = a + c y^2``
        (:func:`~daskmeta.stats.sdm_model.variance_model`).
    design : array_like, shape (k, p), optional
        The design; the intercept alone (a mean) by default.
    contrast : array_like, shape (p,), optional
        The tested contrast of the coefficients, for the leave-one-out protection; the
        first coefficient by default.
    protect : bool
        Discard :func:`loo_count` studies per voxel before the final fit (module docstring).

    Returns
    -------
    CensoredFit

    Notes
    -----
    Algorithms and tolerances are in the module docstring and docs/methods.md, section 14.
    Every voxel is fitted at once; there is no loop over voxels.

    References
    ----------
    Albajes-Eizagirre et al. (2019), NeuroImage 186:174-184; Albajes-Eizagirre et al.
    (2019), Stat Methods Med Res 28:3741-3754.
    """
    lower, upper, a, c, X, L_vec = _checked(lower, upper, a, c, design, contrast)
    k, n = lower.shape
    p = X.shape[1]
    n_out = loo_count(k) if protect else 0
    if k - n_out < p:
        raise ValueError(
            f"{k} studies cannot fit {p} coefficients after discarding {n_out}; "
            "give more studies or protect=False."
        )
    include = np.ones((k, n), dtype=bool)
    data = _Data.build(lower, upper, a, c, include)
    beta, converged = _newton(data, X, _wls_start(data, X))
    discarded = np.full((n_out, n), -1, dtype=np.int64)
    columns = np.arange(n)
    for r in range(n_out):
        distance = np.full((k, n), np.inf)
        candidates = np.empty((k, p, n))
        for j in range(k):
            trial_include = include.copy()
            trial_include[j] = False
            valid = include[j] & _full_rank(trial_include, X)
            candidates[j] = beta
            if not valid.any():
                continue
            idx = np.flatnonzero(valid)
            sub = data.with_include(trial_include).take(idx)
            b_j, _ = _newton(sub, X, beta[:, idx])
            candidates[j][:, idx] = b_j
            distance[j, idx] = np.abs(L_vec @ b_j)
        best = np.argmin(distance, axis=0)
        possible = np.isfinite(distance[best, columns])
        chosen = np.where(possible, best, -1)
        discarded[r] = chosen
        hit = columns[possible]
        include[best[hit], hit] = False
        beta = np.where(possible, candidates[best, :, columns].T, beta)
    if n_out:
        data = data.with_include(include)
        beta, converged = _newton(data, X, beta)
    mu = X @ beta
    tau2, nll = _tau2_search(data, mu)
    return CensoredFit(beta=beta, tau2=tau2, discarded=discarded, included=include, nll=nll,
                       converged=converged)
