import numpy as np
import pytest
from scipy import special, stats

from daskmeta.stats.effect_size import (
    degrees_of_freedom,
    g_variance,
    hedges_g,
    hedges_j,
    t_from_p,
    t_from_z,
    variance_constant,
)


def test_worked_example_from_spec():
    # docs/methods.md, section 2: t = 4, n1 = n2 = 20
    assert degrees_of_freedom(20, 20) == 38
    assert hedges_j(38) == pytest.approx(0.980110, abs=5e-7)
    g = hedges_g(4.0, 20, 20)
    assert g == pytest.approx(1.239752, abs=5e-7)
    assert variance_constant(38) == pytest.approx(0.013791, abs=5e-7)
    assert g_variance(g, 20, 20) == pytest.approx(0.121197, abs=5e-7)


def test_j_is_exact_not_the_approximation():
    df = np.array([5.0, 10.0, 38.0, 200.0])
    exact = special.gamma(df / 2) / (np.sqrt(df / 2) * special.gamma((df - 1) / 2))
    np.testing.assert_allclose(hedges_j(df), exact, rtol=1e-12)
    assert not np.allclose(hedges_j(df[:2]), 1 - 3 / (4 * df[:2] - 1), rtol=1e-6)
    # large df stays finite (gammaln) and tends to 1
    assert hedges_j(1e6) == pytest.approx(1.0, abs=1e-6)


def test_one_sample_design():
    # one-sample: g = J t / sqrt(n), var = 1/n + c g^2, df = n - 1
    n, t = 16, 3.0
    j = hedges_j(15)
    g = hedges_g(t, n, np.nan)
    assert g == pytest.approx(j * t / 4.0)
    assert hedges_g(t, n) == pytest.approx(g)
    assert g_variance(g, n, np.nan) == pytest.approx(1 / 16 + variance_constant(15) * g**2)


def test_variance_is_unbiased_estimator_by_simulation():
    # E[g^2] = delta^2 + var(g); c is chosen so 1/n1+1/n2 + c g^2 is unbiased for var(g)
    rng = np.random.default_rng(0)
    n1, n2, delta = 12, 10, 0.8
    a = rng.normal(delta, 1, (200_000, n1))
    b = rng.normal(0, 1, (200_000, n2))
    sp = np.sqrt(((n1 - 1) * a.var(1, ddof=1) + (n2 - 1) * b.var(1, ddof=1)) / (n1 + n2 - 2))
    t = (a.mean(1) - b.mean(1)) / (sp * np.sqrt(1 / n1 + 1 / n2))
    g = hedges_g(t, n1, n2)
    assert g.mean() == pytest.approx(delta, abs=0.01)  # J removes the bias of d
    assert g_variance(g, n1, n2).mean() == pytest.approx(g.var(), rel=0.02)


def test_conversions_against_scipy():
    df = np.array([10.0, 38.0, 100.0])
    z = np.array([3.1, -4.5, 2.0])
    t = t_from_z(z, df)
    np.testing.assert_allclose(stats.t.sf(np.abs(t), df), stats.norm.sf(np.abs(z)), rtol=1e-10)
    assert np.all(np.sign(t) == np.sign(z))
    assert np.all(np.abs(t) > np.abs(z))  # t tails are heavier
    assert np.isfinite(t_from_z(40.0, 20))  # survival functions keep large z finite
    p = np.array([0.001, 0.05])
    np.testing.assert_allclose(t_from_p(p, 20), stats.t.ppf(1 - p, 20), rtol=1e-10)
    assert t_from_p(0.001, 20, sign=-1) == pytest.approx(-stats.t.ppf(0.999, 20))
