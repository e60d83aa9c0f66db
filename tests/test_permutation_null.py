"""The permutation engine: exact pooling, true permutations, reproducible, the reference's null.

What must hold, and is tested here:

- the kernel equals its NumPy version bit for bit (every study count that exercises the
  8-, 4- and 1-study paths, float32 and float64, masks smaller than a tile);
- fed its own relocated maps, its z equals ``dersimonian_laird`` (1e-12 relative), tau2 > 0
  voxels included;
- every randomization relocates each study by a permutation of its values; the shifts are
  uniform and independent across studies (chi-square tests with fixed seeds);
- same seed, same numbers whatever the block; another seed or analysis name differs;
- the null has the distribution of the reference's (independent draws) null: two-sample
  Kolmogorov-Smirnov on pooled null z and on maxima, with a power check.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from test_sdm_model import N1, N2, _reference_null, sdm_like_maps

from daskmeta.null.seeds import arrangement_seed, randomization_seeds
from daskmeta.stats import permutation as permutation_null
from daskmeta.stats.null import N_HIST, combine, histogram, randomization_block
from daskmeta.stats.permutation import (
    PAD,
    permutation_block,
    permutation_maps,
    permutation_shifts,
    permuted_effects,
    shuffled_stack,
)
from daskmeta.stats.random_effects import dersimonian_laird
from daskmeta.stats.sdm_model import randomization_keys, variance_model


def seeds(start, stop, seed=7, name="perm"):
    return randomization_seeds(seed, name, start, stop)


@pytest.fixture
def maps(rng):
    return sdm_like_maps(rng)


@pytest.fixture
def stack(maps):
    effect, variance = maps
    return shuffled_stack(effect, arrangement_seed(7, "perm"), variance, *variance_model(N1, N2))


def _stack_of(rng, k, n_voxels, dtype=np.float32, scale=0.6):
    n1 = rng.integers(10, 60, size=k).astype(float)
    n2 = np.where(rng.random(k) < 0.3, np.nan, rng.integers(10, 60, size=k).astype(float))
    effect = rng.normal(scale=scale, size=(k, n_voxels))
    effect[rng.random((k, n_voxels)) < 0.7] = 0.0
    a, c = variance_model(n1, n2)
    return shuffled_stack(effect.astype(dtype), np.random.SeedSequence(3), sampling=a, constant=c)


# -- arrangement -----------------------------------------------------------------------------


def test_arrangement_is_a_seeded_permutation_with_its_head_repeated(maps, stack):
    effect, _ = maps
    assert stack.values.shape == (N1.size, effect.shape[1] + PAD)
    np.testing.assert_array_equal(np.sort(stack.arrangement, axis=1), np.sort(effect, axis=1))
    np.testing.assert_array_equal(stack.values[:, effect.shape[1]:], stack.values[:, :PAD])
    again = shuffled_stack(effect, arrangement_seed(7, "perm"), sampling=stack.sampling,
                           constant=stack.constant)
    np.testing.assert_array_equal(again.values, stack.values)
    other = shuffled_stack(effect, arrangement_seed(8, "perm"), sampling=stack.sampling,
                           constant=stack.constant)
    assert not np.array_equal(other.values, stack.values)


def test_tiny_mask_wraps_the_repeated_head(rng):
    stack = _stack_of(rng, 3, 7)
    n = stack.n_voxels
    np.testing.assert_array_equal(stack.values[:, n:], stack.values[:, np.arange(PAD) % n])


def test_bad_maps_are_refused(maps):
    effect, variance = maps
    with pytest.raises(ValueError, match="engine='reference'"):
        shuffled_stack(effect, np.random.SeedSequence(0), variance * 1.5, *variance_model(N1, N2))
    with pytest.raises(ValueError, match="NaN"):
        shuffled_stack(np.where(effect == effect.max(), np.nan, effect), np.random.SeedSequence(0),
                       None, *variance_model(N1, N2))
    with pytest.raises(TypeError, match="SeedSequence"):
        shuffled_stack(effect, 3, variance)


# -- relocations -----------------------------------------------------------------------------


def test_each_randomization_permutes_every_study(maps, stack):
    effect, _ = maps
    moved = permuted_effects(stack, seeds(0, 4))
    assert moved.shape == (4, N1.size, effect.shape[1])
    for maps_b in moved:
        np.testing.assert_array_equal(np.sort(maps_b, axis=1), np.sort(effect, axis=1))
    assert not np.array_equal(moved[0], moved[1])


def test_shifts_are_uniform_and_independent_across_studies(rng):
    """4000 randomizations: each study's shift, in 20 bins, is uniform (chi-square), and
    the bins of studies 0 and 1 are independent (contingency chi-square)."""
    stack = _stack_of(rng, 4, 1000)
    shifts = permutation_shifts(stack, randomization_keys(seeds(0, 4000)))
    assert shifts.shape == (4000, 4) and shifts.min() >= 0 and shifts.max() < 1000
    bins = shifts * 20 // 1000
    for s in range(4):
        assert stats.chisquare(np.bincount(bins[:, s], minlength=20)).pvalue > 1e-3
    table = np.zeros((20, 20))
    np.add.at(table, (bins[:, 0], bins[:, 1]), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-3


# -- kernel ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k, n_voxels", [(2, 700), (3, 1500), (9, 1025), (13, 300), (24, 5),
                                         (16, 512)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_equals_its_numpy_version_bit_for_bit(rng, k, n_voxels, dtype):
    stack = _stack_of(rng, k, n_voxels, dtype)
    jitted = permutation_maps(stack, seeds(0, 3), jit=True)
    plain = permutation_maps(stack, seeds(0, 3), jit=False)
    np.testing.assert_array_equal(jitted, plain)
    summary = permutation_block(stack, seeds(0, 3), jit=True)
    fallback = permutation_block(stack, seeds(0, 3), jit=False)
    for field in summary._fields:
        np.testing.assert_array_equal(getattr(summary, field), getattr(fallback, field))


def test_pooling_equals_dersimonian_laird_with_heterogeneous_voxels(rng):
    stack = _stack_of(rng, 11, 3000, np.float64, scale=1.2)
    moved = permuted_effects(stack, seeds(0, 2)).astype(np.float64)
    z = permutation_maps(stack, seeds(0, 2))
    tau2_positive = 0
    for b in range(2):
        y = moved[b]
        reference = dersimonian_laird(y, stack.sampling[:, None] + stack.constant[:, None] * y**2)
        tau2_positive += int((reference.tau2 > 0).sum())
        np.testing.assert_allclose(z[b], reference.z, rtol=1e-12, atol=1e-300)
    assert tau2_positive > 100  # the kernel's exact (tau2 > 0) path was exercised


def test_summaries_are_those_of_the_maps(stack):
    maps = permutation_maps(stack, seeds(0, 3))
    summary = permutation_block(stack, seeds(0, 3))
    np.testing.assert_array_equal(summary.hist, histogram(maps))
    np.testing.assert_array_equal(summary.max_z, maps.max(1))
    np.testing.assert_array_equal(summary.min_z, maps.min(1))
    np.testing.assert_array_equal(summary.max_cluster_neg, 0)
    assert summary.hist.shape == (N_HIST,)


def test_same_seed_bit_identical_whatever_the_block(stack):
    whole = permutation_block(stack, seeds(0, 6))
    parts = combine([permutation_block(stack, seeds(0, 1)), permutation_block(stack, seeds(1, 4)),
                     permutation_block(stack, seeds(4, 6))])
    for field in whole._fields:
        np.testing.assert_array_equal(getattr(parts, field), getattr(whole, field))
    other = permutation_block(stack, seeds(0, 6, name="other"))
    assert not np.any(other.max_z == whole.max_z)
    assert len(set(whole.max_z)) == 6


def test_fallback_without_numba(monkeypatch, stack):
    expected = permutation_block(stack, seeds(0, 2))
    monkeypatch.setattr(permutation_null, "_load_kernel", lambda: None)
    np.testing.assert_array_equal(permutation_block(stack, seeds(0, 2)).hist, expected.hist)
    with pytest.raises(ImportError, match="needs numba"):
        permutation_block(stack, seeds(0, 2), jit=True)


# -- distribution ----------------------------------------------------------------------------


def test_same_null_distribution_as_the_reference(maps, stack):
    """40 randomizations x 3000 voxels against the reference's independent draws.

    Each voxel's k effects are independent draws from the studies' value distributions under
    both relocations; within a randomization the permutation samples without replacement,
    which only narrows the spread of the pooled histogram. KS p > 1e-3 and distance below the
    0.1 % critical value; the same test rejects a null with one study silenced.
    """
    effect, variance = maps
    reference = _reference_null(effect, variance, 40)
    null = permutation_maps(stack, seeds(0, 40)).ravel()
    ks = stats.ks_2samp(null, reference)
    assert ks.pvalue > 1e-3, ks
    assert ks.statistic < 1.95 / np.sqrt(null.size / 2)
    silenced = np.where(np.arange(N1.size)[:, None] == 0, 0, effect)
    wrong = shuffled_stack(silenced, np.random.SeedSequence(1), sampling=stack.sampling,
                           constant=stack.constant)
    assert stats.ks_2samp(permutation_maps(wrong, seeds(0, 40)).ravel(), reference).pvalue < 1e-10


def test_same_maximum_distribution_as_the_reference(maps, stack):
    """Per-randomization maxima and minima (the FWE null): 150 each, KS p > 1e-3."""
    effect, variance = maps
    y, v = effect.astype(np.float64), variance.astype(np.float64)
    reference = randomization_block(y, v, seeds(0, 150, name="reference"), 150)
    null = permutation_block(stack, seeds(0, 150))
    assert stats.ks_2samp(null.max_z, reference.max_z).pvalue > 1e-3
    assert stats.ks_2samp(null.min_z, reference.min_z).pvalue > 1e-3



def _null_mismatches(null, textbook):
    """The checks by which ``null`` differs from ``textbook`` (empty: same null): maxima and
    minima by KS (p > 1e-3), pooled z by the distance of the histograms' CDFs (below the 0.1 %
    KS critical value) and by the upper 5 % tail's frequency (within 0.003)."""
    mismatches = set()
    if stats.ks_2samp(null.max_z, textbook.max_z).pvalue <= 1e-3:
        mismatches.add("max_z")
    if stats.ks_2samp(null.min_z, textbook.min_z).pvalue <= 1e-3:
        mismatches.add("min_z")
    cdf_null = np.cumsum(null.hist) / null.hist.sum()
    cdf_textbook = np.cumsum(textbook.hist) / textbook.hist.sum()
    if np.abs(cdf_null - cdf_textbook).max() >= 1.95 / np.sqrt(null.hist.sum() / 2):
        mismatches.add("cdf")
    upper = np.searchsorted(cdf_textbook, 0.95)
    if abs(cdf_null[upper] - cdf_textbook[upper]) >= 0.003:
        mismatches.add("tail")
    return mismatches


def test_sharing_the_arrangement_leaves_the_null_of_fresh_permutations(maps, stack, monkeypatch):
    """300 randomizations sharing one arrangement against 300 that each arrange afresh (the
    textbook permutation null): maxima, minima and pooled z have the same distributions
    (KS p > 1e-3), and a histogram p of 0.05 is as frequent in each.

    Positive controls, the same check on broken nulls: with the identity arrangement (the
    maps only shifted cyclically, so their blobs stay smooth) or with one shift shared by all
    studies (every randomization the same map, rotated) it must report a different null."""
    effect, _ = maps
    shared = permutation_block(stack, seeds(0, 300))
    fresh = [permutation_block(shuffled_stack(effect, np.random.SeedSequence([11, r]),
                                              sampling=stack.sampling, constant=stack.constant),
                               seeds(r, r + 1, name="fresh")) for r in range(300)]
    fresh = combine(fresh)
    assert _null_mismatches(shared, fresh) == set()

    n_voxels = effect.shape[1]
    identity = permutation_null.ShuffledStack(np.concatenate([effect, effect[:, :PAD]], axis=1),
                                              stack.sampling, stack.constant, n_voxels)
    np.testing.assert_array_equal(identity.arrangement, effect)
    assert {"max_z", "min_z"} <= _null_mismatches(permutation_block(identity, seeds(0, 300)), fresh)

    drawn = permutation_null.permutation_shifts
    monkeypatch.setattr(permutation_null, "permutation_shifts",  # every study moved by study 0's shift
                        lambda stack, keys: np.repeat(drawn(stack, keys)[:, :1], stack.n_studies, axis=1))
    equal_shifts = permutation_block(stack, seeds(0, 300), jit=False)  # the version that draws shifts here
    assert np.unique(equal_shifts.max_z).size == 1  # the same map each time, rotated
    assert {"max_z", "min_z"} <= _null_mismatches(equal_shifts, fresh)


# -- leave-one-out (jackknife) ---------------------------------------------------------------


@pytest.mark.parametrize("k, n_voxels", [(3, 400), (9, 1300), (24, 300)])
def test_jackknife_runs_equal_explicit_pooling_without_each_study(rng, k, n_voxels):
    """Each run of each randomization = dersimonian_laird of the relocated maps without that
    study (1e-12), tau2 > 0 voxels included; the histograms are those of the maps."""
    stack = _stack_of(rng, k, n_voxels, np.float64, scale=1.2)
    moved = permuted_effects(stack, seeds(0, 2)).astype(np.float64)
    z = permutation_null.jackknife_permutation_maps(stack, seeds(0, 2))
    assert z.shape == (2, k, n_voxels)
    tau2_positive = 0
    for b in range(2):
        for i in range(k):
            y = np.delete(moved[b], i, 0)
            v = np.delete(stack.sampling, i)[:, None] + np.delete(stack.constant, i)[:, None] * y**2
            reference = dersimonian_laird(y, v)
            tau2_positive += int((reference.tau2 > 0).sum())
            np.testing.assert_allclose(z[b, i], reference.z, rtol=1e-12, atol=1e-13)
    assert tau2_positive > 50
    hist = permutation_null.jackknife_permutation_block(stack, seeds(0, 2))
    for i in range(k):
        np.testing.assert_array_equal(hist[i], histogram(z[:, i]))
    plain = permutation_null.jackknife_permutation_maps(stack, seeds(0, 2), jit=False)
    np.testing.assert_allclose(plain, z, rtol=1e-12, atol=1e-13)


def test_jackknife_shares_the_mean_relocations(stack):
    """The run without a null study (all zeros) is the mean without it; blocks combine."""
    z = permutation_null.jackknife_permutation_maps(stack, seeds(0, 2))
    moved = permuted_effects(stack, seeds(0, 2)).astype(np.float64)
    null_study = N1.size - 1
    assert not moved[:, null_study].any()
    y = moved[:, :null_study]
    v = stack.sampling[:null_study, None] + stack.constant[:null_study, None] * y**2
    for b in range(2):
        np.testing.assert_allclose(z[b, null_study], dersimonian_laird(y[b], v[b]).z, rtol=1e-12)
    whole = permutation_null.jackknife_permutation_block(stack, seeds(0, 5))
    parts = (permutation_null.jackknife_permutation_block(stack, seeds(0, 2))
             + permutation_null.jackknife_permutation_block(stack, seeds(2, 5)))
    np.testing.assert_array_equal(whole, parts)
    with pytest.raises(ValueError, match="at least 3"):
        two = shuffled_stack(moved[0, :2].astype(np.float32), np.random.SeedSequence(0),
                             sampling=stack.sampling[:2], constant=stack.constant[:2])
        permutation_null.jackknife_permutation_block(two, seeds(0, 1))


# -- meta-regression -------------------------------------------------------------------------


@pytest.mark.parametrize("k, group", [(5, False), (12, False), (24, False), (10, True)])
def test_regression_runs_equal_meta_regression(rng, k, group):
    """Contrast z of each randomization = meta_regression + linear_contrasts of the relocated
    maps (1e-9: closed-form 2 x 2 solves against LAPACK), tau2 > 0 voxels included."""
    from daskmeta.stats.regression import SDM_CONTRASTS, linear_contrasts, meta_regression

    stack = _stack_of(rng, k, 1500, np.float64, scale=1.2)
    x = (rng.random(k) < 0.5).astype(float) if group else rng.random(k)
    x[:2] = [0.0, 1.0]
    design = np.column_stack([np.ones(k), x])
    moved = permuted_effects(stack, seeds(0, 2)).astype(np.float64)
    z = permutation_null.regression_permutation_maps(stack, design, seeds(0, 2))
    assert z.shape == (2, 3, 1500)
    tau2_positive = 0
    for b in range(2):
        y = moved[b]
        fit = meta_regression(y, stack.sampling[:, None] + stack.constant[:, None] * y**2, design)
        tau2_positive += int((fit.tau2 > 0).sum())
        for r, contrast in enumerate(linear_contrasts(fit).values()):
            np.testing.assert_allclose(z[b, r], contrast.z, rtol=1e-9, atol=1e-12)
    assert tau2_positive > 20
    hist = permutation_null.regression_permutation_block(stack, design, seeds(0, 2))
    for r in range(len(SDM_CONTRASTS)):
        np.testing.assert_array_equal(hist[r], histogram(z[:, r]))
    plain = permutation_null.regression_permutation_block(stack, design, seeds(0, 2), jit=False)
    # voxels whose estimate is exactly 0 here may be +-1e-17 after LAPACK: they may only
    # move between the two bins around z = 0
    moved_bins = np.flatnonzero((plain - hist).any(0))
    assert set(moved_bins) <= {15000, 15001}, moved_bins


def test_regression_design_and_contrasts_checked(stack):
    k = stack.n_studies
    with pytest.raises(ValueError, match="first column of ones"):
        permutation_null.regression_permutation_block(stack, np.ones((k, 3)), seeds(0, 1))
    with pytest.raises(ValueError, match="vary"):
        permutation_null.regression_permutation_block(stack, np.ones((k, 2)), seeds(0, 1))
    design = np.column_stack([np.ones(k), np.linspace(0, 1, k)])
    with pytest.raises(ValueError, match="non-zero vector of length 2"):
        permutation_null.regression_permutation_block(stack, design, seeds(0, 1), {"a": (0, 0)})
    one = permutation_null.regression_permutation_block(stack, design, seeds(0, 3), {"s": (0, 1)})
    assert one.shape == (1, N_HIST) and one.sum() == 3 * stack.n_voxels


# -- the graphs ------------------------------------------------------------------------------


def test_graphs_use_the_arrangement_of_their_seed_and_name(make_studyset):
    """mean, jackknife and linear_model with the default engine: their null histograms are
    the kernels' on the stack arranged by (seed, name), whatever the block size."""
    from daskmeta.analyses.leave_one_out import jackknife
    from daskmeta.analyses.linear_models import linear_model
    from daskmeta.analyses.means import mean
    from daskmeta.analyses.recreate import recreate
    from daskmeta.stats.regression import rescale

    maps = recreate(make_studyset(n_studies=6, peaks_per_study=3, seed=4), anisotropy=0.0)
    maps = maps.persist(scheduler="threads")
    effect, variance = maps.effect.values, maps.variance.values
    n1 = maps.n1.values.astype(float)
    n2 = maps.n2.values.astype(float) if "n2" in maps.coords else np.full(6, np.nan)
    stack = shuffled_stack(effect, arrangement_seed(5, "g"), variance, *variance_model(n1, n2))
    sequences = randomization_seeds(5, "g", 0, 5)

    result = mean(maps, permutations=5, seed=5, name="g", block_size=2, voxel_p=None)
    assert result.attrs["null_engine"] == "permutation"
    summary = permutation_block(stack, sequences)
    np.testing.assert_array_equal(result.null_hist.values, summary.hist)
    np.testing.assert_array_equal(result.null_max_z.values, summary.max_z)

    runs = jackknife(maps, permutations=5, seed=5, name="g", block_size=3)
    np.testing.assert_array_equal(runs.null_hist.values,
                                  permutation_null.jackknife_permutation_block(stack, sequences))

    fit = linear_model(maps, regressor="age", permutations=5, seed=5, name="g", block_size=4)
    x01, _, _ = rescale(maps.age.values.astype(float))
    design = np.column_stack([np.ones(6), x01])
    np.testing.assert_array_equal(
        fit.null_hist.values, permutation_null.regression_permutation_block(stack, design, sequences))
    numpy_fit = linear_model(maps, regressor="age", permutations=2, seed=5, name="g", engine="reference")
    assert numpy_fit.attrs["null_engine"] == "reference"
    np.testing.assert_allclose(numpy_fit.z.values, fit.z.values)
