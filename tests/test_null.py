"""Randomization-null kernels: histogram, relocation, block summaries and p-values."""

from __future__ import annotations

import numpy as np
import pytest

from daskmeta.stats.null import (
    BIN_WIDTH,
    BINS,
    N_BINS,
    N_HIST,
    NullSummary,
    bin_index,
    combine,
    histogram,
    randomization_block,
    relocate,
)
from daskmeta.stats.pvalues import cluster_p_fwe, p_from_histogram, p_fwe, z_threshold_for_p
from daskmeta.stats.random_effects import dersimonian_laird


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(5150)


@pytest.fixture
def study_maps(rng):
    """Ten small study maps: iid effects with a study offset, iid variances."""
    k, n_voxels = 10, 600
    effect = rng.normal(size=(k, 1)) * 0.2 + rng.normal(size=(k, n_voxels)) * 0.5
    variance = rng.uniform(0.05, 0.25, size=(k, n_voxels))
    return effect.astype(np.float32), variance.astype(np.float32)


def _largest_runs(z, z_threshold):
    """Toy cluster function on a 1-D 'grid': longest run of voxels beyond each threshold."""
    z_pos, z_neg = z_threshold

    def longest(mask):
        padded = np.concatenate([[0], mask.astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(padded))
        return int((edges[1::2] - edges[::2]).max(initial=0))

    return longest(z >= z_pos), longest(z <= z_neg)


# -- histogram ---------------------------------------------------------------------------


def test_bins_layout():
    assert BINS.shape == (N_BINS + 1,) and N_HIST == N_BINS + 2 == 30002
    assert BINS[0] == -15.0 and BINS[-1] == 15.0
    np.testing.assert_allclose(np.diff(BINS), BIN_WIDTH, rtol=1e-9)
    assert not BINS.flags.writeable


def test_histogram_matches_numpy(rng):
    z = rng.normal(scale=5.0, size=200_000)
    assert (z < -15).any() and (z >= 15).any()
    counts = histogram(z)
    assert counts.dtype == np.int64 and counts.shape == (N_HIST,)
    np.testing.assert_array_equal(counts[1:-1], np.histogram(z, BINS)[0])
    assert counts[0] == np.count_nonzero(z < -15)
    assert counts[-1] == np.count_nonzero(z >= 15)
    assert counts.sum() == z.size


def test_histogram_nan_inf_and_shape(rng):
    z = rng.normal(size=(7, 11))
    with_specials = np.concatenate([z.ravel(), [np.nan, np.inf, -np.inf]])
    counts = histogram(with_specials)
    np.testing.assert_array_equal(counts[1:-1], histogram(z)[1:-1])
    assert counts.sum() == z.size + 2 and counts[0] >= 1 and counts[-1] >= 1


def test_bin_index_monotone(rng):
    z = np.sort(np.concatenate([rng.normal(scale=8, size=50_000), BINS, [-np.inf, np.inf]]))
    assert np.all(np.diff(bin_index(z)) >= 0)
    assert bin_index(-np.inf) == 0 and bin_index(np.inf) == N_HIST - 1


# -- p-values ---------------------------------------------------------------------------


def _exact_p(z, null, upper=None):
    """Brute-force (1 + #{null >= z}) / (1 + N) where ``upper`` (default z > 0), else <=."""
    null, z = np.asarray(null), np.ravel(z)
    upper = z > 0 if upper is None else upper
    n_ge = np.array([np.count_nonzero(null >= value) for value in z])
    n_le = np.array([np.count_nonzero(null <= value) for value in z])
    return (1.0 + np.where(upper, n_ge, n_le)) / (1.0 + null.size)


def test_p_from_histogram_conservative_within_one_bin(rng):
    null = np.concatenate([rng.normal(scale=1.5, size=20_000), [30.0, 31.0, -30.0]])
    z = np.concatenate([rng.normal(scale=2.0, size=1500), [16.0, -16.0, 1e-9, -1e-9]])
    p = p_from_histogram(z, histogram(null))
    exact = _exact_p(z, null)
    # One bin's worth towards zero (z - 0.001 for z > 0, z + 0.001 for z < 0), same tail.
    loose = _exact_p(z - np.sign(z) * BIN_WIDTH, null, upper=z > 0)
    assert np.all(p >= exact)
    assert np.all(p <= loose)
    assert np.mean(p > exact) > 0.0  # the binning is actually exercised


def test_p_from_histogram_zero_nan_and_shape(rng):
    hist = histogram(rng.normal(size=1000))
    z = np.array([[0.0, np.nan], [2.0, -2.0]])
    p = p_from_histogram(z, hist)
    assert p.shape == (2, 2)
    assert p[0, 0] == 1.0 and np.isnan(p[0, 1])
    # each direction is brought back to its own tail (exact values: the hand-worked test below)
    np.testing.assert_array_equal(p[1], p_from_histogram([2.0, -2.0], hist))
    assert np.ndim(p_from_histogram(1.0, hist)) == 0
    assert p_from_histogram(50.0, hist) == 1.0 / 1001.0  # never 0
    with pytest.raises(ValueError, match="'hist'"):
        p_from_histogram(z, np.zeros(10, dtype=np.int64))
    with pytest.raises(ValueError, match="empty"):
        p_from_histogram(z, np.zeros(N_HIST, dtype=np.int64))


def test_p_from_histogram_hand_worked():
    # docs/methods.md: p = (1 + #{null >= z}) / (1 + N) (<= for z < 0), the 0.001-wide bin
    # holding z counting as beyond it, the overflow (underflow) beyond any positive (negative) z.
    null = [-16.0, -3.0, -2.0004, -1.0, 0.5, 2.0002, 2.0009, 2.5, 16.0]  # N = 9
    hist = histogram(np.array(null))
    cases = {
        0.3: 6 / 10,  # 0.5, 2.0002, 2.0009, 2.5, 16
        2.0006: 5 / 10,  # 2.0002 shares z's bin [2.000, 2.001): counted (exactly: 4 / 10)
        2.5: 3 / 10,  # 2.5 itself and 16
        20.0: 2 / 10,  # only the overflow value 16
        -1.5: 4 / 10,  # -16, -3, -2.0004
        -2.0007: 4 / 10,  # -2.0004 shares z's bin [-2.001, -2.000): counted (exactly: 3 / 10)
        -2.5: 3 / 10,  # -16, -3
        -20.0: 2 / 10,  # only the underflow value -16
    }
    z = np.array(list(cases))
    np.testing.assert_array_equal(p_from_histogram(z, hist), np.array(list(cases.values())))


def test_p_fwe_hand_worked():
    # docs/methods.md: p_fwe = (1 + #{max_b >= z}) / (1 + B) for z > 0, with the minima and <=
    # for z < 0; B = 5 here, ties count as reaching z.
    max_z = [3.0, 1.0, 5.0, 3.0, 2.0]
    min_z = [-4.0, -0.5, -2.5, -4.0, -1.5]
    z = np.array([[0.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0],
                  [-0.2, -1.5, -3.0, -4.0, -5.0, 0.0, np.nan]])
    expected = np.array([[6, 5, 4, 4, 2, 2, 1],
                         [6, 5, 3, 3, 1, 6, np.nan]]) / 6
    np.testing.assert_array_equal(p_fwe(z, max_z, min_z), expected)
    assert p_fwe(4.0, max_z, min_z) == 2 / 6 and p_fwe(-3.0, max_z, min_z) == 3 / 6


def test_cluster_p_fwe_hand_worked():
    # docs/methods.md: cluster_p_fwe = (1 + #{largest_b >= size}) / (1 + B), B = 5 here.
    max_cluster = [10, 0, 25, 3, 10]
    sizes = np.array([0, 1, 3, 4, 10, 11, 25, 26])
    expected = np.array([6, 5, 5, 4, 4, 2, 2, 1]) / 6
    np.testing.assert_array_equal(cluster_p_fwe(sizes, max_cluster), expected)


def test_p_fwe_matches_brute_force(rng):
    max_z = rng.normal(4.0, 0.5, size=300)
    min_z = rng.normal(-4.0, 0.5, size=300)
    z = np.concatenate([rng.normal(scale=4.0, size=500), max_z[:5], min_z[:5], [0.0, np.nan]])
    p = p_fwe(z, max_z, min_z)
    expected = np.where(
        z > 0,
        (1 + (max_z[None, :] >= z[:, None]).sum(1)) / 301,
        (1 + (min_z[None, :] <= z[:, None]).sum(1)) / 301,
    )
    expected[z == 0] = 1.0
    np.testing.assert_array_equal(p[:-1], expected[:-1])
    assert np.isnan(p[-1])


def test_cluster_p_fwe_matches_brute_force(rng):
    max_cluster = rng.integers(0, 200, size=250)
    sizes = np.concatenate([rng.integers(0, 400, size=100), max_cluster[:10], [0]])
    p = cluster_p_fwe(sizes, max_cluster)
    expected = (1 + (max_cluster[None, :] >= sizes[:, None]).sum(1)) / 251
    np.testing.assert_array_equal(p, expected)
    assert p[-1] == 1.0


@pytest.mark.parametrize("p", [0.05, 0.005, 0.001])
def test_z_threshold_consistent_with_p(rng, p):
    hist = histogram(rng.normal(scale=1.3, size=100_000))
    z_pos, z_neg = z_threshold_for_p(hist, p)
    assert 0 < z_pos < 15 and -15 < z_neg < 0
    grid = np.concatenate([
        np.arange(-6, 6, 0.00037),
        [z_pos, np.nextafter(z_pos, 0), z_neg, np.nextafter(z_neg, 0)],
    ])
    passes = p_from_histogram(grid, hist) <= p
    pos, neg = grid > 0, grid < 0
    np.testing.assert_array_equal(passes[pos], grid[pos] >= z_pos)
    np.testing.assert_array_equal(passes[neg], grid[neg] <= z_neg)


def test_z_threshold_extremes(rng):
    hist = histogram(rng.normal(size=1000))
    assert z_threshold_for_p(hist, 1e-6) == (np.inf, -np.inf)  # unreachable with N = 1000
    z_pos, z_neg = z_threshold_for_p(hist, 1.0)
    tiny = np.nextafter(0.0, 1.0)  # every nonzero z reaches p = 1
    assert (z_pos, z_neg) == (tiny, -tiny)
    with pytest.raises(ValueError, match="'p'"):
        z_threshold_for_p(hist, 0.0)


# -- relocation and blocks ---------------------------------------------------------------


def test_relocate_draws_documented_indices(study_maps):
    effect, variance = study_maps
    k, n_voxels = effect.shape
    z = relocate(effect, variance, np.random.default_rng(3), 2)
    replay = np.random.default_rng(3)
    for b in range(2):
        source = replay.integers(0, n_voxels, size=(k, n_voxels))
        rows = np.arange(k)[:, None]
        expected = dersimonian_laird(effect[rows, source], variance[rows, source]).z
        np.testing.assert_allclose(z[b], expected, rtol=1e-12, atol=1e-14)


def test_relocate_single_voxel_is_identity(study_maps):
    effect, variance = study_maps[0][:, :1], study_maps[1][:, :1]
    z = relocate(effect, variance, np.random.default_rng(0), 4)
    np.testing.assert_allclose(z[:, 0], dersimonian_laird(effect, variance).z[0], rtol=1e-13)


def test_block_equals_relocate_summaries(study_maps):
    effect, variance = study_maps
    seed = np.random.SeedSequence(11)
    threshold = (1.5, -1.5)
    summary = randomization_block(effect, variance, seed, 6, _largest_runs, threshold)
    z = relocate(effect, variance, np.random.default_rng(seed), 6)
    np.testing.assert_array_equal(summary.hist, histogram(z))
    np.testing.assert_array_equal(summary.max_z, z.max(axis=1))
    np.testing.assert_array_equal(summary.min_z, z.min(axis=1))
    runs = np.array([_largest_runs(row, threshold) for row in z])
    np.testing.assert_array_equal(summary.max_cluster_pos, runs[:, 0])
    np.testing.assert_array_equal(summary.max_cluster_neg, runs[:, 1])
    assert summary.max_cluster_pos.dtype == np.int64 and summary.max_cluster_pos.any()
    assert summary.n_randomizations == 6 and summary.hist.sum() == z.size


def test_block_without_cluster_function_has_zero_clusters(study_maps):
    summary = randomization_block(*study_maps, np.random.SeedSequence(1), 3)
    np.testing.assert_array_equal(summary.max_cluster_pos, 0)
    np.testing.assert_array_equal(summary.max_cluster_neg, 0)


def test_same_seed_same_summary_different_seed_differs(study_maps):
    a = randomization_block(*study_maps, np.random.SeedSequence(7, spawn_key=(0, 3)), 4)
    b = randomization_block(*study_maps, np.random.SeedSequence(7, spawn_key=(0, 3)), 4)
    c = randomization_block(*study_maps, np.random.SeedSequence(7, spawn_key=(0, 4)), 4)
    for name in NullSummary._fields:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.max_z, c.max_z)


def test_per_randomization_seeds_do_not_depend_on_blocking(study_maps):
    seeds = [np.random.SeedSequence(5, spawn_key=(17, b)) for b in range(5)]
    whole = randomization_block(*study_maps, seeds, 5)
    split = combine(
        [randomization_block(*study_maps, seeds[:2], 2), randomization_block(*study_maps, seeds[2:], 3)]
    )
    for name in NullSummary._fields:
        np.testing.assert_array_equal(getattr(whole, name), getattr(split, name))
    z3 = relocate(*study_maps, np.random.default_rng(seeds[3]), 1)[0]
    assert whole.max_z[3] == z3.max() and whole.min_z[3] == z3.min()
    with pytest.raises(ValueError, match="one per randomization"):
        randomization_block(*study_maps, seeds, 4)


def test_block_validation(study_maps):
    with pytest.raises(TypeError, match="SeedSequence"):
        randomization_block(*study_maps, 7, 2)
    with pytest.raises(ValueError, match="'z_threshold'"):
        randomization_block(*study_maps, np.random.SeedSequence(0), 2, _largest_runs)
    with pytest.raises(ValueError, match="at least 2 studies"):
        randomization_block(
            study_maps[0][:1], study_maps[1][:1], np.random.SeedSequence(0), 2
        )
    with pytest.raises(ValueError, match="'n_randomizations'"):
        relocate(*study_maps, np.random.default_rng(0), -1)


def test_combine_is_associative(study_maps):
    seeds = np.random.SeedSequence(99).spawn(3)
    a, b, c = (
        randomization_block(*study_maps, seed, n, _largest_runs, (1.0, -1.0))
        for seed, n in zip(seeds, (2, 3, 1), strict=True)
    )
    left = combine([combine([a, b]), c])
    right = combine([a, combine([b, c])])
    flat = combine([a, b, c])
    for name in NullSummary._fields:
        np.testing.assert_array_equal(getattr(left, name), getattr(right, name))
        np.testing.assert_array_equal(getattr(left, name), getattr(flat, name))
    assert flat.n_randomizations == 6
    np.testing.assert_array_equal(flat.max_z, np.concatenate([a.max_z, b.max_z, c.max_z]))
    np.testing.assert_array_equal(flat.hist, a.hist + b.hist + c.hist)
    assert all(np.array_equal(x, y) for x, y in zip(combine([a]), a, strict=True))
    with pytest.raises(ValueError, match="empty"):
        combine([])


# -- calibration -------------------------------------------------------------------------


def test_null_calibration(rng):
    # "Observed" maps that are themselves a relocation are exchangeable with the null, so
    # the one-tailed p of each direction is (conservatively) uniform: about 5% of voxels
    # reach p < 0.05 with z > 0, and 5% with z < 0.
    k, n_voxels = 10, 5000
    effect = rng.normal(size=(k, 1)) * 0.3 + rng.normal(size=(k, n_voxels)) * 0.6
    variance = rng.uniform(0.03, 0.3, size=(k, n_voxels))
    observed = relocate(effect, variance, np.random.default_rng(2024), 1)[0]
    null = randomization_block(effect, variance, np.random.SeedSequence(2025), 20)
    p = p_from_histogram(observed, null.hist)
    for alpha, tol in ((0.05, 0.012), (0.01, 0.005)):
        assert abs(np.mean((observed > 0) & (p < alpha)) - alpha) < tol
        assert abs(np.mean((observed < 0) & (p < alpha)) - alpha) < tol
    # FWE: the observed maximum is one more draw from the distribution of maxima. The 21
    # exchangeable maxima (observed + 20 randomizations), each against the other 20, take the
    # ranks 1/21, ..., 21/21 once each (no ties); the same for the minima.
    for extremes, observed_extreme in ((null.max_z, observed.max()), (null.min_z, observed.min())):
        pooled = np.append(extremes, observed_extreme)
        assert np.unique(pooled).size == 21
        p = [p_fwe(value, np.delete(pooled, b), np.delete(pooled, b)) for b, value in enumerate(pooled)]
        np.testing.assert_array_equal(np.sort(p), np.arange(1, 22) / 21)
