"""The fast cluster-extent nulls equal the reference paths (docs/methods.md, section 5.4).

References kept here: :meth:`daskmeta.stats.peak_kernel.KernelPaster.__call__` (flat indexing and two
``bincount``), :func:`daskmeta.stats.sdm_model.pooled_z` on the stacked maps,
:func:`daskmeta.stats.labelling.largest_cluster` (``scipy.ndimage.label``),
``daskmeta.null.randomization._cluster_block`` (NumPy/SciPy) and
:func:`daskmeta.null.cluster_extent.cluster_null_block_fused` (the fused z maps, bit for bit the
reference's), on the real grey-matter mask. The certified null (:func:`cluster_null_block`,
:func:`relocated_classes`) must give the same passing voxels and the same largest clusters for the
same seeds, over many randomizations of the reference example, at thresholds set exactly at voxels'
z values and at odd thresholds. Only the mean analysis runs the cluster-extent null (the jackknife,
the linear models and the sweeps do not: docs/methods.md, section 5.4).
"""

from __future__ import annotations

import numpy as np
import pytest

from daskmeta.model.grid import load_mask
from daskmeta.null.cluster_extent import (
    cluster_null_block,
    cluster_null_block_fused,
    largest_clusters,
    paster,
    relocated_classes,
    relocated_peaks,
)
from daskmeta.null.randomization import _cluster_block
from daskmeta.stats.labelling import largest_cluster
from daskmeta.stats.peak_kernel import KernelPaster
from daskmeta.stats.sdm_model import pooled_z, variance_model

N1 = np.array([20.0, 35.0, 12.0, 50.0, 18.0, 25.0, 40.0])
N2 = np.array([22.0, np.nan, 14.0, 45.0, np.nan, 25.0, 38.0])


@pytest.fixture(scope="module")
def mask():
    return load_mask("gray_matter")


@pytest.fixture(scope="module")
def paste():
    return paster("gray_matter", 20.0)


def _border_voxels(mask) -> np.ndarray:
    """Mask voxels at the extremes of each axis (kernels cut by the grid's and mask's edges)."""
    ijk = mask.ijk
    picks = [np.argmin(ijk[:, a]) for a in range(3)] + [np.argmax(ijk[:, a]) for a in range(3)]
    return ijk[picks]


def _studies(mask, counts, seed=0, extra=()):
    """Peaks at random mask voxels (``extra`` grid voxels appended to study 0), with g values."""
    gen = np.random.default_rng(seed)
    ijk = [mask.ijk[gen.integers(0, mask.n_voxels, c)] for c in counts]
    if len(extra):
        ijk[0] = np.concatenate([ijk[0], np.asarray(extra, dtype=np.int64)])
    g = [gen.normal(0, 1.0, len(v)) for v in ijk]
    start = np.concatenate([[0], np.cumsum([len(v) for v in ijk])]).astype(np.int64)
    return ijk, g, start


def test_paste_all_equals_bincount_paster(mask, paste):
    border = _border_voxels(mask)
    off_mask = np.array([[0, 0, 0], [90, 108, 90], [45, 0, 45]])  # on the grid, off the mask
    ijk, g, start = _studies(mask, [3, 0, 12, 1, 25, 7, 0], extra=np.concatenate([border, off_mask]))
    g[3][:] = 0.0  # a peak with a zero effect
    maps = paste.paste_all(np.concatenate(ijk), np.concatenate(g), start)
    assert maps.shape == (7, mask.n_voxels)
    for study, (v, gg) in enumerate(zip(ijk, g, strict=True)):
        np.testing.assert_array_equal(maps[study], paste(v, gg))
    assert not maps[1].any() and not maps[6].any()
    assert maps[0].any() and not maps[3].any()


def test_fused_z_equals_pooled_stack(mask, paste):
    sampling, constant = variance_model(N1, N2)
    for seed, counts in enumerate([[3, 0, 12, 1, 25, 7, 2], [0] * 7, [40, 1, 0, 0, 9, 3, 30]]):
        ijk, g, start = _studies(mask, counts, seed=seed, extra=_border_voxels(mask) if seed == 0 else ())
        stack = np.stack([paste(v, gg) for v, gg in zip(ijk, g, strict=True)])
        expected = pooled_z(stack, sampling, constant)
        z = paste.pooled_z(np.concatenate(ijk), np.concatenate(g), start, sampling, constant)
        np.testing.assert_allclose(z, expected, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(z, expected)  # in practice bit for bit


def test_rows_need_c_ordered_lookup(mask):
    lookup = mask.lookup.copy()
    inside = lookup >= 0
    lookup[inside] = lookup[inside][::-1]
    with pytest.raises(ValueError, match="C order"):
        KernelPaster(lookup, 20.0).rows  # noqa: B018


@pytest.mark.parametrize("thresholds", [(1.0, -1.0), (0.3, -0.2), (50.0, -50.0), (-np.inf, np.inf)])
def test_largest_clusters_equal_scipy(mask, paste, thresholds):
    sampling, constant = variance_model(N1, N2)
    ijk, g, start = _studies(mask, [3, 4, 12, 1, 25, 7, 2], seed=3)
    z = paste.pooled_z(np.concatenate(ijk), np.concatenate(g), start, sampling, constant)
    z[::97] = np.nan
    expected = (largest_cluster(z >= thresholds[0], mask), largest_cluster(z <= thresholds[1], mask))
    assert largest_clusters(z, thresholds, mask) == expected


def test_largest_clusters_on_speckle(mask):
    """Isolated voxels, diagonal (corner-only) contacts and the whole mask."""
    gen = np.random.default_rng(5)
    z = gen.normal(size=mask.n_voxels)
    for threshold in (2.5, 1.0, 0.0):
        assert largest_clusters(z, (threshold, -threshold), mask) == (
            largest_cluster(z >= threshold, mask), largest_cluster(z <= -threshold, mask))
    assert largest_clusters(np.zeros(mask.n_voxels), (0.0, 1.0), mask) == (
        largest_cluster(np.ones(mask.n_voxels, bool), mask),) * 2
    with pytest.raises(ValueError, match="shape"):
        largest_clusters(z[:-1], (1.0, -1.0), mask)


def test_relocated_peaks_draw_as_reference(mask):
    peak_g = np.array([[0.5, -1.0, np.nan], [np.nan] * 3, [1.5, 2.0, 0.1]])
    counts = np.isfinite(peak_g).sum(1)
    ijk, g, start = relocated_peaks(np.random.default_rng(7), counts, peak_g, mask)
    gen = np.random.default_rng(7)
    expected = np.concatenate([mask.ijk[gen.integers(0, mask.n_voxels, c)] for c in counts])
    np.testing.assert_array_equal(ijk, expected)
    np.testing.assert_array_equal(g, [0.5, -1.0, 1.5, 2.0, 0.1])
    np.testing.assert_array_equal(start, [0, 2, 2, 5])


@pytest.mark.parametrize("thresholds", [(1.0, -0.8), (0.4, -0.4), (40.0, -40.0)])
def test_cluster_null_block_equals_reference(thresholds):
    gen = np.random.default_rng(11)
    counts = [5, 0, 14, 1, 9, 3, 22]
    peak_g = np.full((7, 22), np.nan)
    for study, count in enumerate(counts):
        peak_g[study, :count] = gen.choice([-1, 1], count) * (0.5 + gen.exponential(0.7, count))
    args = (peak_g, N1, N2, 3, "fast-cluster", 4, 7, "gray_matter", 20.0, thresholds)
    expected = _cluster_block(*args)
    got = cluster_null_block(*args)
    for field in expected._fields:  # extremes included (clipped at the thresholds)
        if getattr(expected, field) is None:  # the voxel null's fields of a cluster block
            assert getattr(got, field) is None
            continue
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
        assert getattr(got, field).dtype == getattr(expected, field).dtype
    if thresholds[0] < 10:
        assert got.max_cluster_pos.min() > 0 and got.max_cluster_neg.min() > 0



# --- the certified null (cluster_null_block): passing sets and cluster sizes of the references ---

CLBP_THRESHOLDS = (1.243, -0.9810000000000001)  # the voxel null's p < 0.005 thresholds of the example


@pytest.fixture(scope="module")
def clbp():
    """Peak effects and sample sizes of the reference example (24 CLBP studies, 190 peaks)."""
    from daskmeta.analyses.recreate import peak_effects
    from daskmeta.io import load_studies

    studies = load_studies("examples/clbp")
    return (peak_effects(studies).astype(np.float64), studies.studies["n1"].to_numpy(dtype=np.float64),
            studies.studies["n2"].to_numpy(dtype=np.float64))


def _relocated(peak_g, seed, mask):
    counts = np.isfinite(peak_g).sum(1)
    return relocated_peaks(np.random.default_rng(seed), counts, peak_g, mask)


def _assert_classes(peaks, n1, n2, thresholds, paste):
    """relocated_classes equals the thresholded fused z map (bit for bit the reference's)."""
    sampling, constant = variance_model(n1, n2)
    z = paste.pooled_z(*peaks, sampling, constant)
    pos, neg, n_exact = relocated_classes(*peaks, sampling, constant, "gray_matter", 20.0, thresholds)
    np.testing.assert_array_equal(pos, np.flatnonzero(z >= thresholds[0]))
    np.testing.assert_array_equal(neg, np.flatnonzero(z <= thresholds[1]))
    return z, n_exact


@pytest.mark.parametrize("counts", [[7, 7, 22, 0, 10], [0, 0, 0], [3], [1, 0, 25, 0, 0, 2, 13]])
def test_relocated_peaks_one_draw_equals_per_study_draws(mask, counts):
    peak_g = np.full((len(counts), max(max(counts), 1)), np.nan)
    for study, count in enumerate(counts):
        peak_g[study, :count] = np.arange(count) + 0.5
    for seed in range(20):
        sequence = np.random.SeedSequence(seed, spawn_key=(7, seed, 1))
        ijk, _, _ = relocated_peaks(np.random.default_rng(sequence), np.array(counts), peak_g, mask)
        gen = np.random.default_rng(sequence)
        per_study = [gen.integers(0, mask.n_voxels, count) for count in counts]
        np.testing.assert_array_equal(ijk, mask.ijk[np.concatenate(per_study)].reshape(-1, 3))


def test_relocated_classes_equal_fused_z_clbp(mask, paste, clbp):
    """Many randomizations of the reference example at its own thresholds and at others."""
    peak_g, n1, n2 = clbp
    exact = []
    for seed in range(24):
        peaks = _relocated(peak_g, seed, mask)
        for thresholds in (CLBP_THRESHOLDS, (2.0, -2.0), (0.3, -0.25)):
            _, n_exact = _assert_classes(peaks, n1, n2, thresholds, paste)
            exact.append(n_exact)
    assert max(exact) < 0.01 * mask.n_voxels  # the exact path stays rare (about 0.3 %)


def test_relocated_classes_equal_fused_z_synthetic(mask, paste):
    """Border and off-mask peaks, empty studies, zero effects."""
    off_mask = np.array([[0, 0, 0], [90, 108, 90], [45, 0, 45]])
    for seed, counts in enumerate([[3, 0, 12, 1, 25, 7, 2], [0] * 7, [40, 1, 0, 0, 9, 3, 30]]):
        extra = np.concatenate([_border_voxels(mask), off_mask]) if seed == 0 else ()
        ijk, g, start = _studies(mask, counts, seed=seed, extra=extra)
        g[1][:] = 0.0
        peaks = (np.concatenate(ijk), np.concatenate(g), start)
        for thresholds in ((1.0, -0.8), (0.2, -0.2), (40.0, -40.0)):
            _assert_classes(peaks, N1, N2, thresholds, paste)


def test_relocated_classes_at_thresholds_equal_to_voxel_z(mask, paste, clbp):
    """Thresholds set exactly at voxels' z values: those voxels take the exact path."""
    peak_g, n1, n2 = clbp
    sampling, constant = variance_model(n1, n2)
    for seed in range(3):
        peaks = _relocated(peak_g, 100 + seed, mask)
        z = paste.pooled_z(*peaks, sampling, constant)
        order = np.argsort(z)
        for rank in (0.99, 0.9, 0.6):
            high = float(z[order[int(rank * len(z))]])
            low = float(z[order[int((1 - rank) * len(z))]])
            for thresholds in ((high, low), (np.nextafter(high, np.inf), np.nextafter(low, -np.inf)),
                               (np.nextafter(high, -np.inf), np.nextafter(low, np.inf))):
                _, n_exact = _assert_classes(peaks, n1, n2, thresholds, paste)
                assert n_exact >= 2


@pytest.mark.parametrize("thresholds", [(-np.inf, np.inf), (np.inf, -np.inf), (0.0, 0.0),
                                        (np.nan, np.nan), (-0.5, 0.5)])
def test_relocated_classes_odd_thresholds(mask, paste, clbp, thresholds):
    _assert_classes(_relocated(clbp[0], 5, mask), clbp[1], clbp[2], thresholds, paste)


def test_relocated_classes_needs_a_certifiable_model(mask):
    ijk, g, start = _studies(mask, [2, 3])
    peaks = (np.concatenate(ijk), np.concatenate(g), start)
    with pytest.raises(ValueError, match="c >= 0"):
        relocated_classes(*peaks, np.array([0.1, 0.1]), np.array([0.01, -0.01]), "gray_matter", 20.0,
                          (1.0, -1.0))


def test_cluster_null_block_equals_fused_clbp(clbp):
    """The cluster sizes of many randomizations of the reference example, both directions."""
    peak_g, n1, n2 = clbp
    for thresholds in (CLBP_THRESHOLDS, (1.8, -1.5)):
        args = (peak_g, n1, n2, 1, "clbp-mean", 0, 60, "gray_matter", 20.0, thresholds)
        got = cluster_null_block(*args)
        expected = cluster_null_block_fused(*args)
        for field in expected._fields:  # extremes included
            if getattr(expected, field) is None:
                assert getattr(got, field) is None
                continue
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
            assert getattr(got, field).dtype == getattr(expected, field).dtype
        assert (got.max_z > thresholds[0]).mean() > 0.8  # the maps' own maxima, mostly
        assert (got.max_cluster_pos > 0).mean() > 0.8 and (got.max_cluster_neg > 0).mean() > 0.8
        assert len(np.unique(got.max_cluster_pos)) > 30  # the randomizations differ


def test_cluster_null_block_equals_numpy_reference_clbp(clbp):
    peak_g, n1, n2 = clbp
    args = (peak_g, n1, n2, 4, "clbp-mean", 100, 106, "gray_matter", 20.0, CLBP_THRESHOLDS)
    got, expected = cluster_null_block(*args), _cluster_block(*args)
    np.testing.assert_array_equal(got.max_cluster_pos, expected.max_cluster_pos)
    np.testing.assert_array_equal(got.max_cluster_neg, expected.max_cluster_neg)


@pytest.mark.parametrize("case", ["one study", "no peaks", "zero effects", "nan sample size",
                                  "odd thresholds"])
def test_cluster_null_block_degenerate_cases(case):
    gen = np.random.default_rng(2)
    peak_g = gen.normal(0.0, 1.0, (4, 6))
    peak_g[1, 3:] = np.nan
    n1, n2 = N1[:4].copy(), N2[:4].copy()
    thresholds = (0.5, -0.5)
    if case == "one study":
        peak_g, n1, n2 = peak_g[:1], n1[:1], n2[:1]
    elif case == "no peaks":
        peak_g[:] = np.nan
    elif case == "zero effects":
        peak_g[2] = 0.0
    elif case == "nan sample size":  # not certifiable: the fused path
        n1[0] = np.nan
    elif case == "odd thresholds":
        thresholds = (-np.inf, np.inf)
    args = (peak_g, n1, n2, 9, "degenerate", 0, 4, "gray_matter", 20.0, thresholds)
    got = cluster_null_block(*args)
    for expected in (cluster_null_block_fused(*args), _cluster_block(*args)):
        np.testing.assert_array_equal(got.max_cluster_pos, expected.max_cluster_pos)
        np.testing.assert_array_equal(got.max_cluster_neg, expected.max_cluster_neg)


def test_largest_listed_component_equals_scipy(mask):
    from daskmeta.null.cluster_extent import neighbourhood
    from daskmeta.stats._sparse_null_jit import largest_listed_component

    hood = neighbourhood("gray_matter")
    n = mask.n_voxels
    slot = np.full(n, -1, np.int64)
    work = np.empty((2, n), np.int64)
    gen = np.random.default_rng(8)
    for fraction in (0.0, 0.01, 0.2, 0.5, 1.0):
        selected = gen.random(n) < fraction
        voxels = np.flatnonzero(selected)
        got = largest_listed_component(voxels, len(voxels), hood.padded_index, hood.padded_lookup,
                                       hood.offsets, slot, work[0], work[1])
        assert got == largest_cluster(selected, mask)
        assert (slot == -1).all()  # left as found
