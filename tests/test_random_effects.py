"""DerSimonian-Laird kernel against PyMARE, hand-worked numbers, docs/methods.md section 4."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pymare
import pytest
from pymare.estimators import DerSimonianLaird
from scipy import stats

from daskmeta.stats.random_effects import (
    Q_Z_LIMIT,
    RandomEffects,
    dersimonian_laird,
    dl_from_sums,
    heterogeneity_z,
    pool_with_tau2,
    weighted_sums,
)

RTOL = 1e-8
ATOL = 1e-10


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


def _studies(rng, k, n_voxels, spread=0.5):
    """Heterogeneous study effects (between-study sd ``spread``) and their variances."""
    variance = rng.uniform(0.02, 0.3, size=(k, n_voxels))
    true = rng.normal(0.3, spread, size=(k, n_voxels))
    effect = true + rng.normal(size=(k, n_voxels)) * np.sqrt(variance)
    return effect, variance


def _pymare(effect, variance):
    est = DerSimonianLaird(small_sample_correction="wald")
    summary = est.fit_dataset(pymare.Dataset(y=effect, v=variance)).summary()
    fe = summary.get_fe_stats()
    het = summary.get_heterogeneity_stats()
    return fe["est"][0], summary.tau2, fe["z"][0], fe["se"][0] ** 2, het["Q"], het["I^2"]


@pytest.mark.parametrize("k", [3, 4, 7, 12, 30])
def test_matches_pymare(rng, k):
    effect, variance = _studies(rng, k, 25)
    res = dersimonian_laird(effect, variance)
    est, tau2, z, var, q, i2 = _pymare(effect, variance)
    assert (res.tau2 > 0).any()
    np.testing.assert_allclose(res.effect, est, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.tau2, tau2, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.z, z, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.variance, var, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.q, q, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(100 * res.i2, i2, rtol=RTOL, atol=1e-8)


@pytest.mark.parametrize("k", [3, 10, 30])
def test_matches_pymare_homogeneous(rng, k):
    # Effects scattered less than their sampling error: Q < k - 1 everywhere, so tau2 = 0.
    variance = rng.uniform(0.05, 0.3, size=(k, 40))
    effect = 0.4 + 0.1 * rng.normal(size=(k, 40)) * np.sqrt(variance)
    res = dersimonian_laird(effect, variance)
    est, tau2, z, _, _, _ = _pymare(effect, variance)
    assert np.all(res.tau2 == 0.0) and np.all(tau2 == 0.0)
    assert np.all(res.i2 == 0.0)
    np.testing.assert_allclose(res.effect, est, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.z, z, rtol=RTOL, atol=ATOL)
    # tau2 = 0 is the fixed-effect mean.
    w = 1 / variance
    np.testing.assert_allclose(res.effect, (w * effect).sum(0) / w.sum(0), rtol=1e-12)


def test_hand_worked_three_studies():
    # y = (0.2, 0.5, 0.8), v = (0.04, 0.05, 0.10)  ->  w = 1/v = (25, 20, 10)
    # sum w     = 55
    # sum w y   = 5 + 10 + 8            = 23
    # sum w y^2 = 1 + 5 + 6.4           = 12.4
    # sum w^2   = 625 + 400 + 100       = 1125
    # Q    = 12.4 - 23^2 / 55 = (682 - 529) / 55       = 153/55   = 2.78181818...
    # C    = 55 - 1125 / 55   = (3025 - 1125) / 55     = 1900/55  = 34.5454545...
    # tau2 = (153/55 - 2) / (1900/55) = (153 - 110) / 1900 = 43/1900 = 0.0226315789...
    # w*   = 1 / (v + 43/1900) = 1900/119, 1900/138, 1900/233
    # mu   = (0.2/119 + 0.5/138 + 0.8/233) / (1/119 + 1/138 + 1/233) = 0.43814660...
    # var  = 1 / (1900 (1/119 + 1/138 + 1/233))                     = 0.02639288...
    # z    = mu / sqrt(var)                                          = 2.69696971...
    # I2   = (153/55 - 2) / (153/55) = 43/153                        = 0.28104575...
    # p_Q  = chi2.sf(Q, df=2) = exp(-Q/2) = exp(-153/110)            = 0.24884898...
    inv = np.array([1 / 119, 1 / 138, 1 / 233])
    mu = (0.2 * inv[0] + 0.5 * inv[1] + 0.8 * inv[2]) / inv.sum()
    var = 1 / (1900 * inv.sum())
    expected = {
        "q": 153 / 55,
        "tau2": 43 / 1900,
        "effect": mu,
        "variance": var,
        "z": mu / np.sqrt(var),
        "i2": 43 / 153,
        "p_q": np.exp(-153 / 110),
    }
    res = dersimonian_laird([0.2, 0.5, 0.8], [0.04, 0.05, 0.10])
    for name, value in expected.items():
        assert abs(float(getattr(res, name)) - value) < 1e-10, name
    assert abs(mu - 0.4381466) < 1e-7 and abs(mu / np.sqrt(var) - 2.6969697) < 1e-7
    assert abs(float(res.q_z) - stats.norm.isf(np.exp(-153 / 110))) < 1e-10


def test_q_i2_p_against_spec_formulas(rng):
    k = 8
    effect, variance = _studies(rng, k, 50)
    w = 1 / variance
    q = (w * effect**2).sum(0) - (w * effect).sum(0) ** 2 / w.sum(0)
    i2 = np.where(q > 0, np.maximum(0, (q - (k - 1)) / q), 0.0)
    c = w.sum(0) - (w**2).sum(0) / w.sum(0)
    tau2 = np.maximum(0, (q - (k - 1)) / c)
    res = dersimonian_laird(effect, variance)
    np.testing.assert_allclose(res.q, q, rtol=1e-10)
    np.testing.assert_allclose(res.i2, i2, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res.tau2, tau2, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res.p_q, stats.chi2.sf(q, k - 1), rtol=1e-9)
    np.testing.assert_allclose(res.q_z, stats.norm.isf(stats.chi2.sf(q, k - 1)), rtol=1e-7)


def test_axis_and_batch_dimensions(rng):
    effect, variance = _studies(rng, 6, 4 * 5)
    ref = dersimonian_laird(effect, variance)
    res_t = dersimonian_laird(effect.T, variance.T, axis=1)
    res_neg = dersimonian_laird(effect.T, variance.T, axis=-1)
    cube_y = effect.reshape(6, 4, 5).transpose(1, 0, 2)  # (4, study, 5)
    cube_v = variance.reshape(6, 4, 5).transpose(1, 0, 2)
    res_cube = dersimonian_laird(cube_y, cube_v, axis=1)
    for name in RandomEffects._fields:
        expected = getattr(ref, name)
        np.testing.assert_allclose(getattr(res_t, name), expected, rtol=1e-14)
        np.testing.assert_allclose(getattr(res_neg, name), expected, rtol=1e-14)
        assert getattr(res_cube, name).shape == (4, 5)
        np.testing.assert_allclose(getattr(res_cube, name).ravel(), expected, rtol=1e-14)


def test_float32_input_accumulates_in_float64(rng):
    effect, variance = _studies(rng, 20, 30)
    effect32, variance32 = effect.astype(np.float32), variance.astype(np.float32)
    res32 = dersimonian_laird(effect32, variance32)
    res64 = dersimonian_laird(effect32.astype(np.float64), variance32.astype(np.float64))
    for name in RandomEffects._fields:
        assert getattr(res32, name).dtype == np.float64
        np.testing.assert_array_equal(getattr(res32, name), getattr(res64, name))


def test_zero_q_and_degenerate_inputs_are_nan_free():
    # Identical effects: Q = 0, I2 = 0 (not 0/0), tau2 = 0, p_Q = 1, q_z finite.
    effect = np.full((5, 3), 0.7)
    effect[:, 2] = 0.0  # all-zero voxel, as outside every study's peaks
    variance = np.array([[0.1], [0.2], [0.3], [0.4], [0.5]]) * np.ones((1, 3))
    res = dersimonian_laird(effect, variance)
    for name in RandomEffects._fields:
        assert np.all(np.isfinite(getattr(res, name))), name
    np.testing.assert_allclose(res.q, 0.0, atol=1e-20)  # rounding of mu_FE only
    np.testing.assert_array_equal(res.q[2], 0.0)
    np.testing.assert_array_equal(res.i2, 0.0)
    np.testing.assert_array_equal(res.tau2, 0.0)
    np.testing.assert_allclose(res.effect, [0.7, 0.7, 0.0], rtol=1e-14)
    np.testing.assert_array_equal(res.z[2], 0.0)
    assert np.all(res.q_z < -16) and res.q_z[2] == -Q_Z_LIMIT  # Phi^-1(0) clipped


def test_heterogeneity_z_stays_finite():
    p_q, q_z = heterogeneity_z(np.array([0.0, 1e-3, 3.0, 50.0, 2000.0, 1e6]), 5)
    assert np.all(np.isfinite(q_z))
    assert np.all(np.diff(q_z) >= 0)
    assert q_z[0] == -Q_Z_LIMIT and q_z[-1] == Q_Z_LIMIT and p_q[-1] == 0.0
    np.testing.assert_allclose(q_z[1:4], stats.norm.isf(stats.chi2.sf([1e-3, 3.0, 50.0], 4)))


def test_validation():
    with pytest.raises(ValueError, match="at least 2 studies"):
        dersimonian_laird([[0.1, 0.2]], [[0.1, 0.1]])
    with pytest.raises(ValueError, match="same shape"):
        dersimonian_laird(np.zeros((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="'axis'"):
        dersimonian_laird(np.zeros((3, 4)), np.ones((3, 4)), axis=2)
    with pytest.raises(ValueError, match="at least 2 studies"):
        dl_from_sums(1.0, 1.0, 1.0, 1.0, k=1)


def test_sums_path_matches_and_gives_leave_one_out(rng):
    k = 9
    effect, variance = _studies(rng, k, 60)
    full = dersimonian_laird(effect, variance)
    sums = weighted_sums(effect, variance)
    het = dl_from_sums(*sums)
    np.testing.assert_allclose(het.q, full.q, rtol=1e-10)
    np.testing.assert_allclose(het.tau2, full.tau2, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(het.i2, full.i2, rtol=1e-10, atol=1e-14)
    mu, var, z = pool_with_tau2(effect, variance, het.tau2)
    np.testing.assert_allclose(mu, full.effect, rtol=1e-9)
    np.testing.assert_allclose(var, full.variance, rtol=1e-9)
    np.testing.assert_allclose(z, full.z, rtol=1e-9)

    # Jackknife: totals minus each study's own terms, batch axis = left-out study.
    w = 1 / variance
    loo = dl_from_sums(
        sums.sum_w - w, sums.sum_wy - w * effect, sums.sum_wy2 - w * effect**2,
        sums.sum_w2 - w**2, k - 1,
    )
    for left_out in range(k):
        keep = np.arange(k) != left_out
        ref = dersimonian_laird(effect[keep], variance[keep])
        np.testing.assert_allclose(loo.tau2[left_out], ref.tau2, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(loo.q[left_out], ref.q, rtol=1e-9)
        mu, _, _ = pool_with_tau2(effect[keep], variance[keep], loo.tau2[left_out])
        np.testing.assert_allclose(mu, ref.effect, rtol=1e-9)


def test_kernels_do_not_import_dask():
    code = (
        "import sys, daskmeta.stats; "
        "bad = [m for m in ('dask', 'xarray', 'nibabel') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
