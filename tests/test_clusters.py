"""Cluster labelling and peak kernels against direct SciPy / brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from daskmeta.model.grid import load_mask
from daskmeta.stats.labelling import find_peaks, label_clusters, largest_cluster

AFFINE_2MM = np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


@pytest.fixture(scope="module")
def gray():
    return load_mask("gray_matter")


def test_label_clusters_joins_corners():
    volume = np.zeros((5, 5, 5), dtype=bool)
    volume[0, 0, 0] = volume[1, 1, 1] = True  # corner neighbours: one cluster
    volume[3, 3, 3] = volume[4, 4, 3] = True  # edge neighbours: one cluster
    labels, sizes = label_clusters(volume)
    assert sizes.tolist() == [2, 2]
    assert labels[0, 0, 0] == labels[1, 1, 1] != labels[3, 3, 3]
    assert labels.dtype == np.int32


def test_label_clusters_matches_scipy(rng):
    volume = rng.random((20, 25, 18)) < 0.2
    labels, sizes = label_clusters(volume)
    expected, n = ndimage.label(volume, structure=np.ones((3, 3, 3)))
    np.testing.assert_array_equal(labels, expected)
    assert len(sizes) == n
    np.testing.assert_array_equal(sizes, ndimage.sum_labels(volume, expected, np.arange(1, n + 1)))


def test_label_clusters_errors():
    with pytest.raises(TypeError, match="boolean"):
        label_clusters(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="3-D"):
        label_clusters(np.zeros((3, 3), dtype=bool))


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.02, 0.3])
def test_largest_cluster_matches_full_volume(gray, rng, fraction):
    vector = rng.random(gray.n_voxels) < fraction
    _, sizes = label_clusters(gray.to_volume(vector))
    assert largest_cluster(vector, gray) == (int(sizes.max()) if len(sizes) else 0)


def test_largest_cluster_errors(gray):
    with pytest.raises(ValueError, match="shape"):
        largest_cluster(np.zeros(10, dtype=bool), gray)
    with pytest.raises(TypeError, match="boolean"):
        largest_cluster(np.zeros(gray.n_voxels), gray)


def _bump(shape, centre, amplitude, sigma):
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    distance2 = np.sum((grid - np.asarray(centre)) ** 2, axis=-1)
    return amplitude * np.exp(-distance2 / (2 * sigma**2))


def _reference_peaks(z, labels, label, min_distance_mm, voxel_mm=2.0):
    """Brute force: loop over voxels and their 26 neighbours."""
    height = np.abs(z)
    maxima = []
    for ijk in map(tuple, np.argwhere(labels == label)):
        ok = True
        for offset in itertools.product((-1, 0, 1), repeat=3):
            other = tuple(np.add(ijk, offset))
            if any(c < 0 or c >= s for c, s in zip(other, z.shape, strict=True)):
                continue
            if labels[other] == label and height[other] > height[ijk]:
                ok = False
                break
        if ok:
            maxima.append(ijk)
    maxima.sort(key=lambda v: -height[v])
    accepted = []
    for ijk in maxima:
        if all(np.linalg.norm(np.subtract(ijk, a)) * voxel_mm >= min_distance_mm for a in accepted):
            accepted.append(ijk)
    return np.array(accepted)


def test_find_peaks_two_bumps():
    shape = (30, 20, 20)
    z = _bump(shape, (8, 10, 10), 5.0, 2.0) + _bump(shape, (20, 10, 10), 3.0, 2.0)
    labels, _ = label_clusters(z > 0.05)
    assert labels.max() == 1
    peaks = find_peaks(z, labels, 1, 8.0, affine=AFFINE_2MM)
    assert peaks.tolist() == [[8, 10, 10], [20, 10, 10]]
    np.testing.assert_array_equal(peaks, _reference_peaks(z, labels, 1, 8.0))


def test_find_peaks_close_bumps_merge():
    shape = (30, 20, 20)
    z = _bump(shape, (10, 10, 10), 5.0, 1.0) + _bump(shape, (13, 10, 10), 3.0, 1.0)
    labels, _ = label_clusters(z > 0.1)
    peaks = find_peaks(z, labels, 1, 8.0, affine=AFFINE_2MM)
    assert peaks.tolist() == [[10, 10, 10]]  # 6 mm apart: the smaller one is not a peak
    assert len(find_peaks(z, labels, 1, 4.0, affine=AFFINE_2MM)) == 2


def test_find_peaks_negative_and_random_against_brute_force(rng):
    z = -np.abs(ndimage.gaussian_filter(rng.normal(size=(24, 24, 24)), 1.5)) * 10
    labels, sizes = label_clusters(np.abs(z) > 1.0)
    label = int(np.argmax(sizes)) + 1
    peaks = find_peaks(z, labels, label, 8.0, affine=AFFINE_2MM)
    reference = _reference_peaks(z, labels, label, 8.0)
    np.testing.assert_array_equal(peaks, reference)
    in_cluster = labels == label
    assert np.abs(z[tuple(peaks[0])]) == np.abs(z[in_cluster]).max()
    mm = peaks * 2.0
    distances = np.linalg.norm(mm[:, None] - mm[None], axis=-1)[np.triu_indices(len(peaks), 1)]
    assert np.all(distances >= 8.0)


def test_find_peaks_errors():
    z = np.zeros((4, 4, 4))
    labels = np.zeros((4, 4, 4), dtype=np.int32)
    with pytest.raises(ValueError, match="no voxel"):
        find_peaks(z, labels, 1)
    with pytest.raises(ValueError, match="shape"):
        find_peaks(z, labels[:2], 1)
