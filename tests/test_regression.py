"""Meta-regression kernel against PyMARE, statsmodels and the DerSimonian-Laird mean."""

from __future__ import annotations

import numpy as np
import pymare
import pytest
import statsmodels.api as sm
from pymare.estimators import DerSimonianLaird

from daskmeta.stats.random_effects import dersimonian_laird
from daskmeta.stats.regression import (
    SDM_CONTRASTS,
    Contrast,
    MetaRegression,
    linear_contrasts,
    meta_regression,
    original_units,
    rescale,
)

RTOL = 1e-8
ATOL = 1e-10


def _design(rng, k, p):
    """Intercept plus ``p - 1`` regressors rescaled to [0, 1]."""
    columns = [np.ones(k)] + [rescale(rng.uniform(18, 65, size=k))[0] for _ in range(p - 1)]
    return np.column_stack(columns)


def _studies(rng, design, n_voxels, spread=0.4):
    """Effects following ``design @ beta`` plus between-study sd ``spread`` and sampling error."""
    k, p = design.shape
    beta = rng.normal(0.2, 0.5, size=(p, n_voxels))
    variance = rng.uniform(0.02, 0.3, size=(k, n_voxels))
    true = design @ beta + spread * rng.normal(size=(k, n_voxels))
    return true + rng.normal(size=(k, n_voxels)) * np.sqrt(variance), variance


def _pymare(effect, variance, design):
    est = DerSimonianLaird(small_sample_correction="wald")
    est.fit_dataset(pymare.Dataset(y=effect, v=variance, X=design, add_intercept=False))
    return est.params_["fe_params"], est.params_["inv_cov"], est.params_["tau2"]


def _statsmodels(effect, variance, design, tau2):
    return sm.WLS(effect, design, weights=1.0 / (variance + tau2)).fit(cov_type="fixed scale")


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("k", [6, 12, 30])
def test_matches_pymare(rng, k, p):
    design = _design(rng, k, p)
    effect, variance = _studies(rng, design, 40)
    res = meta_regression(effect, variance, design)
    beta, cov, tau2 = _pymare(effect, variance, design)
    assert isinstance(res, MetaRegression)
    assert res.beta.shape == (p, 40) and res.cov.shape == (p, p, 40) and res.tau2.shape == (40,)
    assert res.df == k - p
    assert (res.tau2 > 0).sum() > 20
    np.testing.assert_allclose(res.beta, beta, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.cov, cov, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.tau2, tau2, rtol=RTOL, atol=ATOL)
    se = np.sqrt(np.diagonal(cov).T)
    np.testing.assert_allclose(res.z, beta / se, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("p", [2, 3])
def test_matches_statsmodels_at_random_voxels(rng, p):
    k, n_voxels = 15, 500
    design = _design(rng, k, p)
    effect, variance = _studies(rng, design, n_voxels)
    res = meta_regression(effect, variance, design)
    for voxel in rng.choice(n_voxels, size=8, replace=False):
        fit = _statsmodels(effect[:, voxel], variance[:, voxel], design, res.tau2[voxel])
        np.testing.assert_allclose(res.beta[:, voxel], fit.params, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(res.cov[:, :, voxel], fit.cov_params(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(res.z[:, voxel], fit.tvalues, rtol=RTOL, atol=ATOL)
        # Q_E is the weighted residual sum of squares of the fixed-effect (tau2 = 0) fit.
        fe = _statsmodels(effect[:, voxel], variance[:, voxel], design, 0.0)
        np.testing.assert_allclose(res.q_e[voxel], fe.ssr, rtol=RTOL, atol=ATOL)


def test_vectorised_equals_column_by_column(rng):
    k, n_voxels = 10, 300
    design = _design(rng, k, 2)
    effect, variance = _studies(rng, design, n_voxels)
    res = meta_regression(effect, variance, design)
    for voxel in range(0, n_voxels, 37):
        one = meta_regression(effect[:, voxel], variance[:, voxel], design)
        assert one.beta.shape == (2,) and one.cov.shape == (2, 2) and one.tau2.shape == ()
        beta, cov, tau2 = _pymare(effect[:, voxel], variance[:, voxel], design)
        for field in ("beta", "cov", "z", "tau2", "q_e"):
            np.testing.assert_allclose(
                getattr(res, field)[..., voxel], getattr(one, field), rtol=1e-12, atol=1e-14
            )
        np.testing.assert_allclose(one.beta, beta[:, 0], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(one.cov, cov[:, :, 0], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(one.tau2, tau2[0], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("p", [2, 3])
def test_tau2_zero_is_fixed_effect_wls(rng, p):
    # Effects scattered less than their sampling error around the line: Q_E < k - p.
    k = 20
    design = _design(rng, k, p)
    variance = rng.uniform(0.05, 0.3, size=(k, 30))
    effect = design @ rng.normal(size=(p, 30)) + 0.1 * rng.normal(size=(k, 30)) * np.sqrt(variance)
    res = meta_regression(effect, variance, design)
    beta, cov, tau2 = _pymare(effect, variance, design)
    assert np.all(res.tau2 == 0.0) and np.all(tau2 == 0.0)
    np.testing.assert_allclose(res.beta, beta, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.cov, cov, rtol=RTOL, atol=ATOL)
    for voxel in (0, 17):
        fit = _statsmodels(effect[:, voxel], variance[:, voxel], design, 0.0)
        np.testing.assert_allclose(res.beta[:, voxel], fit.params, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(res.cov[:, :, voxel], fit.cov_params(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("k", [2, 3, 8, 25])
def test_intercept_only_is_dersimonian_laird(rng, k):
    design = np.ones((k, 1))
    effect, variance = _studies(rng, design, 60)
    res = meta_regression(effect, variance, design)
    dl = dersimonian_laird(effect, variance)
    if k > 2:
        assert (dl.tau2 > 0).any()
    np.testing.assert_allclose(res.beta[0], dl.effect, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.cov[0, 0], dl.variance, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.z[0], dl.z, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.tau2, dl.tau2, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.q_e, dl.q, rtol=1e-10, atol=1e-10)
    assert res.df == k - 1


def test_study_axis_and_voxel_shape(rng):
    k = 9
    design = _design(rng, k, 2)
    effect, variance = _studies(rng, design, 24)
    flat = meta_regression(effect, variance, design)
    cube_effect = np.moveaxis(effect.reshape(k, 2, 3, 4), 0, -1)
    cube_variance = np.moveaxis(variance.reshape(k, 2, 3, 4), 0, -1)
    cube = meta_regression(cube_effect, cube_variance, design, axis=-1)
    assert cube.beta.shape == (2, 2, 3, 4) and cube.cov.shape == (2, 2, 2, 3, 4)
    assert cube.tau2.shape == (2, 3, 4)
    for field in ("beta", "cov", "z", "tau2", "q_e"):
        flat_field = getattr(flat, field)
        np.testing.assert_array_equal(
            getattr(cube, field), flat_field.reshape(*flat_field.shape[:-1], 2, 3, 4)
        )


def test_float32_input_accumulates_in_float64(rng):
    design = _design(rng, 12, 2)
    effect, variance = _studies(rng, design, 20)
    effect32, variance32 = effect.astype(np.float32), variance.astype(np.float32)
    res = meta_regression(effect32, variance32, design)
    assert res.beta.dtype == np.float64 and res.tau2.dtype == np.float64
    beta, _, tau2 = _pymare(effect32.astype(np.float64), variance32.astype(np.float64), design)
    np.testing.assert_allclose(res.beta, beta, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(res.tau2, tau2, rtol=RTOL, atol=ATOL)


def test_sdm_contrasts_match_statsmodels(rng):
    k = 14
    design = _design(rng, k, 2)
    effect, variance = _studies(rng, design, 50)
    res = meta_regression(effect, variance, design)
    out = linear_contrasts(res)
    assert list(out) == ["0", "1", "1m0"] and all(isinstance(c, Contrast) for c in out.values())
    np.testing.assert_allclose(out["0"].estimate, res.beta[0], rtol=1e-12)
    np.testing.assert_allclose(out["1"].estimate, res.beta[0] + res.beta[1], rtol=1e-12)
    np.testing.assert_allclose(out["1m0"].estimate, res.beta[1], rtol=1e-12)
    np.testing.assert_allclose(out["1m0"].z, res.z[1], rtol=1e-12)
    for voxel in (3, 41):
        fit = _statsmodels(effect[:, voxel], variance[:, voxel], design, res.tau2[voxel])
        for name, vector in SDM_CONTRASTS.items():
            test = fit.t_test(np.asarray(vector)[None, :])
            np.testing.assert_allclose(out[name].estimate[voxel], test.effect[0], rtol=RTOL)
            np.testing.assert_allclose(out[name].variance[voxel], test.sd[0, 0] ** 2, rtol=RTOL)
            np.testing.assert_allclose(out[name].z[voxel], test.tvalue[0, 0], rtol=RTOL)


def test_custom_contrast_for_three_columns(rng):
    design = _design(rng, 12, 3)
    effect, variance = _studies(rng, design, 5)
    res = meta_regression(effect, variance, design)
    out = linear_contrasts(res, {"x2 - x1": [0, -1, 1]})
    c = np.array([0.0, -1.0, 1.0])
    np.testing.assert_allclose(out["x2 - x1"].estimate, c @ res.beta, rtol=1e-12)
    np.testing.assert_allclose(
        out["x2 - x1"].variance, np.einsum("p,pqv,q->v", c, res.cov, c), rtol=1e-12
    )


def test_planted_slope_is_found(rng):
    k = 40
    x01, _, _ = rescale(rng.uniform(20, 60, size=k))
    design = np.column_stack([np.ones(k), x01])
    variance = rng.uniform(0.05, 0.15, size=(k, 1))
    effect = (0.8 * x01)[:, None] + rng.normal(size=(k, 1)) * np.sqrt(variance)
    slope = linear_contrasts(meta_regression(effect, variance, design))["1m0"]
    assert float(slope.z[0]) > 3


def test_rescale_and_original_units():
    x01, low, high = rescale([30, 20, 60, 40])
    np.testing.assert_allclose(x01, [0.25, 0.0, 1.0, 0.5])
    assert (low, high) == (20.0, 60.0)
    a, b = original_units(0.1, 0.8, low, high)
    x = np.array([20.0, 33.0, 60.0])
    np.testing.assert_allclose(a + b * x, 0.1 + 0.8 * (x - low) / (high - low), rtol=1e-12)
    with pytest.raises(ValueError, match="'high' must exceed 'low'"):
        original_units(0.1, 0.8, 3.0, 3.0)


@pytest.mark.parametrize(
    ("x", "match"),
    [([1.0, 1.0, 1.0], "constant"), ([1.0, np.nan, 2.0], "missing the covariate"),
     ([1.0, np.inf], "finite"), ([[1.0, 2.0]], "1-D"), ([], "non-empty")],
)
def test_rescale_rejects(x, match):
    with pytest.raises(ValueError, match=match):
        rescale(x)


def test_meta_regression_rejects_bad_input(rng):
    design = _design(rng, 5, 2)
    effect, variance = _studies(rng, design, 3)
    with pytest.raises(ValueError, match="same shape"):
        meta_regression(effect, variance[:, :2], design)
    with pytest.raises(ValueError, match="'axis' must be in"):
        meta_regression(effect, variance, design, axis=2)
    with pytest.raises(ValueError, match=r"shape \(5, p\)"):
        meta_regression(effect, variance, design[:4])
    with pytest.raises(ValueError, match=r"shape \(5, p\)"):
        meta_regression(effect, variance, design[:, 1])
    with pytest.raises(ValueError, match="more studies than design columns"):
        meta_regression(effect[:2], variance[:2], design[:2])
    with pytest.raises(ValueError, match="rank deficient"):
        meta_regression(effect, variance, np.column_stack([design, 2 * design[:, 1]]))
    bad = design.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        meta_regression(effect, variance, bad)


def test_linear_contrasts_rejects_bad_vectors(rng):
    design = _design(rng, 8, 3)
    effect, variance = _studies(rng, design, 2)
    res = meta_regression(effect, variance, design)
    with pytest.raises(ValueError, match="length p=3"):
        linear_contrasts(res)  # the SDM default is for a [1, x01] design
    with pytest.raises(ValueError, match="non-zero"):
        linear_contrasts(res, {"none": [0, 0, 0]})
