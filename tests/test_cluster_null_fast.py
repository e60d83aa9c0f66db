"""The fused cluster-extent null equals the reference path, bit for bit.

References kept here: :meth:`daskmeta.stats.peak_kernel.KernelPaster.__call__` (flat indexing and two
``bincount``), :func:`daskmeta.stats.sdm_model.pooled_z` on the stacked maps,
:func:`daskmeta.stats.labelling.largest_cluster` (``scipy.ndimage.label``) and
``daskmeta.null.randomization._cluster_block``, on the real grey-matter mask.
"""

from __future__ import annotations

import numpy as np
import pytest

from daskmeta.model.grid import load_mask
from daskmeta.null.cluster_extent import cluster_null_block, largest_clusters, paster, relocated_peaks
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
    for field in expected._fields:
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
        assert getattr(got, field).dtype == getattr(expected, field).dtype
    if thresholds[0] < 10:
        assert got.max_cluster_pos.min() > 0 and got.max_cluster_neg.min() > 0

