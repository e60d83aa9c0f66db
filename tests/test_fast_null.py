"""The fast randomization null: exact pooling, reproducible streams, same null as the reference.

The fast engine draws from its own random streams, so it cannot equal the NumPy reference
draw for draw. What must hold, and is tested here:

- its pooling arithmetic is the reference's: fed a fixed source, z equals
  ``dersimonian_laird`` (to 1e-12 relative; in practice bit for bit);
- its streams depend only on each randomization's seed: bit-identical across block sizes,
  float32/float64 tables and the Numba/NumPy versions of the kernel; other seeds differ;
- its null has the reference's distribution. Null z values are independent draws (each
  null voxel draws every study afresh), so two-sample Kolmogorov-Smirnov tests of pooled
  null values apply; the same test on a null with one study silenced rejects with p far
  below 1e-10, which shows the sample sizes used here have the power to see a wrong null.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from daskmeta.null.randomization import randomization_seeds
from daskmeta.stats import fast_null
from daskmeta.stats.effect_size import g_variance
from daskmeta.stats.fast_null import (
    StudyTables,
    fast_randomization_block,
    fast_relocate,
    pooled_z,
    study_tables,
    variance_model,
)
from daskmeta.stats.null import N_HIST, combine, histogram, randomization_block, relocate
from daskmeta.stats.random_effects import dersimonian_laird

#: Sample sizes of the synthetic studies; NaN n2 is a one-sample study.
N1 = np.array([20.0, 35.0, 12.0, 50.0, 18.0, 25.0, 40.0, 30.0])
N2 = np.array([22.0, np.nan, 14.0, 45.0, np.nan, 25.0, 38.0, 28.0])


def sdm_like_maps(rng, n_voxels=3000, null_study=True, dtype=np.float32):
    """Effects like recreated maps: mostly exact zeros, smooth-ish blobs of both signs.

    The last study is a null study (all zeros) when ``null_study``. Variance by the model.
    """
    k = N1.size
    effect = np.zeros((k, n_voxels))
    grid = np.arange(n_voxels)
    for s in range(k - int(null_study)):
        for centre in rng.integers(0, n_voxels, size=3):
            width = rng.uniform(40, 200)
            blob = rng.choice([-1, 1]) * rng.uniform(0.5, 1.5) * np.exp(-0.5 * ((grid - centre) / width) ** 2)
            effect[s] += np.where(np.abs(grid - centre) < 3 * width, blob, 0.0)
    effect = effect.astype(dtype)
    variance = g_variance(effect.astype(np.float64), N1[:, None], N2[:, None]).astype(dtype)
    return effect, variance


@pytest.fixture
def maps(rng):
    return sdm_like_maps(rng)


@pytest.fixture
def tables(maps):
    effect, variance = maps
    return study_tables(effect, variance, *variance_model(N1, N2))


def seeds(start, stop, seed=7, name="fast"):
    return randomization_seeds(seed, name, start, stop)


# -- tables ---------------------------------------------------------------------------------


def test_tables_compress_zeros_and_keep_values(maps, tables):
    effect, _ = maps
    assert isinstance(tables, StudyTables) and tables.values.dtype == np.float32
    for s in range(tables.n_studies):
        size = 1 + tables.n_voxels - tables.n_zero[s]
        table = tables.values[tables.offsets[s]:tables.offsets[s] + size]
        assert table[0] == 0 and np.count_nonzero(table[1:]) == size - 1
        np.testing.assert_array_equal(np.sort(table[1:]), np.sort(effect[s][effect[s] != 0]))
    assert tables.n_zero[-1] == tables.n_voxels  # the null study is one zero


def test_model_fitted_from_the_maps_and_checked(maps):
    effect, variance = maps
    a, c = variance_model(N1, N2)
    fitted = study_tables(effect, variance)
    np.testing.assert_allclose(fitted.sampling, a, rtol=1e-6)
    np.testing.assert_allclose(fitted.constant[:-1], c[:-1], rtol=1e-4)  # the null study has no slope
    wrong = variance.copy()
    wrong[2, 10] *= 1.5
    with pytest.raises(ValueError, match="study 2: its variance map is not a \\+ c \\* effect\\^2"):
        study_tables(effect, wrong, a, c)
    with pytest.raises(ValueError, match="engine='numpy'"):
        study_tables(effect, np.full_like(variance, 0.1) + np.abs(effect))
    with pytest.raises(ValueError, match="finite"):
        study_tables(np.where(effect == effect.max(), np.nan, effect), variance, a, c)
    with pytest.raises(ValueError, match="at least 2 studies"):
        study_tables(effect[:1], variance[:1], a[:1], c[:1])


def test_check_engine():
    assert fast_null.check_engine("numba") == "numba"
    with pytest.raises(ValueError, match="'engine' must be one of"):
        fast_null.check_engine("cuda")


# -- pooling arithmetic ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("jit", [None, False])
def test_pooling_equals_dersimonian_laird_on_a_fixed_source(rng, dtype, jit):
    """Heterogeneous voxels (tau2 > 0), homogeneous ones, a null and a one-sample study."""
    k, n_voxels = N1.size, 2000
    effect = rng.normal(scale=rng.choice([0.05, 0.5, 1.5], size=n_voxels), size=(k, n_voxels))
    effect[:, :100] = 0.0
    effect[-1] = 0.0
    effect = effect.astype(dtype)
    a, c = variance_model(N1, N2)
    y = effect.astype(np.float64)
    reference = dersimonian_laird(y, a[:, None] + c[:, None] * y**2)
    assert 0.2 < np.mean(reference.tau2 > 0) < 0.9  # both branches of the kernel are used
    z = pooled_z(effect, a, c, jit=jit)
    np.testing.assert_allclose(z, reference.z, rtol=1e-12, atol=1e-300)


def test_pooling_near_the_heterogeneity_threshold(rng):
    """Voxels whose Q is within rounding of k - 1, where the one-pass shortcut must defer."""
    a, c = variance_model(N1, N2)
    k = N1.size
    effect = rng.normal(scale=0.4, size=(k, 50))
    # scale each voxel's deviations so that Q = k - 1 up to ~1e-15 (tau2 at its kink)
    v = a[:, None] + c[:, None] * effect**2
    for _ in range(30):
        q = dersimonian_laird(effect, v).q
        effect = effect.mean(0) + (effect - effect.mean(0)) * np.sqrt((k - 1) / q)
        v = a[:, None] + c[:, None] * effect**2
    reference = dersimonian_laird(effect, v)
    assert np.abs(reference.q - (k - 1)).max() < 1e-9
    np.testing.assert_allclose(pooled_z(effect, a, c), reference.z, rtol=1e-12)


# -- streams ---------------------------------------------------------------------------------


def test_same_seed_bit_identical_whatever_the_block_size(tables):
    whole = fast_randomization_block(tables, seeds(0, 6))
    parts = combine([fast_randomization_block(tables, seeds(0, 1)),
                     fast_randomization_block(tables, seeds(1, 4)),
                     fast_randomization_block(tables, seeds(4, 6))])
    for field in whole._fields:
        np.testing.assert_array_equal(getattr(parts, field), getattr(whole, field))
    assert whole.hist.sum() == 6 * tables.n_voxels and whole.hist.shape == (N_HIST,)
    again = fast_randomization_block(tables, seeds(0, 6))
    np.testing.assert_array_equal(again.max_z, whole.max_z)
    other = fast_randomization_block(tables, seeds(0, 6, seed=8))
    assert not np.array_equal(other.hist, whole.hist)
    assert not np.any(other.max_z == whole.max_z)
    assert len(set(whole.max_z)) == 6  # randomizations differ from each other


def test_study_groups_do_not_change_the_numbers(monkeypatch, tables):
    whole = fast_randomization_block(tables, seeds(0, 3))
    monkeypatch.setattr(fast_null, "GROUP_BYTES", 1)  # one study per group
    monkeypatch.setattr(fast_null, "SINGLE_GROUP_BYTES", 0)
    groups = fast_null.study_groups(tables, 1, 0)
    np.testing.assert_array_equal(groups, np.arange(tables.n_studies + 1))
    grouped = fast_randomization_block(tables, seeds(0, 3))
    np.testing.assert_array_equal(grouped.hist, whole.hist)
    np.testing.assert_array_equal(grouped.max_z, whole.max_z)


def test_summaries_are_those_of_the_maps(tables):
    maps = fast_relocate(tables, seeds(0, 3))
    summary = fast_randomization_block(tables, seeds(0, 3))
    np.testing.assert_array_equal(summary.hist, histogram(maps))
    np.testing.assert_array_equal(summary.max_z, maps.max(1))
    np.testing.assert_array_equal(summary.min_z, maps.min(1))
    np.testing.assert_array_equal(summary.max_cluster_pos, 0)


def test_numba_and_numpy_versions_identical(tables):
    jitted = fast_randomization_block(tables, seeds(0, 3), jit=True)
    plain = fast_randomization_block(tables, seeds(0, 3), jit=False)
    for field in jitted._fields:
        np.testing.assert_array_equal(getattr(plain, field), getattr(jitted, field))


def test_float32_and_float64_stacks_give_the_same_null(maps):
    effect, variance = maps
    model = variance_model(N1, N2)
    t32 = study_tables(effect, variance, *model)
    t64 = study_tables(effect.astype(np.float64), variance.astype(np.float64), *model)
    assert t64.values.dtype == np.float64
    a = fast_randomization_block(t32, seeds(0, 2))
    b = fast_randomization_block(t64, seeds(0, 2))
    np.testing.assert_array_equal(a.hist, b.hist)
    np.testing.assert_array_equal(a.max_z, b.max_z)


def test_fallback_without_numba(monkeypatch, tables):
    expected = fast_randomization_block(tables, seeds(0, 2))
    monkeypatch.setattr(fast_null, "_load_kernel", lambda: None)
    assert not fast_null.numba_available()
    fallback = fast_randomization_block(tables, seeds(0, 2))
    np.testing.assert_array_equal(fallback.hist, expected.hist)
    with pytest.raises(ImportError, match="needs numba"):
        fast_randomization_block(tables, seeds(0, 2), jit=True)


# -- distribution ---------------------------------------------------------------------------


def _reference_null(effect, variance, n_randomizations):
    y, v = effect.astype(np.float64), variance.astype(np.float64)
    return np.concatenate([relocate(y, v, np.random.default_rng(s), 1)[0]
                           for s in seeds(0, n_randomizations, name="reference")])


def test_same_null_distribution_as_the_reference(maps, tables):
    """40 randomizations x 3000 voxels = 120,000 independent null z per engine.

    KS two-sample: under equal distributions p is uniform, so a fixed-seed run passes
    p > 1e-3 unless the nulls differ; the KS distance itself must be below 1.95 / sqrt(n/2)
    (the 0.1 % critical value). Quantiles up to the 99.9th agree within 4 standard errors.
    """
    effect, variance = maps
    reference = _reference_null(effect, variance, 40)
    fast = fast_relocate(tables, seeds(0, 40)).ravel()
    assert fast.size == reference.size == 120_000
    ks = stats.ks_2samp(fast, reference)
    assert ks.pvalue > 1e-3, ks
    assert ks.statistic < 1.95 / np.sqrt(fast.size / 2)
    for q in (0.001, 0.01, 0.05, 0.5, 0.95, 0.99, 0.999):
        f, r = np.quantile(fast, q), np.quantile(reference, q)
        # standard error of a sample quantile, from the reference's own density
        density = np.mean(np.abs(reference - r) < 0.05) / 0.1
        se = np.sqrt(q * (1 - q) / reference.size) / density
        assert abs(f - r) < 4 * np.sqrt(2) * se, (q, f, r, se)
    # the same test sees a wrong null: silence study 0 (its effects all zero)
    wrong = study_tables(np.where(np.arange(N1.size)[:, None] == 0, 0, effect), None,
                         tables.sampling, tables.constant)
    assert stats.ks_2samp(fast_relocate(wrong, seeds(0, 40)).ravel(), reference).pvalue < 1e-10


def test_same_maximum_distribution_as_the_reference(maps, tables):
    """Per-randomization maxima (the FWE null): 150 each, KS p > 1e-3."""
    effect, variance = maps
    y, v = effect.astype(np.float64), variance.astype(np.float64)
    reference = randomization_block(y, v, seeds(0, 150, name="reference"), 150)
    fast = fast_randomization_block(tables, seeds(0, 150))
    assert stats.ks_2samp(fast.max_z, reference.max_z).pvalue > 1e-3
    assert stats.ks_2samp(fast.min_z, reference.min_z).pvalue > 1e-3


def test_one_sample_and_null_studies_in_the_null(rng):
    """Two studies only, one of them null and one one-sample: the null z is that of one study."""
    effect, variance = sdm_like_maps(rng, n_voxels=2000)
    keep = [1, 7]  # a one-sample study and the null study
    e, v = effect[keep], variance[keep]
    a, c = variance_model(N1[keep], N2[keep])
    tables = study_tables(e, v, a, c)
    assert np.isnan(N2[1]) and tables.n_zero[1] == tables.n_voxels
    fast = fast_relocate(tables, seeds(0, 20)).ravel()
    reference = _reference_null(e, v, 20)
    assert stats.ks_2samp(fast, reference).pvalue > 1e-3
    # with the null study drawing 0, z takes exactly the values of the pooled pairs (y, 0)
    values = pooled_z(np.stack([e[0], np.zeros_like(e[0])]), a, c)
    assert np.isin(fast, values).all()
