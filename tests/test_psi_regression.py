"""SDM-PSI linear models: imputed meta-regression, Rubin's rules, Freedman-Lane (docs/methods.md, 14.5).

The kernels are checked against plain references written here (weighted least squares by
``np.linalg.lstsq``, statsmodels' WLS, Rubin's rules spelled out), the graph against a literal
permutation of the imputed study maps.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from conftest import random_studyset

from daskmeta.analyses.psi import impute, psi
from daskmeta.analyses.recreate import recreate
from daskmeta.null import psi as null_psi
from daskmeta.null.psi_regression import permuted_model_z, study_order
from daskmeta.stats.freedman_lane import freedman_lane, pool_model, reduced_design, reduced_fit
from daskmeta.stats.regression import rescale
from daskmeta.stats.sdm_model import variance_model


def _re_slope(y, v, x):
    """Method-of-moments random-effects meta-regression of one voxel, written out (section 8)."""
    w = 1 / v
    fe = sm.WLS(y, x, weights=w).fit()
    q_e = float((w * (y - x @ fe.params) ** 2).sum())
    k, p = x.shape
    xtwx_inv = np.linalg.inv(x.T @ (w[:, None] * x))
    trace = w.sum() - np.trace(xtwx_inv @ (x.T @ ((w**2)[:, None] * x)))
    tau2 = max(0.0, (q_e - (k - p)) / trace) if trace > 0 else 0.0
    re = sm.WLS(y, x, weights=1 / (v + tau2)).fit()
    cov = np.linalg.inv(x.T @ ((1 / (v + tau2))[:, None] * x))
    return re.params[1], cov[1, 1], tau2, q_e


def test_pooled_model_equals_statsmodels_fits_and_rubin_rules_by_hand():
    gen = np.random.default_rng(4)
    k, m, n_voxels = 7, 3, 5
    x = np.column_stack([np.ones(k), rescale(gen.uniform(20, 60, k))[0], gen.normal(size=k)])
    y = gen.normal(0.2, 0.5, (k, m, n_voxels))
    v = gen.uniform(0.05, 0.2, (k, 1, 1)) + 0.02 * y**2
    pooled = pool_model(y, v, x)
    for voxel in range(n_voxels):
        fits = np.array([_re_slope(y[:, i, voxel], v[:, i, voxel], x) for i in range(m)])
        slopes, variances = fits[:, 0], fits[:, 1]
        total = variances.mean() + (1 + 1 / m) * slopes.var(ddof=1)
        assert pooled.effect[voxel] == pytest.approx(slopes.mean(), rel=1e-10)
        assert pooled.variance[voxel] == pytest.approx(total, rel=1e-10)
        assert pooled.z[voxel] == pytest.approx(slopes.mean() / np.sqrt(total), rel=1e-10)
        assert pooled.tau2[voxel] == pytest.approx(np.sqrt(fits[:, 2]).mean() ** 2, rel=1e-9, abs=1e-14)
        i2 = np.maximum(0, (fits[:, 3] - (k - 3)) / fits[:, 3])
        assert pooled.i2[voxel] == pytest.approx(np.sqrt(i2).mean() ** 2, rel=1e-9, abs=1e-14)


def test_reduced_fit_is_weighted_least_squares():
    gen = np.random.default_rng(5)
    k = 9
    z = np.column_stack([np.ones(k), gen.normal(size=k)])
    y, v = gen.normal(size=(k, 4)), gen.uniform(0.05, 0.3, (k, 4))
    fitted = reduced_fit(y, v, z)
    for voxel in range(4):
        params = sm.WLS(y[:, voxel], z, weights=1 / v[:, voxel]).fit().params
        np.testing.assert_allclose(fitted[:, voxel], z @ params, rtol=1e-12)
    mean_only = reduced_fit(y, v, np.ones((k, 1)))
    np.testing.assert_allclose(mean_only[0], (y / v).sum(0) / (1 / v).sum(0), rtol=1e-13)


def test_freedman_lane_with_one_regressor_permutes_effect_and_variance_together():
    """With Z = 1, y*_s = y_pi(s) and v*_s = v_pi(s): the covariate permutation of
    Higgins & Thompson (2004)."""
    gen = np.random.default_rng(6)
    k = 8
    a, c = gen.uniform(0.05, 0.2, k), gen.uniform(0.01, 0.03, k)
    y = gen.normal(size=(k, 3, 10))
    order = gen.permutation(k)
    y_star, v_star = freedman_lane(y, a, c, np.ones((k, 1)), order)
    np.testing.assert_allclose(y_star, y[order], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(v_star, (a[:, None, None] + c[:, None, None] * y**2)[order], rtol=1e-12)
    same, _ = freedman_lane(y, a, c, np.column_stack([np.ones(k), gen.normal(size=k)]), np.arange(k))
    np.testing.assert_allclose(same, y, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="permutation"):
        freedman_lane(y, a, c, np.ones((k, 1)), np.zeros(k, dtype=int))
    with pytest.raises(ValueError, match="tested column"):
        reduced_design(np.ones((k, 1)))


@pytest.mark.parametrize("columns", [2, 3])
def test_numba_kernel_equals_the_numpy_freedman_lane(columns):
    """The closed-form one-regressor kernel and the general Cholesky kernel against NumPy."""
    gen = np.random.default_rng(columns)
    m, k, n_voxels = 3, 8, 300
    effects = gen.normal(0.1, 0.5, (m, k, n_voxels)).astype(np.float32)
    effects[:, :, :40] = 0.0  # null studies: tau2 = 0 and Q_E = 0 at these voxels
    effects[:, :3, 40:80] *= 4  # heterogeneous: tau2 > 0
    a, c = gen.uniform(0.05, 0.15, k), gen.uniform(0.01, 0.03, k)
    design = np.column_stack([np.ones(k)] + [gen.uniform(size=k) for _ in range(columns - 1)])
    fast = permuted_model_z(effects, a, c, design, 4, "k", 0, 3)
    slow = permuted_model_z(effects, a, c, design, 4, "k", 0, 3, kernel=False)
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)
    assert np.isfinite(fast).all()


@pytest.fixture(scope="module")
def maps():
    studies = random_studyset(n_studies=6, peaks_per_study=4, seed=21)
    return recreate(studies, anisotropy=0.0).persist(scheduler="threads")


@pytest.fixture(scope="module")
def imputed(maps):
    return impute(maps, imputations=2, seed=3, regressors=["age"], name="lm").compute(scheduler="threads")


@pytest.fixture(scope="module")
def result(maps):
    return psi(maps, imputations=2, permutations=6, seed=3, regressors=["age"], name="lm",
               block_size=4).compute(scheduler="threads")


def _model(imputed):
    a, c = variance_model(imputed.n1.values.astype(float), imputed.n2.values.astype(float))
    return imputed.effect.values, a, c, np.asarray(imputed.attrs["design"])


def test_psi_model_null_equals_a_literal_freedman_lane_permutation(maps, imputed, result):
    effects, a, c, design = _model(imputed)
    np.testing.assert_allclose(design[:, 1], rescale(maps.age.values)[0])
    z = permuted_model_z(effects, a, c, design, 3, "lm", 4, 6)
    # the graph's last block (permutations 4 and 5) holds the same maps
    np.testing.assert_array_equal(result.null_max_z.values[4:], z.max(axis=1))
    voxels = np.random.default_rng(1).choice(effects.shape[2], 40, replace=False)
    for row, b in enumerate((4, 5)):
        order = study_order(3, "lm", b, 6)
        slopes, variances = [], []
        for m in range(2):
            for voxel in voxels:
                y = effects[m, :, voxel].astype(np.float64)
                # Z = 1: the weighted mean stays, the residuals move with their variance model
                v = a + c * y**2
                mean = (y / v).sum() / (1 / v).sum()
                y_star = mean + (y - mean)[order]
                v_star = a[order] + c[order] * y_star**2
                slope, var, _, _ = _re_slope(y_star, v_star, design)
                slopes.append(slope)
                variances.append(var)
        slopes = np.reshape(slopes, (2, -1))
        variances = np.reshape(variances, (2, -1))
        total = variances.mean(0) + 1.5 * slopes.var(0, ddof=1)
        np.testing.assert_allclose(z[row, voxels], slopes.mean(0) / np.sqrt(total), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("columns", [2, 3])
def test_model_null_by_voxel_chunks_is_bit_identical(imputed, columns):
    """The null of a linear model, one task per chunk of 4096 voxels (the one-regressor
    kernel's tiles of 64 and the general kernel's voxels do not cross chunks)."""
    effects, a, c, design = _model(imputed)
    if columns == 3:
        design = np.column_stack([design, np.random.default_rng(2).uniform(size=len(a))])
    whole = permuted_model_z(effects, a, c, design, 3, "lm", 0, 3)
    parts = [permuted_model_z(np.ascontiguousarray(effects[:, :, begin:begin + null_psi.CHUNK_VOXELS]),
                              a, c, design, 3, "lm", 0, 3)
             for begin in range(0, effects.shape[2], null_psi.CHUNK_VOXELS)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1).view(np.int64), whole.view(np.int64))


def test_psi_linear_model_is_the_same_whatever_the_stack_chunks(maps, result, monkeypatch):
    monkeypatch.setattr(null_psi, "STACK_CHUNK_BYTES", 2 * 6 * 4 * null_psi.CHUNK_VOXELS)
    narrow = psi(maps, imputations=2, permutations=6, seed=3, regressors=["age"], name="lm", block_size=4)
    assert narrow.z.chunks == maps.effect_lower.chunks[1:]
    got = narrow.compute(scheduler="threads")
    for key in result.data_vars:
        np.testing.assert_array_equal(got[key].values, result[key].values, err_msg=key)


def test_psi_linear_model_outputs_and_fwe(imputed, result):
    assert result.attrs["model"] == "linear" and result.attrs["regressors"] == ["age"]
    effects, a, c, design = _model(imputed)
    y = np.moveaxis(effects.astype(np.float64), 1, 0)
    expected = pool_model(y, a[:, None, None] + c[:, None, None] * y**2, design)
    np.testing.assert_allclose(result.z.values, expected.z, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.effect.values, expected.effect, rtol=1e-10, atol=1e-12)
    top = int(np.argmax(result.tfce.values))
    count = np.sum(result.null_max_tfce.values >= result.tfce.values[top])
    assert result.p_fwe_tfce.values[top] == pytest.approx((1 + count) / 7)
    assert len(set(result.null_max_z.values.round(9))) == 6  # permutations differ


def test_psi_linear_model_rejects_bad_designs(maps):
    with pytest.raises(ValueError, match="no study column 'height'"):
        psi(maps, imputations=1, permutations=0, regressors=["height"])
    with pytest.raises(ValueError, match="more than 3 studies"):
        psi(maps, imputations=1, permutations=0, regressors=["age", "n1"],
            studies=["study00", "study01", "study02"])


@pytest.mark.slow
def test_planted_slope_is_found_and_a_null_covariate_is_not():
    """Studies whose effect at one place grows with a covariate: the slope survives FWE; a
    covariate unrelated to the effects finds nothing anywhere."""
    from daskmeta.model.grid import load_mask
    from daskmeta.model.studyset import StudySet

    gen = np.random.default_rng(8)
    mask = load_mask("gray_matter")
    place = np.array([-38.0, -26.0, 56.0])
    voxel = int(np.argmin(((mask.xyz - place) ** 2).sum(1)))
    x, y, z = mask.xyz[voxel]
    rows, peaks = [], []
    k = 14
    dose = np.linspace(0, 1, k)
    for s in range(k):
        rows.append({"study": f"s{s:02d}", "n1": 30.0, "n2": 30.0, "t_thr": 3.2, "dose": float(dose[s]),
                     "noise": float(gen.uniform())})
        if dose[s] > 0.45:
            peaks.append({"study": f"s{s:02d}", "x": x, "y": y, "z": z, "t": 3.5 + 6 * dose[s],
                          "x_orig": x, "y_orig": y, "z_orig": z, "space": "spm_mni", "source": "memory",
                          "line": 1})
        far = mask.xyz[gen.integers(mask.n_voxels)]
        peaks.append({"study": f"s{s:02d}", "x": far[0], "y": far[1], "z": far[2],
                      "t": float(gen.choice([-1, 1]) * 4.0), "x_orig": far[0], "y_orig": far[1],
                      "z_orig": far[2], "space": "spm_mni", "source": "memory", "line": 2})
    import pandas as pd

    studies = StudySet(pd.DataFrame(rows), pd.DataFrame(peaks), source="memory")
    maps = recreate(studies, anisotropy=0.0).persist(scheduler="threads")
    found = psi(maps, imputations=3, permutations=39, seed=1, regressors=["dose"], name="dose",
                block_size=13).compute(scheduler="threads")
    assert found.z.values[voxel] > 0
    assert found.p_fwe_tfce.values[voxel] < 0.05, found.p_fwe_tfce.values[voxel]
    null = psi(maps, imputations=3, permutations=39, seed=1, regressors=["noise"], name="noise",
               block_size=13).compute(scheduler="threads")
    assert null.p_fwe_tfce.values.min() > 0.05


def test_configuration_checks_psi_regressors_before_any_work():
    from daskmeta.app.config import PsiAnalysis
    from daskmeta.app.workflow import validate_selections
    from daskmeta.errors import ConfigError
    from daskmeta.model.studyset import StudySet

    studies = random_studyset(n_studies=5)
    validate_selections(studies, {"ok": PsiAnalysis(regressors=("age", "n1"))})
    for regressors, message in ((("height",), "'height' is not a study column"),
                                (("modality",), "'modality' is not numeric")):
        with pytest.raises(ConfigError, match=message):
            validate_selections(studies, {"lm": PsiAnalysis(regressors=regressors)})
    with pytest.raises(ConfigError, match="selects 3 studies .* at least 4"):
        validate_selections(studies, {"lm": PsiAnalysis(regressors=("age", "n1"),
                                                        studies=("study00", "study01", "study02"))})
    table = studies.studies.copy()
    model = {"lm": PsiAnalysis(regressors=("age",))}
    table.loc[1, "age"] = np.nan
    with pytest.raises(ConfigError, match="studies without 'age': study01; select them out with 'where'"):
        validate_selections(StudySet(table, studies.peaks, source="memory"), model)
    table["age"] = 30.0
    with pytest.raises(ConfigError, match="'age' is constant"):
        validate_selections(StudySet(table, studies.peaks, source="memory"), model)


def test_methods_paragraph_names_the_linear_model_and_its_permutations(result):
    from daskmeta.report.psi_report import psi_methods_text, psi_references

    text = psi_methods_text(result, {"fwe": "tfce", "p": 0.05, "peak_z": 0, "extent": 1})
    assert "The effect of age was tested by a linear model" in text
    assert "6 Freedman-Lane permutations of the studies" in text
    assert "pooled z map of age" in text and "DerSimonian-Laird" not in text
    assert "sign flips" not in text  # the subject images are not permuted
    assert any("Freedman D, Lane D" in ref for ref in psi_references(result))
    two = result.copy()
    two.attrs = {**result.attrs, "regressors": ["age", "n1"], "permutations": 0}
    text = psi_methods_text(two, {"fwe": "voxel", "p": 0.05, "peak_z": 0, "extent": 10})
    assert "with n1 as covariate of no interest" in text and "No permutation was run" in text
