"""TFCE: the union-find kernel against a plain per-level ``ndimage.label`` reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from daskmeta.model.grid import load_mask
from daskmeta.stats import _tfce_jit
from daskmeta.stats.tfce import LEVEL_TOLERANCE, Neighbours, neighbours, tfce, tfce_maxima

STRUCTURE = np.ones((3, 3, 3), dtype=bool)


def reference_part(z, ijk, E, H, dh):
    """TFCE of the positive part of ``z``: label ``{z >= k dh}`` on the volume at every level."""
    ijk = np.asarray(ijk)
    low = ijk.min(axis=0)
    shape = tuple(ijk.max(axis=0) - low + 1)
    where = tuple((ijk - low).T)
    n = np.floor(np.asarray(z) / dh + LEVEL_TOLERANCE)  # the documented level rule
    n[np.isnan(n)] = 0
    out = np.zeros(len(ijk))
    for k in range(1, int(n.max(initial=0)) + 1):
        volume = np.zeros(shape, dtype=bool)
        volume[where] = n >= k
        labels, _ = ndimage.label(volume, structure=STRUCTURE)
        sizes = np.bincount(labels.ravel())
        label = labels[where]
        inside = label > 0
        out[inside] += sizes[label[inside]].astype(float) ** E * (k * dh) ** H * dh
    return out


def reference(z, ijk, E=0.5, H=2.0, dh=0.1):
    z = np.asarray(z, dtype=float)
    return np.where(z > 0, reference_part(z, ijk, E, H, dh), -reference_part(-z, ijk, E, H, dh))


def cube_ijk(size=12, hole=True):
    """Voxels of a small cube of the grid, with a hole so the mask is not convex."""
    volume = np.ones((size, size, size), dtype=bool)
    if hole:
        volume[3:7, 2:9, :] = False
    return np.argwhere(volume) + np.array([40, 50, 40])


def smooth_map(ijk, seed, scale=3.0, sigma=1.5):
    ijk = np.asarray(ijk)
    gen = np.random.default_rng(seed)
    shape = tuple(ijk.max(axis=0) + 2)
    field = ndimage.gaussian_filter(gen.standard_normal(shape), sigma)
    z = field[tuple(ijk.T)]
    return scale * z / z.std()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_reference_on_random_smooth_maps(seed):
    ijk = cube_ijk()
    z = smooth_map(ijk, seed)
    assert (z > 1).any() and (z < -1).any()
    got = tfce(z, ijk)
    np.testing.assert_allclose(got, reference(z, ijk), rtol=1e-10, atol=0)
    assert np.all(np.sign(got)[np.abs(z) >= 0.1] == np.sign(z)[np.abs(z) >= 0.1])


def test_rough_map_many_small_clusters():
    ijk = cube_ijk(10, hole=False)
    z = np.random.default_rng(5).standard_normal(len(ijk)) * 2
    np.testing.assert_allclose(tfce(z, ijk), reference(z, ijk), rtol=1e-10, atol=0)


@pytest.mark.parametrize(("E", "H", "dh"), [(1.0, 1.0, 0.25), (0.0, 3.0, 0.05), (0.66, 0.0, 0.5)])
def test_parameters(E, H, dh):
    ijk = cube_ijk(10)
    z = smooth_map(ijk, 7)
    got = tfce(z, ijk, E=E, H=H, dh=dh)
    np.testing.assert_allclose(got, reference(z, ijk, E, H, dh), rtol=1e-10, atol=0)


def test_single_voxel():
    # levels 0.1 .. 0.5, each a cluster of 1: sum (0.1 k)^2 0.1
    expected = sum((0.1 * k) ** 2 * 0.1 for k in range(1, 6))
    np.testing.assert_allclose(tfce([0.55], [[3, 4, 5]]), [expected], rtol=1e-12)
    np.testing.assert_allclose(tfce([-0.55], [[3, 4, 5]]), [-expected], rtol=1e-12)


def test_two_separate_blobs():
    # blob A: 2 voxels at 0.2 (touching by a corner); blob B: 1 voxel at 0.3, far away
    ijk = [[0, 0, 0], [1, 1, 1], [5, 5, 5], [2, 2, 4]]
    z = [0.2, 0.2, 0.3, 0.0]
    a = np.sqrt(2) * (0.01 + 0.04) * 0.1
    b = (0.01 + 0.04 + 0.09) * 0.1
    np.testing.assert_allclose(tfce(z, ijk), [a, a, b, 0.0], rtol=1e-12)


def test_blob_merging_at_a_lower_level():
    # a row of voxels: peaks 0.3 and 0.2 separated by a saddle at 0.1
    ijk = [[0, 0, k] for k in range(5)]
    z = [0.3, 0.2, 0.1, 0.2, 0.0]
    # level 0.1: one cluster of 4; level 0.2: {0, 1} and {3}; level 0.3: {0}
    low = np.sqrt(4) * 0.01 * 0.1
    expected = [
        low + np.sqrt(2) * 0.04 * 0.1 + 0.09 * 0.1,
        low + np.sqrt(2) * 0.04 * 0.1,
        low,
        low + 0.04 * 0.1,
        0.0,
    ]
    np.testing.assert_allclose(tfce(z, ijk), expected, rtol=1e-12)


def test_positive_and_negative_blobs_are_separate():
    # a positive and a negative voxel that touch: each is its own cluster of its sign
    got = tfce([0.2, -0.2, 0.2], [[0, 0, 0], [0, 0, 1], [0, 1, 1]])
    pos2 = np.sqrt(2) * (0.01 + 0.04) * 0.1
    np.testing.assert_allclose(got, [pos2, -(0.01 + 0.04) * 0.1, pos2], rtol=1e-12)


def test_negative_part_is_the_mirror():
    ijk = cube_ijk(10)
    z = smooth_map(ijk, 11)
    np.testing.assert_array_equal(tfce(-z, ijk), -tfce(z, ijk))


def test_voxel_exactly_on_a_level():
    # 0.3 / 0.1 = 2.9999999999999996: still three levels; 0.7 / 0.1 = 6.999999999999999
    for value, levels in [(0.3, 3), (0.7, 7), (0.1, 1), (0.6, 6)]:
        expected = sum((k * 0.1) ** 2 * 0.1 for k in range(1, levels + 1))
        np.testing.assert_allclose(tfce([value], [[1, 1, 1]]), [expected], rtol=1e-12)
    np.testing.assert_array_equal(tfce([0.1 * (1 - 1e-6)], [[1, 1, 1]]), [0.0])
    # on-level voxels join their level's cluster
    ijk = [[0, 0, 0], [0, 0, 1]]
    np.testing.assert_allclose(tfce([0.3, 0.3], ijk), reference([0.3, 0.3], ijk), rtol=1e-12)


def test_empty_map_gives_zeros():
    ijk = cube_ijk(6)
    z = np.random.default_rng(3).uniform(-0.0999, 0.0999, len(ijk))
    np.testing.assert_array_equal(tfce(z, ijk), np.zeros(len(ijk)))
    max_pos, max_neg = tfce_maxima(z[None], ijk)
    np.testing.assert_array_equal(max_pos, [0.0])
    np.testing.assert_array_equal(max_neg, [0.0])


def test_nan_counts_as_below_every_level():
    z = np.array([0.2, np.nan, 0.2])
    ijk = [[0, 0, 0], [0, 0, 1], [0, 0, 2]]
    np.testing.assert_allclose(tfce(z, ijk), [0.005, 0.0, 0.005], rtol=1e-12)
    with pytest.raises(ValueError, match="infinite"):
        tfce([np.inf, 0.0, 0.0], ijk)


def test_batch_maxima_equal_per_map_maxima():
    ijk = cube_ijk()
    nb = neighbours(ijk)
    z_batch = np.stack([smooth_map(ijk, seed) for seed in range(4)] + [np.zeros(len(ijk))])
    z_batch[1] = np.abs(z_batch[1])  # no negative part
    max_pos, max_neg = tfce_maxima(z_batch, nb)
    for m, z in enumerate(z_batch):
        enhanced = tfce(z, nb)
        assert max_pos[m] == max(enhanced.max(), 0.0)
        assert max_neg[m] == max(-enhanced.min(), 0.0)
    assert max_neg[1] == 0.0 and max_pos[4] == 0.0
    # non-contiguous input gives the same
    again = tfce_maxima(np.asfortranarray(z_batch), ijk)
    np.testing.assert_array_equal(again[0], max_pos)


def test_neighbours_structure():
    ijk = cube_ijk(5, hole=False)
    nb = neighbours(ijk)
    assert isinstance(nb, Neighbours) and nb.n_voxels == len(ijk)
    counts = np.diff(nb.indptr)
    assert counts.max() == 26 and counts.min() == 7  # inner voxels and corners
    # symmetric, and within the 3x3x3 block
    pairs = {(v, int(u)) for v in range(len(ijk)) for u in nb.indices[nb.indptr[v]:nb.indptr[v + 1]]}
    assert all((u, v) in pairs for v, u in pairs)
    assert all(np.abs(ijk[v] - ijk[u]).max() == 1 for v, u in pairs)
    with pytest.raises(ValueError, match="repeats"):
        neighbours([[0, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="voxels"):
        tfce(np.zeros(3), nb)


def test_argument_checks():
    with pytest.raises(ValueError, match="dh"):
        tfce([1.0], [[0, 0, 0]], dh=0.0)
    with pytest.raises(ValueError, match="finite"):
        tfce([1.0], [[0, 0, 0]], E=np.nan)
    with pytest.raises(ValueError, match="voxel vector"):
        tfce(np.zeros((2, 2)), [[0, 0, 0]])
    with pytest.raises(ValueError, match="n_maps"):
        tfce_maxima(np.zeros(3), [[0, 0, 0]])
    assert _tfce_jit.LEVEL_TOLERANCE == LEVEL_TOLERANCE


def test_gray_matter_mask():
    mask = load_mask("gray_matter")
    gen = np.random.default_rng(2026)
    field = ndimage.gaussian_filter(gen.standard_normal((91, 109, 91)), 2.0)
    z = mask.from_volume(field)
    z = 2.5 * z / z.std()
    dh = 0.25  # fewer levels keep the reference quick
    got = tfce(z, mask, dh=dh)
    np.testing.assert_allclose(got, reference(z, mask.ijk, dh=dh), rtol=1e-10, atol=0)
    max_pos, max_neg = tfce_maxima(np.stack([z, -z]), mask, dh=dh)
    assert max_pos[0] == got.max() == max_neg[1]
    assert max_neg[0] == -got.min() == max_pos[1]
