"""Imputation draws, coherent uniforms and masked smoothing of SDM-PSI (daskmeta.stats.imputation)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from daskmeta.stats import imputation
from daskmeta.stats.imputation import (
    coherent_uniforms,
    smooth_map,
    truncated_draws,
    truncated_draws_many,
)


def _intervals(rng, n):
    lo = rng.uniform(-1.5, 0.5, n)
    up = lo + rng.uniform(0.01, 2.0, n)
    return lo, up


def test_draws_lie_within_bounds_and_known_values_are_exact():
    rng = np.random.default_rng(0)
    n = 5000
    lo, up = _intervals(rng, n)
    known = rng.random(n) < 0.2
    up = np.where(known, lo, up)
    mu = rng.normal(0, 2, n)  # some means far outside their interval
    u = rng.random(n)
    u[:10], u[10:20] = 0.0, 1.0
    draws = truncated_draws(mu, 0.05, lo, up, 0.1, 0.014, u)
    assert ((draws >= lo) & (draws <= up)).all()
    assert (draws[known] == lo[known]).all()
    unknown = ~known
    assert np.allclose(draws[:10][unknown[:10]], lo[:10][unknown[:10]])
    assert np.allclose(draws[10:20][unknown[10:20]], up[10:20][unknown[10:20]])


def test_wide_interval_gives_the_normal():
    rng = np.random.default_rng(1)
    n = 4000
    mu, tau2, a = 0.3, 0.05, 0.1
    u = rng.random(n)
    draws = truncated_draws(np.full(n, mu), tau2, -50.0, 50.0, a, 0.0, u, bins=20000)
    assert stats.kstest(draws, stats.norm(mu, np.sqrt(a + tau2)).cdf).pvalue > 1e-3


def test_narrow_interval_is_nearly_uniform():
    rng = np.random.default_rng(2)
    n = 4000
    draws = truncated_draws(np.full(n, 0.2), 0.0, 0.1, 0.15, 0.1, 0.014, rng.random(n))
    assert stats.kstest(draws, stats.uniform(0.1, 0.05).cdf).pvalue > 1e-3


def test_variance_depends_on_the_value():
    """With c > 0 the density is the normal with the variance at each value."""
    y = np.linspace(-3, 3, 2001)
    mu, tau2, a, c = 0.5, 0.02, 0.1, 0.3
    var = a + c * y**2 + tau2
    density = np.exp(-(y - mu) ** 2 / (2 * var)) / np.sqrt(var)
    cdf = np.concatenate([[0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(y))])
    cdf /= cdf[-1]
    u = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
    draws = truncated_draws(np.full(5, mu), tau2, -3.0, 3.0, a, c, u, bins=4000)
    np.testing.assert_allclose(draws, np.interp(u, cdf, y), atol=2e-3)


def test_inverse_cdf_is_monotone_and_continuous_in_u():
    u = np.linspace(0, 1, 20001)
    n = u.size
    draws = truncated_draws(np.full(n, 0.4), 0.1, -0.7, 0.9, 0.08, 0.02, u, bins=50)
    assert (np.diff(draws) >= 0).all()
    nudged = truncated_draws(np.full(n, 0.4), 0.1, -0.7, 0.9, 0.08, 0.02,
                             np.minimum(u + 1e-9, 1.0), bins=50)
    assert np.max(nudged - draws) < 1e-6  # no jumps, at the bin edges either
    assert draws[0] == pytest.approx(-0.7) and draws[-1] == pytest.approx(0.9)


def test_slices_do_not_change_the_draws(monkeypatch):
    rng = np.random.default_rng(3)
    n = 1000
    lo, up = _intervals(rng, n)
    args = (rng.normal(0, 1, n), rng.uniform(0, 0.2, n), lo, up, 0.1, 0.014, rng.random(n))
    whole = truncated_draws(*args)
    monkeypatch.setattr(imputation, "SLICE_ELEMENTS", 500 * 7)
    assert np.array_equal(truncated_draws(*args), whole)


def test_bad_draw_inputs():
    with pytest.raises(ValueError, match="within"):
        truncated_draws(0.0, 0.0, -1.0, 1.0, 0.1, 0.0, 1.5)
    with pytest.raises(ValueError, match="exceeds"):
        truncated_draws(0.0, 0.0, 1.0, -1.0, 0.1, 0.0, 0.5)
    with pytest.raises(ValueError, match="bins"):
        truncated_draws(0.0, 0.0, -1.0, 1.0, 0.1, 0.0, 0.5, bins=0)


def _same_bits(left, right):
    """Equal bit for bit (NaN payloads and signed zeros included)."""
    return left.shape == right.shape and left.dtype == right.dtype and left.tobytes() == right.tobytes()


def _many_case(rng, n, rows):
    """Voxels of every kind: known, tiny and wide intervals, means far outside, edge uniforms."""
    lo, up = _intervals(rng, n)
    kind = rng.integers(0, 5, n)
    up = np.where(kind == 0, lo, up)  # known
    up = np.where(kind == 1, lo + rng.uniform(1e-6, 1e-4, n), up)  # just wider than KNOWN_WIDTH
    up = np.where(kind == 2, lo + 5e-7, up)  # narrower than KNOWN_WIDTH: known
    mu = np.where(kind == 3, rng.choice([-1.0, 1.0], n) * rng.uniform(5, 40, n), rng.normal(0, 1, n))
    u = rng.random((rows, n))
    u[0, : n // 4], u[1, : n // 4] = 0.0, 1.0  # the edges
    u[2, : n // 4] = 1.0 - 2.0**-53  # u * total may round to total
    u[3, : n // 4] = 2.0**-60
    return mu, rng.uniform(0, 0.3, n), lo, up, u


@pytest.mark.parametrize("bins", [1, 2, 7, 500])
def test_many_rows_equal_the_single_draws_bit_for_bit(bins):
    """Row r of truncated_draws_many is truncated_draws at u[r] (docs/methods.md, section 14.1)."""
    rng = np.random.default_rng(bins)
    n, rows = 1200, 6
    mu, tau2, lo, up, u = _many_case(rng, n, rows)
    a, c = rng.uniform(0.05, 0.2, n), rng.uniform(0.0, 0.05, n)
    for params in ((mu, tau2, lo, up, a, c), (mu, 0.0, lo, up, 0.1, 0.014), (0.3, tau2, lo, up, a, 0.0)):
        many = truncated_draws_many(*params, u, bins=bins)
        assert many.shape == (rows, n)
        with np.errstate(invalid="ignore"):
            for r in range(rows):
                assert _same_bits(many[r], truncated_draws(*params, u[r], bins=bins)), r


def test_many_draws_keep_known_values_and_far_means_at_the_edges():
    rng = np.random.default_rng(10)
    lo = np.array([0.2, -0.4, 0.0, 0.0])
    up = np.array([0.2, 0.6, 2.0, 2.0])
    mu = np.array([0.0, 0.1, -30.0, 30.0])
    u = np.vstack([rng.random(4), [0.0] * 4, [0.5] * 4])
    with np.errstate(invalid="ignore"):
        many = truncated_draws_many(mu, 0.0, lo, up, 0.01, 0.0, u)
        single = np.stack([truncated_draws(mu, 0.0, lo, up, 0.01, 0.0, row) for row in u])
    assert _same_bits(many, single)
    assert (many[:, 0] == 0.2).all()
    # the mass at the near end (beyond the bins whose density underflows to 0)
    assert (many[:, 2] < 0.01).all() and (many[:, 3] > 1.7).all()


def test_many_slabs_do_not_change_the_draws(monkeypatch):
    rng = np.random.default_rng(11)
    n = 1000
    mu, tau2, lo, up, u = _many_case(rng, n, 5)
    with np.errstate(invalid="ignore"):
        whole = truncated_draws_many(mu, tau2, lo, up, 0.1, 0.014, u)
        monkeypatch.setattr(imputation, "TABLE_ELEMENTS", 500 * 7)
        assert _same_bits(truncated_draws_many(mu, tau2, lo, up, 0.1, 0.014, u), whole)
        monkeypatch.setattr(imputation, "TABLE_ELEMENTS", 1)
        assert _same_bits(truncated_draws_many(mu, tau2, lo, up, 0.1, 0.014, u), whole)


def test_many_draws_without_rows_or_unknown_voxels():
    lo = np.array([0.1, -0.2])
    known = truncated_draws_many(0.0, 0.0, lo, lo, 0.1, 0.0, np.full((3, 2), 0.5))
    assert known.tolist() == [[0.1, -0.2]] * 3
    assert truncated_draws_many(0.0, 0.0, lo, lo + 1, 0.1, 0.0, np.empty((0, 2))).shape == (0, 2)


def test_bad_many_draw_inputs():
    u = np.full((2, 3), 0.5)
    with pytest.raises(ValueError, match="n_rows, n_voxels"):
        truncated_draws_many(0.0, 0.0, -1.0, 1.0, 0.1, 0.0, np.full(3, 0.5))
    with pytest.raises(ValueError, match="one value per column"):
        truncated_draws_many(np.zeros(4), 0.0, -1.0, 1.0, 0.1, 0.0, u)
    with pytest.raises(ValueError, match="within"):
        truncated_draws_many(0.0, 0.0, -1.0, 1.0, 0.1, 0.0, u + 1.0)
    with pytest.raises(ValueError, match="exceeds"):
        truncated_draws_many(0.0, 0.0, 1.0, -1.0, 0.1, 0.0, u)
    with pytest.raises(ValueError, match="finite"):
        truncated_draws_many(np.nan, 0.0, -1.0, 1.0, 0.1, 0.0, u)
    with pytest.raises(ValueError, match="bins"):
        truncated_draws_many(0.0, 0.0, -1.0, 1.0, 0.1, 0.0, u, bins=2.5)


GRID = (40, 44, 36)


def _box_mask(shape=GRID, margin=4):
    ijk = np.indices(shape).reshape(3, -1).T
    inside = np.all((ijk >= margin) & (ijk < np.array(shape) - margin), axis=1)
    return ijk[inside]


def test_coherent_uniforms_are_uniform_and_smooth():
    ijk = _box_mask()
    u = coherent_uniforms(np.random.default_rng(4), GRID, ijk, fwhm_mm=20.0)
    assert u.shape == (len(ijk),)
    assert ((u > 0) & (u < 1)).all()
    # marginals: the same voxel across independent fields
    probe = np.array([0, len(ijk) // 2, len(ijk) - 1])
    samples = np.array([coherent_uniforms(np.random.default_rng(100 + r), GRID, ijk, 20.0)[probe]
                        for r in range(300)])
    for column in samples.T:
        assert stats.kstest(column, "uniform").pvalue > 1e-3
    # neighbour correlation along the first axis
    volume = np.full(GRID, np.nan)
    volume[tuple(ijk.T)] = u
    left, right = volume[:-1].ravel(), volume[1:].ravel()
    both = np.isfinite(left) & np.isfinite(right)
    assert np.corrcoef(left[both], right[both])[0, 1] > 0.5


def test_noise_field_has_unit_variance_everywhere():
    from daskmeta.stats.imputation import gaussian_noise_field

    fields = np.array([gaussian_noise_field(np.random.default_rng(r), 12.0, (24, 20, 22))
                       for r in range(400)])
    variance = fields.var(axis=0)
    assert abs(variance.mean() - 1.0) < 0.02
    corner = fields[:, 0, 0, 0]
    assert stats.kstest(corner, "norm").pvalue > 1e-3  # wrap: no edge effect


def test_same_seed_same_numbers():
    ijk = _box_mask()
    first = coherent_uniforms(np.random.default_rng(7), GRID, ijk, 12.0)
    second = coherent_uniforms(np.random.default_rng(7), GRID, ijk, 12.0)
    other = coherent_uniforms(np.random.default_rng(8), GRID, ijk, 12.0)
    assert np.array_equal(first, second) and not np.array_equal(first, other)
    n = len(ijk)
    lo = np.full(n, -0.8)
    d1 = truncated_draws(np.zeros(n), 0.0, lo, -lo, 0.1, 0.014, first)
    d2 = truncated_draws(np.zeros(n), 0.0, lo, -lo, 0.1, 0.014, second)
    assert np.array_equal(d1, d2)


def test_smooth_map_keeps_constants_and_smooths():
    ijk = _box_mask(margin=6)
    constant = np.full(len(ijk), 0.37)
    np.testing.assert_allclose(smooth_map(constant, ijk, 20.0, grid_shape=GRID), 0.37, rtol=1e-12)
    rng = np.random.default_rng(5)
    noisy = rng.standard_normal((2, len(ijk)))
    smoothed = smooth_map(noisy, ijk, 10.0, grid_shape=GRID)
    assert smoothed.shape == noisy.shape
    assert smoothed.std() < 0.5 * noisy.std()
    np.testing.assert_allclose(smoothed[1], smooth_map(noisy[1], ijk, 10.0, grid_shape=GRID))
    np.testing.assert_array_equal(smooth_map(noisy, ijk, 0.0, grid_shape=GRID), noisy)
    with pytest.raises(ValueError, match="one value per mask voxel"):
        smooth_map(noisy[:, :-1], ijk, 10.0, grid_shape=GRID)
