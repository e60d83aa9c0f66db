"""Multimodal overlap: the Clopper-Pearson union-bound kernel and the lazy two-analysis graph."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr
from scipy import stats

from daskmeta.analyses.overlap import multimodal
from daskmeta.inference.multimodal_clusters import overlap_tables
from daskmeta.model.grid import load_mask, mm_to_ijk
from daskmeta.stats.multimodal import clopper_pearson_upper, multimodal_p, null_count
from daskmeta.stats.null import bin_index, histogram
from daskmeta.stats.pvalues import p_from_histogram

# Planted blobs (grey-matter centres, mm) and the sign of each analysis there.
BOTH_UP = (-38, -22, 56)  # increased in a and b -> positive same-direction cluster
BOTH_DOWN = (40, 16, 0)  # decreased in a and b -> negative same-direction cluster
A_ONLY = (30, -80, -20)  # increased in a only -> nowhere
A_UP_B_DOWN = (-4, 50, 20)  # -> positive opposite-direction cluster
A_DOWN_B_UP = (50, -30, 10)  # -> negative opposite-direction cluster
SIGNS = {BOTH_UP: (1, 1), BOTH_DOWN: (-1, -1), A_ONLY: (1, 0), A_UP_B_DOWN: (1, -1), A_DOWN_B_UP: (-1, 1)}
RADIUS_MM = 10.0


# --------------------------------------------------------------------------- kernel


@pytest.mark.parametrize("n", [1, 2, 7, 99, 1000, 123_457])
def test_clopper_pearson_upper_is_scipys_exact_interval(n):
    counts = np.unique(np.linspace(0, n, 25).round().astype(np.int64))
    upper = clopper_pearson_upper(counts, n)
    # the one-sided 95% upper bound is the upper limit of the two-sided exact 90% interval
    expected = [stats.binomtest(int(c), n).proportion_ci(confidence_level=0.9, method="exact").high
                for c in counts]
    np.testing.assert_allclose(upper, expected, rtol=1e-9, atol=1e-12)
    assert upper[counts == n].tolist() == [1.0]


@pytest.mark.parametrize("n", [1, 3, 50, 999, 2000])
def test_clopper_pearson_upper_exceeds_the_randomization_p(n):
    count = np.arange(n + 1)
    upper = clopper_pearson_upper(count, n)
    assert np.all(upper >= (1.0 + count) / (1.0 + n))
    assert np.all(np.diff(upper) > 0) or n == 1
    assert np.all(upper <= 1.0)


def test_null_count_round_trips_histogram_p_values(rng):
    hist = histogram(rng.standard_normal(200_001))
    n_null = int(hist.sum())
    z = np.concatenate([rng.normal(0, 2, 5000), [0.0, 20.0, -20.0, 3.9, -4.2]])
    p = p_from_histogram(z, hist)
    count = null_count(p, n_null)
    assert count.dtype == np.int64
    # p_from_histogram counts the bin of z and everything beyond it in z's direction
    index = bin_index(z)
    upper_tail = np.cumsum(hist[::-1])[::-1]
    lower_tail = np.cumsum(hist)
    expected = np.where(z > 0, upper_tail[index], lower_tail[index])
    expected[z == 0] = n_null
    np.testing.assert_array_equal(count, expected)
    np.testing.assert_allclose((1.0 + count) / (1.0 + n_null), p, rtol=1e-15)


def test_null_count_clips_and_rejects_bad_input():
    np.testing.assert_array_equal(null_count([0.0, 1e-9, 0.5, 1.0], 9), [0, 0, 4, 9])
    with pytest.raises(ValueError, match="NaN"):
        null_count([np.nan], 9)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        null_count([1.5], 9)
    with pytest.raises(ValueError, match=">= 1"):
        null_count([0.5], 0)
    with pytest.raises(ValueError, match="level"):
        clopper_pearson_upper(1, 9, level=1.0)
    with pytest.raises(ValueError, match=r"\[0, n\]"):
        clopper_pearson_upper(10, 9)
    with pytest.raises(TypeError, match="integers"):
        clopper_pearson_upper(0.5, 9)


def test_hand_worked_example():
    # N = 99 null values. Analysis 1: z = 3.0, p = 0.05 = (1 + 4) / 100, so 4 null values beyond;
    # upper 95% CP bound of 4/99 = Beta(5, 95).ppf(0.95) = 0.0900736. Analysis 2: z = 2.5,
    # p = 0.01 = (1 + 0) / 100; bound of 0/99 = 1 - 0.05 ** (1/99) = 0.0298067.
    # p_mm = 0.0900736 + 0.0298067 - 0.0900736 * 0.0298067 = 0.1171954.
    z1 = [3.0, -3.0, 3.0, -2.0, 3.0, 0.0]
    z2 = [2.5, -2.5, -2.5, 4.0, 0.0, 2.5]
    mm = multimodal_p(z1, [0.05] * 6, 99, z2, [0.01] * 6, 99)
    np.testing.assert_allclose(mm.z, [2.5, -2.5, 0, 0, 0, 0])
    np.testing.assert_allclose(mm.p, [0.1171954, 0.1171954, 1, 1, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(mm.z_opposite, [0, 0, 2.5, -2.0, 0, 0])
    np.testing.assert_allclose(mm.p_opposite, [1, 1, 0.1171954, 0.1171954, 1, 1], rtol=1e-6)


@pytest.fixture
def random_pair(rng):
    """z and histogram p of two analyses with small (coarse p) and large nulls."""
    hist1 = histogram(rng.standard_normal(200))
    hist2 = histogram(rng.standard_normal(100_000))
    z1, z2 = rng.normal(0, 2.5, (2, 20_000))
    z1[:50] = 0.0
    z2[50:80] = 0.0
    return (z1, p_from_histogram(z1, hist1), int(hist1.sum()),
            z2, p_from_histogram(z2, hist2), int(hist2.sum()))


def test_multimodal_p_is_conservative_and_at_most_one(random_pair):
    z1, p1, n1, z2, p2, n2 = random_pair
    mm = multimodal_p(z1, p1, n1, z2, p2, n2)
    for z, p in ((mm.z, mm.p), (mm.z_opposite, mm.p_opposite)):
        assert np.all(p >= np.maximum(p1, p2))
        assert np.all((p > 0) & (p <= 1))
        assert np.all(p[z == 0] == 1)


def test_multimodal_p_is_symmetric_and_splits_by_direction(random_pair):
    z1, p1, n1, z2, p2, n2 = random_pair
    forward = multimodal_p(z1, p1, n1, z2, p2, n2)
    backward = multimodal_p(z2, p2, n2, z1, p1, n1)
    np.testing.assert_array_equal(forward.z, backward.z)
    np.testing.assert_array_equal(forward.p, backward.p)
    np.testing.assert_array_equal(forward.z_opposite, -backward.z_opposite)
    np.testing.assert_array_equal(forward.p_opposite, backward.p_opposite)

    same = np.sign(z1) * np.sign(z2) > 0
    opposite = np.sign(z1) * np.sign(z2) < 0
    assert same.any() and opposite.any()
    smaller = np.minimum(np.abs(z1), np.abs(z2))
    np.testing.assert_array_equal(forward.z[same], (np.sign(z1) * smaller)[same])
    np.testing.assert_array_equal(forward.z_opposite[opposite], (np.sign(z1) * smaller)[opposite])
    assert np.all(forward.z[~same] == 0) and np.all(forward.p[~same] == 1)
    assert np.all(forward.z_opposite[~opposite] == 0) and np.all(forward.p_opposite[~opposite] == 1)
    neither = (z1 == 0) | (z2 == 0)
    assert neither.sum() == 80 and not (same | opposite)[neither].any()


def test_multimodal_p_propagates_nan():
    mm = multimodal_p([np.nan, 3.0], [np.nan, 0.01], 99, [2.0, 3.0], [0.02, 0.01], 99)
    assert all(np.isnan(field[0]) and not np.isnan(field[1]) for field in mm)


# --------------------------------------------------------------------------- analyses


@pytest.fixture(scope="module")
def gray():
    return load_mask("gray_matter")


def _voxel(gray, centre_mm):
    return int(gray.lookup[tuple(mm_to_ijk(centre_mm)[0])])


def _blob(gray, centre_mm, radius_mm=RADIUS_MM):
    return np.linalg.norm(gray.xyz - gray.xyz[_voxel(gray, centre_mm)], axis=1) <= radius_mm


def _mean_like(name, z, hist, mask="gray_matter"):
    return xr.Dataset(
        {"z": ("voxel", z), "p": ("voxel", p_from_histogram(z, hist)), "null_hist": ("bin", hist)},
        attrs={"type": "mean", "name": name, "mask": mask, "n_studies": 12, "permutations": 50},
    )


@pytest.fixture(scope="module")
def pair(gray):
    """Two mean-like results: independent standard-normal noise plus the planted blobs."""
    gen = np.random.default_rng(7)
    z = gen.standard_normal((2, gray.n_voxels))
    for centre, signs in SIGNS.items():
        blob = _blob(gray, centre)
        distance = np.linalg.norm(gray.xyz[blob] - gray.xyz[_voxel(gray, centre)], axis=1)
        for row, sign in enumerate(signs):
            if sign:
                z[row, blob] = sign * (4.0 + 2.0 * np.exp(-(distance**2) / 50.0))
    hist_a = histogram(gen.standard_normal(500_000))
    hist_b = histogram(gen.standard_normal(300_000))
    return _mean_like("gmv", z[0], hist_a), _mean_like("rest", z[1], hist_b)


def _check_clusters(thresholded, gray, expected):
    """Every cluster voxel lies at (or next to: a noise voxel may join) a blob of ``expected``
    (centre -> sign) with that sign, and each expected centre is in a cluster of its sign."""
    labels = thresholded.labels
    allowed = np.zeros(gray.n_voxels, dtype=np.int8)
    for centre, sign in expected.items():
        allowed[_blob(gray, centre, RADIUS_MM + 4.0)] = sign
        assert np.sign(labels[_voxel(gray, centre)]) == sign, centre
    assert np.all(np.sign(labels[labels != 0]) == allowed[labels != 0])
    peaks = thresholded.table[thresholded.table.peak_type == "cluster"]
    assert set(peaks.direction) == {"positive" if s > 0 else "negative" for s in expected.values()}


def test_overlap_finds_planted_blobs_by_direction(pair, gray):
    a, b = pair
    result = multimodal(a, b, name="gmv_rest")
    assert set(result.data_vars) == {"z", "p", "z_opposite", "p_opposite", "z_a", "z_b"}
    assert result.attrs["of"] == ["gmv", "rest"] and result.attrs["type"] == "multimodal"
    assert result.attrs["mask"] == "gray_matter" and result.attrs["level"] == 0.95
    np.testing.assert_array_equal(result.z_b.values, b.z.values)

    same, opposite = overlap_tables(result, atlas=False)
    _check_clusters(same, gray, {BOTH_UP: 1, BOTH_DOWN: -1})
    _check_clusters(opposite, gray, {A_UP_B_DOWN: 1, A_DOWN_B_UP: -1})
    for table in (same, opposite):
        assert not table.labels[_blob(gray, A_ONLY)].any()
    # reported heights are the smaller |z| and p the union bound, never below either input p
    peak = same.table.iloc[0]
    voxel = _voxel(gray, (peak.x, peak.y, peak.z))
    assert peak.sdm_z == pytest.approx(min(a.z.values[voxel], b.z.values[voxel]))
    assert peak.p >= max(a.p.values[voxel], b.p.values[voxel])


def test_multimodal_is_lazy_and_equals_the_in_memory_result(counting_scheduler, pair, gray):
    a, b = pair
    eager = multimodal(a, b)
    lazy_a = a.chunk({"voxel": 50_000, "bin": 7_000})  # several histogram blocks: rechunked whole
    lazy_b = b.chunk({"voxel": 50_000})
    counter = counting_scheduler
    with dask.config.set(scheduler=counter):
        lazy = multimodal(lazy_a, lazy_b)
    assert counter.count == 0
    assert lazy.p.chunks == ((50_000, 50_000, 50_000, gray.n_voxels - 150_000),)
    layers = lazy.p.data.__dask_graph__().layers
    kernel = [name for name in layers if name.startswith("overlap-")]
    assert len(kernel) == 1 and len(layers[kernel[0]]) == 4  # one task per voxel chunk
    xr.testing.assert_identical(lazy.compute(scheduler="sync"), eager)

    with dask.config.set(scheduler=counter):
        same, _ = overlap_tables(lazy, atlas=False)
    assert counter.count == 1  # both tables from one pass over the graph
    np.testing.assert_array_equal(same.labels, overlap_tables(eager, atlas=False)[0].labels)


def test_mismatched_inputs_are_refused(pair, gray):
    a, b = pair
    n = gray.n_voxels
    with pytest.raises(ValueError, match=r"'gmv' and 'rest' use different masks"):
        multimodal(a, b.assign_attrs(mask="brain"))
    with pytest.raises(ValueError, match=rf"'gmv' and 'rest' have {n} and {n - 1} voxels"):
        multimodal(a, b.isel(voxel=slice(1, None)))
    with pytest.raises(ValueError, match="'rest' has no variable 'null_hist'"):
        multimodal(a, b.drop_vars("null_hist"))
    with pytest.raises(TypeError, match="xarray.Dataset"):
        multimodal(a, b.z)
    with pytest.raises(ValueError, match="'mean' was provided"):
        overlap_tables(a)
    with pytest.raises(TypeError, match="DataArray was provided"):
        overlap_tables(a.z)
