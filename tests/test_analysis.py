"""The mean analysis: Dask path vs dense kernels, determinism, laziness, calibration."""

import dask
import numpy as np
import pytest

from daskmeta.analyses.means import mean, select_studies
from daskmeta.analyses.recreate import recreate
from daskmeta.inference.thresholding import threshold
from daskmeta.model.grid import load_mask
from daskmeta.stats.null import relocate
from daskmeta.stats.pvalues import p_from_histogram
from daskmeta.stats.random_effects import dersimonian_laird
from daskmeta.testing.simulate import TrueEffect, simulate_studyset
from daskmeta.testing.synthetic import simulate_table


@pytest.fixture(scope="module")
def maps(make_studyset):
    studies = make_studyset(n_studies=7, peaks_per_study=4, seed=11)
    return recreate(studies, anisotropy=0.0, voxel_chunk=50_000).persist(scheduler="threads")


def test_building_the_analysis_computes_nothing(counting_scheduler, maps):
    counter = counting_scheduler
    with dask.config.set(scheduler=counter):
        result = mean(maps, permutations=20, seed=1)
    assert counter.count == 0
    graph = result.z.data.__dask_graph__()
    # one task per block of randomizations (two passes), never one per randomization
    blocks = [k for k in dict(result.p.data.__dask_graph__()) if "randomization-" in str(k)]
    assert len(blocks) == 2
    assert len(graph) < 50


def test_pooled_maps_equal_the_dense_kernel(maps):
    result = mean(maps, permutations=3, seed=1, voxel_p=None).compute(scheduler="threads")
    dense = dersimonian_laird(maps.effect.values, maps.variance.values, axis=0)
    for name in ("effect", "variance", "z", "tau2", "q", "i2", "p_q", "q_z"):
        np.testing.assert_allclose(result[name].values, getattr(dense, name), rtol=1e-12, atol=0)


def test_null_equals_the_dense_reference_relocation(maps):
    result = mean(maps, permutations=4, seed=9, name="ref", block_size=3,
                  engine="reference").compute(scheduler="sync")
    from daskmeta.null.randomization import randomization_seeds

    effect, variance = maps.effect.values.astype(np.float64), maps.variance.values.astype(np.float64)
    null = np.concatenate([
        relocate(effect, variance, np.random.default_rng(s), 1)
        for s in randomization_seeds(9, "ref", 0, 4)
    ])
    np.testing.assert_array_equal(result.null_max_z.values, null.max(1))
    np.testing.assert_array_equal(result.null_min_z.values, null.min(1))
    assert result.null_hist.values.sum() == null.size
    z = result.z.values
    ordered = np.sort(null.ravel())
    above = ordered.size - np.searchsorted(ordered, z, side="left")  # null >= z
    below = np.searchsorted(ordered, z, side="right")  # null <= z
    exact = np.where(z > 0, 1 + above, 1 + below) / (1 + ordered.size)
    p = result.p.values
    moving = z != 0
    # the histogram counts a whole 0.001-wide bin as exceeding: conservative, never liberal
    assert np.all(p[moving] >= exact[moving] - 1e-15)
    wider_pos = ordered.size - np.searchsorted(ordered, z - 0.001, side="left")
    wider_neg = np.searchsorted(ordered, z + 0.001, side="right")
    bound = np.where(z > 0, 1 + wider_pos, 1 + wider_neg) / (1 + ordered.size)
    assert np.all(p[moving] <= bound[moving] + 1e-15)
    np.testing.assert_array_equal(p, p_from_histogram(z, result.null_hist.values))


@pytest.mark.parametrize("block_size", [1, 4, 7])
def test_same_seed_same_numbers_whatever_the_block_size(maps, block_size):
    reference = mean(maps, permutations=7, seed=3, block_size=7).compute(scheduler="sync")
    other = mean(maps, permutations=7, seed=3, block_size=block_size).compute(scheduler="threads")
    for name in ("z", "p", "p_fwe", "null_hist", "null_max_z", "null_max_cluster_neg"):
        np.testing.assert_array_equal(other[name].values, reference[name].values)
    different = mean(maps, permutations=7, seed=4).compute(scheduler="sync")
    assert not np.array_equal(different.null_max_z.values, reference.null_max_z.values)


def test_same_numbers_with_one_or_two_workers(maps, tmp_path):
    from distributed import Client, LocalCluster

    from daskmeta.io.store import read_group, write_group

    write_group(maps, tmp_path / "maps.zarr", "studies")  # the workers read the maps, as in a run
    stored = read_group(tmp_path / "maps.zarr", "studies")
    results = []
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            result = client.compute(mean(stored, permutations=6, seed=5, block_size=2)).result()
            results.append(result)
    for name in ("z", "p", "p_fwe", "null_hist", "null_max_z", "null_max_cluster_pos"):
        np.testing.assert_array_equal(results[0][name].values, results[1][name].values)


def test_selection_by_where_and_errors(maps):
    chosen = select_studies(maps, where="modality == 'A'")
    assert set(chosen.modality.values) == {"A"}
    with pytest.raises(ValueError, match="needs at least 2"):
        mean(maps, studies=["study00"])
    with pytest.raises(ValueError, match="could not be evaluated"):
        mean(maps, where="nonexistent > 3")


def _simulated_maps(seed, effects=(), n_studies=20):
    table = simulate_table(n_studies, seed=seed, n_peaks_range=(2, 10))
    studies = simulate_studyset(table, list(effects), seed=seed)
    return recreate(studies, anisotropy=0.0).persist(scheduler="threads")


@pytest.mark.slow
def test_null_calibration_over_several_seeds():
    """Peaks spread at random: ~0.5% of voxels per tail below p = 0.005, FWE rarely fires."""
    fractions, fwe_hits = [], 0
    for seed in range(8):
        maps = _simulated_maps(100 + seed)
        result = mean(maps, permutations=50, seed=seed, voxel_p=None).compute(scheduler="threads")
        z, p = result.z.values, result.p.values
        fractions.append([np.mean((p < 0.005) & (z > 0)), np.mean((p < 0.005) & (z < 0))])
        fwe_hits += bool((result.p_fwe.values < 0.05).any())
    fractions = np.array(fractions)
    # voxels are spatially correlated: judge the average over data sets, not a binomial band
    assert 0.001 < fractions.mean() < 0.012, fractions
    assert fwe_hits <= 1


@pytest.mark.slow
def test_planted_effect_is_found_with_its_sign_and_no_decoy():
    location, decoy = (-38.0, -26.0, 56.0), (40.0, 20.0, 40.0)
    effect = TrueEffect(*location, sign=-1, probability=0.95, name="planted")
    maps = _simulated_maps(7, [effect])
    result = mean(maps, permutations=50, seed=1, voxel_p=None).compute(scheduler="threads")
    found = threshold(result, mask="gray_matter").table
    assert len(found)
    mask = load_mask("gray_matter")
    planted_voxel = int(np.argmin(((mask.xyz - location) ** 2).sum(1)))
    assert result.z.values[planted_voxel] < 0 and result.p.values[planted_voxel] < 0.005
    negative = found[found.direction == "negative"]
    distance = np.linalg.norm(negative[["x", "y", "z"]].to_numpy(float) - location, axis=1)
    assert distance.min() < 12
    # the planted cluster is the strongest negative finding
    assert negative.sdm_z.iloc[int(np.argmin(distance))] == found.sdm_z.min()
    peaks = found[["x", "y", "z"]].to_numpy(float)
    assert np.all(np.linalg.norm(peaks - decoy, axis=1) > 20)


def test_result_maps_carry_their_mask_for_export(maps, tmp_path):
    import nibabel as nib

    from daskmeta.io.nifti import to_nifti

    result = mean(maps, permutations=2, seed=1, voxel_p=None).compute(scheduler="threads")
    image = nib.load(to_nifti(result.z, tmp_path / "z.nii.gz"))
    from daskmeta.model.grid import load_mask

    np.testing.assert_allclose(load_mask("gray_matter").from_volume(np.asarray(image.dataobj)),
                               result.z.values, rtol=1e-6)


def test_no_cluster_p_without_a_cluster_extent_null(maps):
    """Without the cluster-extent null, clusters get no p-value (not one against zero maxima)."""
    from daskmeta.report.export import cluster_table

    params = {"p": 0.05, "peak_z": 1.0, "extent": 5}
    without = mean(maps, permutations=10, seed=4, voxel_p=None).compute(scheduler="threads")
    assert without.attrs["cluster_null"] is False
    _, table = cluster_table(without, params)
    assert len(table) > 0 and table["cluster_p_fwe"].isna().all()
    with_null = mean(maps, permutations=10, seed=4).compute(scheduler="threads")
    assert with_null.attrs["cluster_null"] is True
    _, table = cluster_table(with_null, params)
    assert table["cluster_p_fwe"].between(1 / 11, 1).all()


def test_voxel_null_stops_at_uncorrected_permutations(maps):
    """With the cluster-extent null, the uncorrected p is that of a run of
    ``uncorrected_permutations`` randomizations (docs/methods.md, 5.2); the family-wise nulls use all."""
    short = mean(maps, permutations=8, seed=6, block_size=3).compute(scheduler="threads")
    capped = mean(maps, permutations=20, seed=6, block_size=3,
                  uncorrected_permutations=8).compute(scheduler="threads")
    full = mean(maps, permutations=20, seed=6, block_size=3,
                uncorrected_permutations=None).compute(scheduler="threads")
    assert capped.attrs["uncorrected_permutations"] == 8
    assert full.attrs["uncorrected_permutations"] == 20
    assert short.attrs["uncorrected_permutations"] == 8  # the default (1000) shortens nothing
    # the voxel null of the capped run is the short run's, bit for bit
    for name in ("null_hist", "p"):
        np.testing.assert_array_equal(capped[name].values, short[name].values)
    assert capped.null_hist.values.sum() == 8 * maps.sizes["voxel"]
    assert full.null_hist.values.sum() == 20 * maps.sizes["voxel"]
    np.testing.assert_array_equal(capped.null_max_z.values[:8], short.null_max_z.values)
    assert np.isnan(capped.null_max_z.values[8:]).all() and np.isnan(capped.null_min_z.values[8:]).all()
    # same cluster-forming thresholds: the capped run's first 8 cluster-null randomizations are
    # the short run's, and all 20 enter p_fwe
    for name in ("null_max_cluster_pos", "null_max_cluster_neg", "null_peak_max_z"):
        np.testing.assert_array_equal(capped[name].values[:8], short[name].values)
        assert np.isfinite(capped[name].values).all() and capped[name].size == 20
    assert not np.array_equal(capped.p.values, full.p.values)
    # without the cluster-extent null the voxel null gives p_fwe: it runs every randomization
    alone = mean(maps, permutations=20, seed=6, voxel_p=None,
                 uncorrected_permutations=8).compute(scheduler="threads")
    assert alone.attrs["uncorrected_permutations"] == 20
    assert np.isfinite(alone.null_max_z.values).all()
    with pytest.raises(ValueError, match="'uncorrected_permutations' must be at least 1"):
        mean(maps, permutations=20, uncorrected_permutations=0)
