"""Egger's regression test against statsmodels OLS, and its behaviour on simulated funnels."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from daskmeta.stats.egger import EggerResult, egger_test

TOL = 1e-10


def _statsmodels(effect, variance):
    se = np.sqrt(variance)
    fit = sm.OLS(effect / se, sm.add_constant(1.0 / se)).fit()
    return fit.params[0], fit.bse[0], fit.tvalues[0], fit.pvalues[0], fit.params[1]


def _funnel(rng, k, bias=0.0):
    """Studies of sizes 10-200 around g = 0.3; ``bias`` inflates small studies' effects."""
    n = rng.integers(10, 200, size=k)
    variance = 4.0 / n
    se = np.sqrt(variance)
    return 0.3 + bias * se + rng.normal(size=k) * se, variance


@pytest.mark.parametrize("k", [3, 4, 10, 50])
def test_matches_statsmodels(rng, k):
    for _ in range(5):
        effect, variance = _funnel(rng, k, bias=rng.uniform(-2, 2))
        res = egger_test(effect, variance)
        assert isinstance(res, EggerResult)
        intercept, se, t, p, slope = _statsmodels(effect, variance)
        np.testing.assert_allclose(res.intercept, intercept, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(res.intercept_se, se, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(res.t, t, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(res.p, p, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(res.slope, slope, rtol=TOL, atol=TOL)
        assert res.df == k - 2 and res.k == k
        assert np.ndim(res.intercept) == 0 and isinstance(float(res.p), float)


def test_vectorised_over_trailing_axis(rng):
    k, n_peaks = 12, 7
    columns = [_funnel(rng, k, bias=b) for b in np.linspace(-2, 2, n_peaks)]
    effect = np.stack([c[0] for c in columns], axis=1)
    variance = np.stack([c[1] for c in columns], axis=1)
    res = egger_test(effect, variance)
    assert res.intercept.shape == (n_peaks,)
    transposed = egger_test(effect.T, variance.T, axis=1)
    for peak in range(n_peaks):
        intercept, se, t, p, slope = _statsmodels(effect[:, peak], variance[:, peak])
        np.testing.assert_allclose(res.intercept[peak], intercept, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(res.intercept_se[peak], se, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(res.t[peak], t, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(res.p[peak], p, rtol=TOL, atol=TOL)
    for field in ("intercept", "intercept_se", "t", "p", "slope"):
        np.testing.assert_array_equal(getattr(transposed, field), getattr(res, field))


def test_symmetric_funnel_is_not_significant():
    # Mirror-image pairs of studies at each precision: the funnel is exactly symmetric.
    variance = np.repeat([0.01, 0.02, 0.05, 0.1, 0.2, 0.4], 2)
    offsets = np.tile([-1.0, 1.0], 6) * np.sqrt(variance)
    res = egger_test(0.3 + offsets, variance)
    assert abs(float(res.intercept)) < 1e-10
    assert float(res.p) > 0.99


def test_unbiased_funnels_are_calibrated(rng):
    # No small-study effect: about 5% of funnels flagged at p < 0.05.
    k, n_sim = 20, 4000
    n = rng.integers(10, 200, size=(k, n_sim))
    variance = 4.0 / n
    effect = 0.3 + rng.normal(size=(k, n_sim)) * np.sqrt(variance)
    rate = float(np.mean(egger_test(effect, variance).p < 0.05))
    assert 0.035 < rate < 0.065


def test_small_study_effect_is_detected(rng):
    # Small studies report larger effects: effect grows with se (power ~1 at this size).
    effect, variance = _funnel(rng, 40, bias=5.0)
    res = egger_test(effect, variance)
    assert float(res.intercept) > 0
    assert float(res.p) < 0.05


@pytest.mark.parametrize("k", [0, 1, 2])
def test_fewer_than_three_studies(k):
    with pytest.raises(ValueError, match="at least 3 studies"):
        egger_test(np.full(k, 0.3), np.linspace(0.1, 0.2, k))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        egger_test([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="strictly positive"):
        egger_test([0.1, 0.2, 0.3], [0.1, 0.0, 0.2])
    with pytest.raises(ValueError, match="finite"):
        egger_test([0.1, np.nan, 0.3], [0.1, 0.1, 0.2])
    with pytest.raises(ValueError, match="same variance"):
        egger_test([0.1, 0.2, 0.3], [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="'axis' must be in"):
        egger_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], axis=1)
