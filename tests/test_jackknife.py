"""Leave-one-out kernels: equal to explicit recomputation without each study."""

import numpy as np
import pytest

from daskmeta.stats.jackknife import jackknife_null_block, leave_one_out
from daskmeta.stats.null import histogram, relocate
from daskmeta.stats.random_effects import dersimonian_laird


@pytest.fixture
def stack(rng):
    effect = rng.normal(0.3, 0.5, (8, 2000))
    variance = rng.uniform(0.05, 0.2, (8, 2000))
    effect[:, :200] = 0.0  # far from every peak: all studies 0, Q = 0, tau2 = 0
    effect[:4, 200:400] = 0.4  # homogeneous subsets
    return effect, variance


def test_each_run_equals_the_analysis_without_that_study(stack):
    effect, variance = stack
    runs = leave_one_out(effect, variance)
    for j in range(effect.shape[0]):
        explicit = dersimonian_laird(np.delete(effect, j, 0), np.delete(variance, j, 0))
        for field in ("effect", "variance", "z", "tau2", "q", "i2", "p_q"):
            np.testing.assert_allclose(getattr(runs, field)[j], getattr(explicit, field),
                                       rtol=1e-10, atol=1e-12, err_msg=field)
        informative = explicit.q > 1e-9  # q_z of Q ~ 0 is the clip value either way
        np.testing.assert_allclose(runs.q_z[j][informative], explicit.q_z[informative], rtol=1e-8)


def test_axis_and_minimum(stack):
    effect, variance = stack
    moved = leave_one_out(effect.T, variance.T, axis=1)
    np.testing.assert_allclose(moved.z, leave_one_out(effect, variance).z)
    with pytest.raises(ValueError, match="at least 3"):
        leave_one_out(effect[:2], variance[:2])


def test_null_block_equals_relocation_then_explicit_runs(stack):
    effect, variance = stack
    seeds = np.random.SeedSequence(5).spawn(2)
    hist = jackknife_null_block(effect, variance, seeds)
    expected = np.zeros_like(hist)
    for sequence in seeds:
        rng = np.random.default_rng(sequence)
        source = rng.integers(0, effect.shape[1], size=effect.shape)
        rows = np.arange(effect.shape[0])[:, None]
        moved_e, moved_v = effect[rows, source], variance[rows, source]
        for j in range(effect.shape[0]):
            z = dersimonian_laird(np.delete(moved_e, j, 0), np.delete(moved_v, j, 0)).z
            expected[j] += histogram(z)
    np.testing.assert_array_equal(hist, expected)
    # the relocation is the one of the mean analysis' null
    rng = np.random.default_rng(seeds[0])
    assert relocate(effect, variance, rng, 1).shape == (1, effect.shape[1])


def test_jackknife_graph_equals_explicit_analyses_without_each_study(make_studyset):
    from daskmeta.analyses.leave_one_out import jackknife
    from daskmeta.analyses.means import mean
    from daskmeta.analyses.recreate import recreate
    from daskmeta.inference.replication import replication, replication_counts
    from daskmeta.inference.thresholding import threshold

    maps = recreate(make_studyset(n_studies=5, peaks_per_study=4, seed=2), anisotropy=0.0)
    maps = maps.persist(scheduler="threads")
    runs = jackknife(maps, permutations=4, seed=3, name="jk", block_size=3)
    assert runs.z.dims == ("left_out", "voxel")
    runs = runs.compute(scheduler="threads")
    for j, study in enumerate(runs.left_out.values):
        keep = [s for s in maps.study.values if s != study]
        explicit = mean(maps, studies=keep, permutations=2, voxel_p=None).compute(scheduler="threads")
        for name in ("effect", "variance", "z", "tau2", "i2"):
            np.testing.assert_allclose(runs[name].values[j], explicit[name].values,
                                       rtol=1e-10, atol=1e-12)
        assert runs.null_hist.values[j].sum() == 4 * maps.sizes["voxel"]
    full = mean(maps, permutations=4, seed=3, voxel_p=None).compute(scheduler="threads")
    labels = threshold(full, p=0.05, extent=5, atlas=False).labels
    detail = replication(labels, runs, p=0.05, extent=5)
    n_clusters = len({abs(v) for v in np.unique(labels) if v})
    assert len(detail) == n_clusters * 5
    counts = replication_counts(detail, 5)
    assert all(c.endswith("/5") for c in counts.values())


def test_reference_engine_runs_the_reference_draws_and_says_so(make_studyset):
    """engine='reference' pools the NumPy draws of the same seeds, and records that engine."""
    from daskmeta.analyses.leave_one_out import jackknife
    from daskmeta.analyses.recreate import recreate
    from daskmeta.null.seeds import randomization_seeds

    maps = recreate(make_studyset(n_studies=4, peaks_per_study=3, seed=5), anisotropy=0.0)
    maps = maps.compute(scheduler="threads")
    runs = jackknife(maps, permutations=3, seed=2, name="ref", block_size=2, engine="reference")
    assert runs.attrs["null_engine"] == "reference"
    hist = runs.null_hist.compute(scheduler="sync").values
    effect = maps.effect.values.astype(np.float64)
    variance = maps.variance.values.astype(np.float64)
    expected = jackknife_null_block(effect, variance, randomization_seeds(2, "ref", 0, 3))
    np.testing.assert_array_equal(hist, expected)
    permuted = jackknife(maps, permutations=3, seed=2, name="ref", block_size=2)
    assert permuted.attrs["null_engine"] == "permutation"
    assert not np.array_equal(permuted.null_hist.compute(scheduler="sync").values, expected)
