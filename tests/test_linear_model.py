"""Meta-regression and group comparison graphs: dense reference, checks, planted covariate."""

import numpy as np
import pytest

from daskmeta.analyses.linear_models import linear_model
from daskmeta.analyses.recreate import recreate
from daskmeta.inference.thresholding import threshold
from daskmeta.model.grid import load_mask
from daskmeta.stats.regression import linear_contrasts, meta_regression, rescale


@pytest.fixture(scope="module")
def maps(make_studyset):
    studies = make_studyset(n_studies=8, peaks_per_study=4, seed=21)
    studies.studies.loc[3, "age"] = np.nan  # a study without the covariate is dropped
    return recreate(studies, anisotropy=0.0).persist(scheduler="threads")


def test_regression_equals_the_dense_kernel_and_drops_missing(maps):
    result = linear_model(maps, regressor="age", permutations=3, seed=1, name="r")
    result = result.compute(scheduler="threads")
    assert result.attrs["dropped"] == ["study03"] and result.attrs["n_studies"] == 7
    keep = [s for s in maps.study.values if s != "study03"]
    sub = maps.sel(study=keep)
    x01, low, high = rescale(sub.age.values)
    assert (low, high) == (sub.age.values.min(), sub.age.values.max())
    design = np.column_stack([np.ones(7), x01])
    dense = meta_regression(sub.effect.values, sub.variance.values, design)
    contrasts = linear_contrasts(dense)
    np.testing.assert_allclose(result.slope.values, contrasts["1m0"].estimate, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.z.values, contrasts["1m0"].z, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.effect_1.values, contrasts["1"].estimate, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.tau2.values, dense.tau2, rtol=1e-10, atol=1e-12)
    assert result.null_hist.values.sum() == 3 * 3 * maps.sizes["voxel"]
    # SDM's check only ever removes findings (exact cases: test_reporting_check_on_planted_z)
    assert np.all(result.p.values >= result.p_slope.values)


#: Planted (z_0, z_1, z_slope) of the first voxels and whether SDM reports the slope there:
#: the slope and at least one extreme (0: at the minimum, 1: at the maximum) significant in
#: the same direction (docs/methods.md). |z| = 20 lies beyond every null z (p = 1 / (1 + N)),
#: |z| = 1e-4 is far from significant; every other voxel has z = 0 (p = 1).
PLANTED = [
    ((20.0, 20.0, 20.0), True),  # both extremes agree
    ((20.0, 1e-4, 20.0), True),  # the minimum agrees
    ((1e-4, 20.0, 20.0), True),  # the maximum agrees
    ((1e-4, -20.0, -20.0), True),  # negative slope, the maximum agrees
    ((-20.0, 20.0, -20.0), True),  # negative slope, the minimum agrees, the maximum opposes
    ((-20.0, 1e-4, 20.0), False),  # the only significant extreme is in the opposite direction
    ((20.0, 20.0, -20.0), False),  # both extremes opposite
    ((1e-4, -1e-4, 20.0), False),  # no significant extreme
    ((20.0, 20.0, 1e-4), False),  # both extremes significant, the slope is not
]


def test_reporting_check_on_planted_z(maps, monkeypatch):
    import daskmeta.analyses.linear_models as lm

    n_voxels, permutations = 400, 3
    sub = maps.isel(voxel=slice(0, n_voxels)).chunk({"voxel": -1})
    planted = np.zeros((n_voxels, 3))
    planted[: len(PLANTED)] = [z for z, _ in PLANTED]

    def planted_fit(effect, variance, design):  # the observed fit only; the null stays real
        assert effect.shape[:-1] == (n_voxels,)
        z_0, z_1, z_slope = planted.T
        zero = np.zeros(n_voxels)
        return z_0, z_0, z_1, z_1, z_slope, z_slope, zero, zero

    monkeypatch.setattr(lm, "_fit", planted_fit)
    reported = np.zeros(n_voxels, bool)
    reported[: len(PLANTED)] = [kept for _, kept in PLANTED]
    significant = 1.0 / (1 + permutations * n_voxels)  # 1 / 1201: beyond every null z
    assert significant < 0.005

    result = linear_model(sub, regressor="age", permutations=permutations, seed=4, name="planted")
    result = result.compute(scheduler="threads")
    assert result.attrs["check_p"] == 0.005
    np.testing.assert_array_equal(result.null_hist.values.sum(1), permutations * n_voxels)
    p = result.p.values
    np.testing.assert_array_equal(p < 0.005, reported)
    np.testing.assert_array_equal(p[reported], significant)
    # a significant slope without a same-direction significant extreme is removed (p = 1)
    removed = np.abs(planted[:, 2]) == 20.0
    removed &= ~reported
    assert removed.sum() == 3
    np.testing.assert_array_equal(p[removed], 1.0)
    np.testing.assert_array_equal(p[len(PLANTED):], 1.0)  # z = 0
    # the raw slope p and the extremes' p are those of the planted z
    np.testing.assert_array_equal(result.p_slope.values[np.abs(planted[:, 2]) == 20.0], significant)
    np.testing.assert_array_equal(result.p_0.values[np.abs(planted[:, 0]) == 20.0], significant)
    np.testing.assert_array_equal(result.p_1.values[np.abs(planted[:, 1]) == 20.0], significant)

    # significance is strict (p < check_p): at check_p = 1 / 1201 no extreme qualifies
    strict = linear_model(sub, regressor="age", permutations=permutations, seed=4, name="planted",
                          check_p=significant).compute(scheduler="threads")
    np.testing.assert_array_equal(strict.p.values[np.abs(planted[:, 2]) == 20.0], 1.0)
    # without the check, p is the slope's p everywhere
    unchecked = linear_model(sub, regressor="age", permutations=permutations, seed=4, name="planted",
                             check_p=None).compute(scheduler="threads")
    np.testing.assert_array_equal(unchecked.p.values, result.p_slope.values)
    assert (unchecked.p.values < 0.005).sum() == 8


def test_compare_is_the_difference_of_group_means(maps):
    result = linear_model(maps, groups=("modality == 'A'", "modality == 'B'"), permutations=2,
                          name="c").compute(scheduler="threads")
    a = [s for s, m in zip(maps.study.values, maps.modality.values, strict=True) if m == "A"]
    b = [s for s, m in zip(maps.study.values, maps.modality.values, strict=True) if m == "B"]
    design = np.column_stack([np.ones(len(a) + len(b)), np.r_[np.zeros(len(a)), np.ones(len(b))]])
    stack = maps.sel(study=a + b)
    dense = linear_contrasts(meta_regression(stack.effect.values, stack.variance.values, design))
    np.testing.assert_allclose(result.z.values, dense["1m0"].z, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(result.p.values, result.p_slope.values)  # no extreme check
    with pytest.raises(ValueError, match="both groups"):
        linear_model(maps, groups=("modality == 'A'", "age > 0"))
    with pytest.raises(ValueError, match="either a regressor or two groups"):
        linear_model(maps)
    with pytest.raises(ValueError, match="not numeric"):
        linear_model(maps, regressor="modality")


def test_same_seed_same_null_whatever_the_block_size(maps):
    one = linear_model(maps, regressor="age", permutations=5, seed=2, block_size=5)
    two = linear_model(maps, regressor="age", permutations=5, seed=2, block_size=2)
    one, two = one.compute(scheduler="sync"), two.compute(scheduler="threads")
    np.testing.assert_array_equal(one.null_hist.values, two.null_hist.values)
    np.testing.assert_array_equal(one.p.values, two.p.values)


@pytest.mark.slow
def test_planted_covariate_is_found_there_and_not_elsewhere():
    """Studies' peak t at one location grows with the covariate: the regression finds it."""
    import warnings

    import pandas as pd

    from daskmeta.errors import DaskmetaWarning
    from daskmeta.model.studyset import StudySet

    rng = np.random.default_rng(5)
    mask = load_mask("gray_matter")
    location = np.array([-38.0, -26.0, 56.0])
    rows, peaks = [], []
    for s in range(20):
        covariate = 20 + 2.5 * s
        rows.append({"study": f"s{s:02d}", "n1": 25.0, "n2": 25.0, "t_thr": 3.3, "age": covariate})
        t_planted = 3.3 + 0.15 * (covariate - 20)  # grows with the covariate
        jitter = rng.normal(0, 2.0, 3)
        peaks.append({"study": f"s{s:02d}", "x": location[0] + jitter[0], "y": location[1] + jitter[1],
                      "z": location[2] + jitter[2], "t": t_planted})
        for voxel in rng.integers(0, mask.n_voxels, 4):  # spurious peaks, unrelated to age
            x, y, z = mask.xyz[voxel]
            peaks.append({"study": f"s{s:02d}", "x": x, "y": y, "z": z,
                          "t": float(rng.choice([-1, 1]) * (3.3 + rng.exponential(0.5)))})
    peaks = pd.DataFrame(peaks).assign(x_orig=0.0, y_orig=0.0, z_orig=0.0, space="spm_mni",
                                       source="memory", line=1)
    with warnings.catch_warnings():  # jittered peaks may leave grey matter: a warning, kept
        warnings.simplefilter("ignore", DaskmetaWarning)
        maps = recreate(StudySet(pd.DataFrame(rows), peaks), anisotropy=0.0).persist(scheduler="threads")
    result = linear_model(maps, regressor="age", permutations=30, seed=3).compute(scheduler="threads")
    table = threshold(result, mask="gray_matter", atlas=False).table
    assert len(table)
    top = table.sort_values("sdm_z", ascending=False).iloc[0]
    assert top.direction == "positive"
    assert np.linalg.norm(np.array([top.x, top.y, top.z]) - location) < 12
    far = np.linalg.norm(table[["x", "y", "z"]].to_numpy(float) - location, axis=1) > 30
    assert not (table.direction[far] == "positive").any() or table.sdm_z[far].max() < top.sdm_z
