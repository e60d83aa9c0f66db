"""Censored maximum likelihood of SDM-PSI (daskmeta.stats.censored), against plain SciPy fits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, special, stats

from daskmeta.stats.censored import (
    censored_ml,
    censored_nll,
    log_interval_probability,
    loo_count,
)


def _plain_nll(b, lo, up, a, c, X, tau2=0.0, keep=None):
    """The NLL of one voxel, written plainly (no stabilisation)."""
    total = 0.0
    for s in range(len(lo)):
        if keep is not None and not keep[s]:
            continue
        mu = float(X[s] @ b)
        if up[s] - lo[s] < 1e-6:
            y = 0.5 * (lo[s] + up[s])
            var = a[s] + c[s] * y * y + tau2
            total += 0.5 * (np.log(var) + (y - mu) ** 2 / var)
        else:
            s_up = np.sqrt(a[s] + c[s] * up[s] ** 2 + tau2)
            s_lo = np.sqrt(a[s] + c[s] * lo[s] ** 2 + tau2)
            total -= np.log(stats.norm.cdf((up[s] - mu) / s_up) - stats.norm.cdf((lo[s] - mu) / s_lo))
    return total


def _reference_beta(lo, up, a, c, X, keep=None, start=None):
    x0 = np.zeros(X.shape[1]) if start is None else start
    fit = optimize.minimize(_plain_nll, x0, args=(lo, up, a, c, X, 0.0, keep), method="BFGS",
                            options={"gtol": 1e-11, "maxiter": 1000})
    return fit.x


def _studies(rng, k, n_voxels, known_share=0.4, slope=0.0):
    """Bounds of k studies: effects around a heterogeneous mean, some censored (SDM-like)."""
    n = rng.integers(12, 40, k)
    a = 2.0 / n
    c = np.full(k, 0.014)
    x = np.linspace(0.0, 1.0, k)
    mean = rng.normal(0.3, 0.25, n_voxels)[None, :] + slope * x[:, None]
    y = mean + rng.standard_normal((k, n_voxels)) * np.sqrt(a[:, None] + rng.uniform(0, 0.1, n_voxels))
    censored = rng.random((k, n_voxels)) > known_share
    censored[:, :4] = True  # some voxels with every study censored
    threshold = rng.uniform(0.6, 1.0, (k, 1))
    half = (rng.uniform(0.2, 1.0, (k, n_voxels))) * threshold
    centre = np.clip(y, -threshold + half, threshold - half) * rng.uniform(0, 1, (k, n_voxels))
    lower = np.where(censored, centre - half, y)
    upper = np.where(censored, centre + half, y)
    return lower, upper, a, c, x


@pytest.mark.parametrize("slope", [None, 0.4])
def test_fit_matches_scipy_minimize(slope):
    rng = np.random.default_rng(11)
    k, n_voxels = 10, 30
    lower, upper, a, c, x = _studies(rng, k, n_voxels, slope=slope or 0.0)
    X = np.ones((k, 1)) if slope is None else np.column_stack([np.ones(k), x])
    fit = censored_ml(lower, upper, a, c, design=X, protect=False)
    assert fit.beta.shape == (X.shape[1], n_voxels)
    assert fit.converged.all()
    assert fit.discarded.shape == (0, n_voxels)
    known = (upper - lower) < 1e-6
    assert known.any() and (~known).any() and (~known).all(axis=0).any()
    for v in range(n_voxels):
        ref = _reference_beta(lower[:, v], upper[:, v], a, c, X, start=fit.beta[:, v] + 0.05)
        np.testing.assert_allclose(fit.beta[:, v], ref, atol=1e-6)
        # tau2 with beta fixed, by bounded Brent on [0, 999]
        res = optimize.minimize_scalar(
            lambda t, v=v: _plain_nll(fit.beta[:, v], lower[:, v], upper[:, v], a, c, X, t),
            bounds=(0.0, 999.0), method="bounded", options={"xatol": 1e-10})
        ref_tau2 = res.x
        ref_nll = min(res.fun, _plain_nll(fit.beta[:, v], lower[:, v], upper[:, v], a, c, X, 0.0))
        assert abs(fit.tau2[v] - ref_tau2) < 1e-5 or fit.nll[v] <= ref_nll + 1e-9
        assert fit.nll[v] <= ref_nll + 1e-9
        assert fit.nll[v] == pytest.approx(
            _plain_nll(fit.beta[:, v], lower[:, v], upper[:, v], a, c, X, fit.tau2[v]), abs=1e-9)
    assert (fit.tau2 > 0).any() and (fit.tau2 == 0).any()


def test_all_known_is_the_inverse_variance_fit():
    rng = np.random.default_rng(3)
    k, n_voxels = 9, 50
    y = rng.normal(0.4, 0.5, (k, n_voxels))
    a = rng.uniform(0.05, 0.2, k)
    c = rng.uniform(0.005, 0.03, k)
    X = np.column_stack([np.ones(k), rng.standard_normal(k)])
    fit = censored_ml(y, y, a, c, design=X, protect=False)
    w = 1.0 / (a[:, None] + c[:, None] * y**2)
    for v in range(n_voxels):
        W = np.diag(w[:, v])
        expected = np.linalg.solve(X.T @ W @ X, X.T @ W @ y[:, v])
        np.testing.assert_allclose(fit.beta[:, v], expected, rtol=1e-12, atol=1e-12)


def test_nll_matches_the_plain_formula():
    rng = np.random.default_rng(5)
    lower, upper, a, c, x = _studies(rng, 6, 8)
    X = np.column_stack([np.ones(6), x])
    beta = rng.normal(0, 0.3, (2, 8))
    got = censored_nll(lower, upper, a, c, beta, 0.07, design=X)
    for v in range(8):
        assert got[v] == pytest.approx(_plain_nll(beta[:, v], lower[:, v], upper[:, v], a, c, X, 0.07),
                                       rel=1e-12)


def test_loo_count():
    assert [loo_count(k) for k in (1, 2, 30, 31, 59, 60, 77, 78, 79, 80, 94, 95, 200)] == [
        1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 4, 5, 12]
    with pytest.raises(ValueError):
        loo_count(0)


def test_loo_choice_matches_brute_force():
    rng = np.random.default_rng(8)
    k, n_voxels = 8, 12
    lower, upper, a, c, x = _studies(rng, k, n_voxels, slope=0.3)
    X = np.column_stack([np.ones(k), x])
    contrast = np.array([0.0, 1.0])
    fit = censored_ml(lower, upper, a, c, design=X, contrast=contrast)
    assert fit.discarded.shape == (1, n_voxels)
    for v in range(n_voxels):
        distance = []
        for j in range(k):
            keep = np.arange(k) != j
            b = _reference_beta(lower[:, v], upper[:, v], a, c, X, keep=keep)
            distance.append(abs(contrast @ b))
        assert fit.discarded[0, v] == int(np.argmin(distance))
        keep = np.arange(k) != fit.discarded[0, v]
        assert not fit.included[fit.discarded[0, v], v] and fit.included[keep, v].all()
        np.testing.assert_allclose(
            fit.beta[:, v], _reference_beta(lower[:, v], upper[:, v], a, c, X, keep=keep), atol=1e-6)
    assert len(set(fit.discarded[0].tolist())) > 1  # voxels discard different studies


def test_two_rounds_of_protection_match_refits():
    """k = 31 discards 2 studies; each round is the best single refit (the intercept)."""
    rng = np.random.default_rng(9)
    k, n_voxels = 31, 6
    lower, upper, a, c, _ = _studies(rng, k, n_voxels)
    fit = censored_ml(lower, upper, a, c)
    assert fit.discarded.shape == (2, n_voxels)
    for v in range(n_voxels):
        keep = np.ones(k, dtype=bool)
        for r in range(2):
            distance = np.full(k, np.inf)
            for j in np.flatnonzero(keep):
                trial = keep.copy()
                trial[j] = False
                single = censored_ml(lower[trial, v:v + 1], upper[trial, v:v + 1], a[trial], c[trial],
                                     protect=False)
                distance[j] = abs(single.beta[0, 0])
            chosen = int(np.argmin(distance))
            assert fit.discarded[r, v] == chosen
            keep[chosen] = False
        assert (fit.included[:, v] == keep).all()


def test_rank_deficient_removal_is_not_a_candidate():
    """A group of one study: removing it would leave the group effect unidentified."""
    k = 6
    group = np.array([1.0, 0, 0, 0, 0, 0])
    X = np.column_stack([np.ones(k), group])
    y = np.array([[0.1], [0.9], [1.0], [1.1], [1.2], [0.8]])
    fit = censored_ml(y, y, np.full(k, 0.1), np.zeros(k), design=X)
    assert fit.discarded[0, 0] != 0


def test_log_interval_probability_is_stable():
    alpha = np.array([1.0, 0.3, -2.0, 40.0, -39.0, 9.0, 1.0])
    beta = np.array([-1.0, 0.2, -3.0, 39.0, -40.0, -9.0, 1.0])
    got = log_interval_probability(alpha, beta)
    plain = np.log(special.ndtr(alpha[:3]) - special.ndtr(beta[:3]))
    np.testing.assert_allclose(got[:3], plain, rtol=1e-12)
    assert np.isfinite(got[3:6]).all()
    assert got[3] == pytest.approx(got[4], rel=1e-12)  # symmetric tails
    assert got[3] == pytest.approx(special.log_ndtr(-39.0), rel=1e-3)
    assert got[5] == pytest.approx(np.log1p(-2 * special.ndtr(-9.0)), abs=1e-30)
    assert got[6] == -np.inf


def test_bad_inputs():
    y = np.zeros((3, 2))
    with pytest.raises(ValueError, match="same shape"):
        censored_ml(y, np.zeros((3, 3)), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="exceeds"):
        censored_ml(y + 1, y, np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="a > 0"):
        censored_ml(y, y, np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="contrast"):
        censored_ml(y, y, np.ones(3), np.zeros(3), contrast=[1.0, 0.0])
    with pytest.raises(ValueError, match="cannot fit"):
        censored_ml(y[:1], y[:1], np.ones(1), np.zeros(1))
