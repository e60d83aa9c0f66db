"""Rubin's rules and the D2 rule across imputations (daskmeta.stats.rubin)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from daskmeta.stats import rubin


def test_rubin_two_imputations_by_hand():
    res = rubin.pool_estimates([0.5, 0.7], [0.04, 0.06])
    # W = 0.05; B = ((0.5 - 0.6)^2 + (0.7 - 0.6)^2) / 1 = 0.02; T = 0.05 + 1.5 * 0.02 = 0.08
    assert float(res.effect) == pytest.approx(0.6, abs=1e-15)
    assert float(res.within) == pytest.approx(0.05, abs=1e-15)
    assert float(res.between) == pytest.approx(0.02, abs=1e-15)
    assert float(res.variance) == pytest.approx(0.08, abs=1e-15)
    assert float(res.z) == pytest.approx(0.6 / math.sqrt(0.08), rel=1e-14)


def test_rubin_three_imputations_by_hand():
    betas, variances = [0.2, 0.35, 0.5], [0.01, 0.02, 0.03]
    mean = sum(betas) / 3  # 0.35
    between = sum((b - mean) ** 2 for b in betas) / 2  # 0.0225
    total = sum(variances) / 3 + (1 + 1 / 3) * between  # 0.02 + 0.03 = 0.05
    assert total == pytest.approx(0.05, abs=1e-15)
    res = rubin.pool_estimates(betas, variances)
    assert float(res.variance) == pytest.approx(total, rel=1e-14)
    assert float(res.z) == pytest.approx(0.35 / math.sqrt(0.05), rel=1e-14)


def test_d2_by_hand():
    q, df, m = [10.0, 14.0, 12.0], 4.0, 3
    roots = [math.sqrt(x) for x in q]
    mean_root = sum(roots) / m
    r = (1 + 1 / m) * sum((x - mean_root) ** 2 for x in roots) / (m - 1)
    f = (sum(q) / m / df - (m + 1) / (m - 1) * r) / (1 + r)
    df2 = (m - 1) / df ** (3 / m) * (1 + 1 / r) ** 2
    p = stats.f.sf(f, df, df2)
    res = rubin.pool_chi_square(q, df)
    assert float(res.r) == pytest.approx(r, rel=1e-13)
    assert float(res.f) == pytest.approx(f, rel=1e-13)
    assert float(res.df2) == pytest.approx(df2, rel=1e-13)
    assert float(res.p) == pytest.approx(p, rel=1e-12)
    assert float(res.q) == pytest.approx(stats.chi2.isf(p, df), rel=1e-10)
    assert stats.chi2.sf(float(res.q), df) == pytest.approx(p, rel=1e-10)  # same p
    # for the record: r = 0.1120, F = 2.497, df2 = 49.3, p = 0.0546, pooled Q = 9.27 (< mean 12)
    assert (round(r, 4), round(f, 3), round(df2, 1), round(p, 4)) == (0.112, 2.497, 49.3, 0.0546)
    assert float(res.q) == pytest.approx(9.2736, abs=1e-4)


def test_d2_with_one_imputation_or_no_spread_is_the_plain_chi_square():
    for q in ([9.0], [9.0, 9.0, 9.0]):
        res = rubin.pool_chi_square(q, 3)
        assert float(res.r) == 0.0 and np.isinf(res.df2)
        assert float(res.q) == pytest.approx(9.0, rel=1e-15)
        assert float(res.p) == pytest.approx(stats.chi2.sf(9.0, 3), rel=1e-14)
    single = rubin.pool_estimates([0.3], [0.02])
    assert float(single.variance) == 0.02 and float(single.between) == 0.0


def test_d2_clips_f_at_zero():
    # widely spread small Q: the correction term exceeds mean Q / df
    res = rubin.pool_chi_square([0.1, 9.0], 2)
    assert float(res.f) == 0.0 and float(res.q) == 0.0 and float(res.p) == 1.0


def test_d2_keeps_q_finite_when_p_underflows():
    res = rubin.pool_chi_square([5000.0, 5000.0], 3)
    assert np.isfinite(res.q) and float(res.p) == rubin.P_FLOOR and float(res.q) > 1000
    spread = rubin.pool_chi_square([5000.0, 5100.0], 3)  # r = 0.37, df2 = 2.6: a heavy F tail
    assert float(spread.df2) == pytest.approx(2.625, abs=1e-3) and 1e-5 < float(spread.p) < 1e-3


def test_vectorised_over_voxels_with_the_imputation_axis(rng):
    q = rng.chisquare(5, (4, 6, 5)) * rng.uniform(0.5, 3, (1, 6, 1))  # (voxel, voxel, imputation)
    res = rubin.pool_chi_square(q, 5, axis=2)
    assert res.q.shape == (4, 6)
    for idx in np.ndindex(4, 6):
        one = rubin.pool_chi_square(q[idx], 5)
        assert float(one.q) == pytest.approx(res.q[idx], rel=1e-12)
    df = rng.integers(1, 9, (4, 6)).astype(float)
    res = rubin.pool_chi_square(np.moveaxis(q, 2, 0), df, axis=0)
    assert float(rubin.pool_chi_square(q[1, 2], df[1, 2]).q) == pytest.approx(res.q[1, 2], rel=1e-12)
    beta, var = rng.normal(size=(3, 4, 7)), rng.uniform(0.01, 0.1, (3, 4, 7))
    pooled = rubin.pool_estimates(beta, var, axis=-1)
    assert pooled.z.shape == (3, 4)
    assert pooled.variance[2, 1] == pytest.approx(
        var[2, 1].mean() + (1 + 1 / 7) * beta[2, 1].var(ddof=1), rel=1e-13)


def test_square_root_pooling():
    assert float(rubin.pool_square_root([0.04, 0.09])) == pytest.approx(0.0625, rel=1e-14)
    assert float(rubin.pool_square_root([0.0, 0.16, -1e-17])) == pytest.approx((0.4 / 3) ** 2, rel=1e-14)
    np.testing.assert_allclose(rubin.pool_square_root(np.array([[0.25, 0.0], [0.25, 1.0]]), axis=0),
                               [0.25, 0.25])


def test_bad_input():
    with pytest.raises(ValueError, match="shapes differ"):
        rubin.pool_estimates([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="df must be positive"):
        rubin.pool_chi_square([1.0, 2.0], 0)
    with pytest.raises(ValueError, match="imputation axis"):
        rubin.pool_square_root(1.0)
