"""The permuted group analysis of SDM-PSI by algebra (daskmeta.stats.psi_group)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from daskmeta.stats import psi_group
from daskmeta.stats.effect_size import g_variance, hedges_j
from daskmeta.stats.subject_images import group_labels, standardize


def _literal_one_sample(noise, flips, g):
    n = noise.shape[0]
    j = hedges_j(n - 1)
    out = np.empty((len(flips), len(g), noise.shape[1]))
    for p, sigma in enumerate(flips):
        for m, g_m in enumerate(g):
            images = noise + g_m / j  # each subject's image
            permuted = sigma[:, None] * images
            t = stats.ttest_1samp(permuted, 0.0, axis=0).statistic
            out[p, m] = j * t / np.sqrt(n)
    return out


def _literal_two_sample(noise, labels, g, n1):
    total = noise.shape[0]
    n2 = total - n1
    j = hedges_j(total - 2)
    patients = group_labels(n1, n2).astype(bool)
    out = np.empty((len(labels), len(g), noise.shape[1]))
    for p, label in enumerate(labels.astype(bool)):
        for m, g_m in enumerate(g):
            images = noise + np.where(patients[:, None], g_m / j, 0.0)
            t = stats.ttest_ind(images[label], images[~label], axis=0).statistic
            out[p, m] = j * t * np.sqrt(1 / n1 + 1 / n2)
    return out


@pytest.mark.parametrize("n", [3, 4, 9, 30])
def test_one_sample_matches_the_literal_computation(rng, n):
    noise = standardize(rng.normal(size=(n, 7)))
    g = rng.uniform(-2.5, 2.5, (3, 7))
    flips = psi_group.random_flips(np.random.SeedSequence(n), 12, n)
    res = psi_group.one_sample_g(noise, flips, g)
    assert res.g.shape == res.variance.shape == (12, 3, 7)
    np.testing.assert_allclose(res.g, _literal_one_sample(noise, flips, g), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.variance, g_variance(res.g, n), rtol=1e-12)
    np.testing.assert_allclose(res.g[0], g, rtol=0, atol=1e-12)  # identity first


@pytest.mark.parametrize(("n1", "n2"), [(2, 2), (6, 5), (4, 11), (25, 20)])
def test_two_sample_matches_the_literal_computation(rng, n1, n2):
    noise = standardize(rng.normal(size=(n1 + n2, 7)) * 3 + 1, group_labels(n1, n2))
    g = rng.uniform(-2.5, 2.5, (3, 7))
    labels = psi_group.random_relabels(np.random.SeedSequence(n1 * 100 + n2), 12, n1, n2)
    res = psi_group.two_sample_g(noise, labels, g, n1)
    assert res.g.shape == (12, 3, 7)
    np.testing.assert_allclose(res.g, _literal_two_sample(noise, labels, g, n1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.variance, g_variance(res.g, n1, n2), rtol=1e-12)
    np.testing.assert_allclose(res.g[0], g, rtol=0, atol=1e-12)


def test_identity_reproduces_large_effects_exactly(rng):
    noise = standardize(rng.normal(size=(40, 200)), group_labels(22, 18))
    g = rng.uniform(-6, 6, (5, 200))
    res = psi_group.two_sample_g(noise, group_labels(22, 18)[None], g, 22)
    np.testing.assert_allclose(res.g[0], g, rtol=0, atol=1e-12)
    one = standardize(rng.normal(size=(15, 200)))
    res = psi_group.one_sample_g(one, np.ones((1, 15)), g)
    np.testing.assert_allclose(res.g[0], g, rtol=0, atol=1e-12)


def test_total_sum_of_squares_is_invariant_to_relabelling(rng):
    # the identity the two-sample algebra rests on, checked on the images themselves
    n1, n2 = 7, 9
    total = n1 + n2
    noise = standardize(rng.normal(size=(total, 5)), group_labels(n1, n2))
    d = rng.uniform(-2, 2, 5)
    images = noise + np.where(group_labels(n1, n2)[:, None] == 1, d, 0.0)
    ss_total = ((images - images.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(ss_total, (total - 2) + n1 * n2 * d**2 / total, rtol=1e-13)
    for label in psi_group.random_relabels(1, 5, n1, n2).astype(bool):
        a, b = images[label], images[~label]
        within = ((a - a.mean(0)) ** 2).sum(0) + ((b - b.mean(0)) ** 2).sum(0)
        diff = a.mean(0) - b.mean(0)
        np.testing.assert_allclose(within, ss_total - n1 * n2 / total * diff**2, rtol=1e-12)


def test_random_flips_and_relabels_are_seeded():
    flips = psi_group.random_flips(np.random.SeedSequence(7), 500, 20)
    assert flips.dtype == np.int8 and flips.shape == (500, 20)
    assert np.all(flips[0] == 1) and set(np.unique(flips)) == {-1, 1}
    np.testing.assert_array_equal(flips, psi_group.random_flips(np.random.SeedSequence(7), 500, 20))
    assert abs((flips[1:] == 1).mean() - 0.5) < 0.02
    labels = psi_group.random_relabels(np.random.SeedSequence(7), 500, 12, 8)
    assert labels.shape == (500, 20) and np.all(labels.sum(1) == 12)
    np.testing.assert_array_equal(labels[0], group_labels(12, 8))
    np.testing.assert_array_equal(labels, psi_group.random_relabels(np.random.SeedSequence(7), 500, 12, 8))
    assert abs(labels[1:].mean(0) - 0.6).max() < 0.08  # every subject equally likely a patient
    assert not np.array_equal(labels, psi_group.random_relabels(8, 500, 12, 8))


def test_unstandardised_noise_and_bad_permutations_are_rejected(rng):
    raw = rng.normal(size=(10, 4))
    g = np.zeros((1, 4))
    with pytest.raises(ValueError, match="not standardised"):
        psi_group.one_sample_g(raw, np.ones((1, 10)), g)
    noise = standardize(raw)
    with pytest.raises(ValueError, match="not standardised"):
        psi_group.two_sample_g(noise, group_labels(5, 5)[None], g, 5)  # not per group
    with pytest.raises(ValueError, match="-1 or \\+1"):
        psi_group.one_sample_g(noise, np.zeros((1, 10)), g)
    noise2 = standardize(raw, group_labels(5, 5))
    with pytest.raises(ValueError, match="exactly n1"):
        psi_group.two_sample_g(noise2, np.ones((1, 10)), g, 5)
    with pytest.raises(ValueError, match="at least 3"):
        psi_group.one_sample_g(standardize(raw[:2]), np.ones((1, 2)), g)
    with pytest.raises(ValueError, match=r"\(M, V\)"):
        psi_group.two_sample_g(noise2, group_labels(5, 5)[None], np.zeros((1, 3)), 5)
