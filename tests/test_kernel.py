import numpy as np
import pytest

from daskmeta.analyses.recreate import _lattice
from daskmeta.model import grid
from daskmeta.stats.peak_kernel import (
    KERNEL_FLOOR,
    combine_peaks,
    kernel_radius,
    lattice_graph,
    peak_kernels,
    sigma_from_fwhm,
)


@pytest.fixture(scope="module")
def lattice():
    return _lattice(1.0)


def _fwhm_along(profile_mm, values):
    """FWHM of a sampled 1-D profile by linear interpolation of the half-maximum crossings."""
    half = values.max() / 2
    above = np.flatnonzero(values >= half)
    lo, hi = above[0], above[-1]
    left = np.interp(half, [values[lo - 1], values[lo]], [profile_mm[lo - 1], profile_mm[lo]])
    right = np.interp(half, [values[hi + 1], values[hi]], [profile_mm[hi + 1], profile_mm[hi]])
    return right - left


@pytest.mark.parametrize("fwhm", [10.0, 20.0])
def test_isotropic_kernel_has_the_requested_fwhm_on_each_axis(fwhm):
    peak = np.array([[45, 60, 40]])
    for axis in range(3):
        line = np.repeat(peak, 41, axis=0)
        line[:, axis] += np.arange(-20, 21)
        values = peak_kernels(peak, line, fwhm=fwhm, anisotropy=0.0)[0]
        assert values[20] == 1.0
        assert _fwhm_along(2.0 * np.arange(-20, 21), values) == pytest.approx(fwhm, rel=0.02)


def test_isotropic_kernel_is_the_gaussian():
    rng = np.random.default_rng(0)
    peak = np.array([[45, 55, 40]])
    targets = peak + rng.integers(-12, 13, (500, 3))
    d2 = 4.0 * ((targets - peak) ** 2).sum(1)
    expected = np.exp(-d2 / (2 * sigma_from_fwhm(20) ** 2))
    expected[expected < KERNEL_FLOOR] = 0
    np.testing.assert_allclose(peak_kernels(peak, targets, 20, 0.0)[0], expected, rtol=1e-12)


def test_radius_matches_floor():
    assert np.exp(-kernel_radius(20) ** 2 / (2 * sigma_from_fwhm(20) ** 2)) == pytest.approx(KERNEL_FLOOR)


def test_anisotropic_kernel_is_narrower_and_stops_at_tissue_edges(lattice):
    graph, node_of = lattice
    mask = grid.load_mask("gray_matter")
    peak = mask.ijk[[mask.n_voxels // 3]]
    iso = peak_kernels(peak, mask.ijk, 20, 0.0)[0]
    aniso = peak_kernels(peak, mask.ijk, 20, 1.0, graph, node_of)[0]
    half = peak_kernels(peak, mask.ijk, 20, 0.5, graph, node_of)[0]
    assert aniso[mask.lookup[tuple(peak[0])]] == pytest.approx(1.0)
    # geodesic distance >= Euclidean distance, so the kernel never exceeds the isotropic one
    assert np.all(aniso <= iso + 1e-12)
    assert np.all(half <= iso + 1e-12) and np.all(aniso <= half + 1e-12)
    assert (aniso > 0).sum() < (iso > 0).sum()


def test_lattice_step_lengths():
    brain = np.zeros((3, 3, 3), bool)
    brain[0, 0, 0] = brain[1, 0, 0] = brain[1, 1, 1] = True
    tissue = np.zeros((3, 3, 3, 3))
    tissue[0] = 1.0  # all grey
    tissue[:, 1, 1, 1] = [0.0, 1.0, 0.0]  # a white voxel: TV = 1 to its grey neighbour
    graph, node_of = lattice_graph(brain, tissue, beta=1.0)
    a, b, c = node_of[0, 0, 0], node_of[1, 0, 0], node_of[1, 1, 1]
    assert graph[a, b] == pytest.approx(2.0)
    assert graph[b, c] == pytest.approx(2.0 * np.sqrt(2) * 2)  # lengthened by 1 + beta * TV
    assert graph[a, c] == pytest.approx(2.0 * np.sqrt(3) * 2)
    assert (graph != graph.T).nnz == 0


def test_combine_peaks_rules():
    kernels = np.array([[1.0, 0.5, 0.0, 0.0], [0.0, 0.5, 1.0, 0.0]])
    effect, envelope = combine_peaks(kernels, np.array([1.2, -1.2]))
    np.testing.assert_allclose(effect, [1.2, 0.0, -1.2, 0.0])  # cancels where they meet
    np.testing.assert_allclose(envelope, [1.0, 0.5, 1.0, 0.0])
    # two close peaks of the same value never exceed that value
    effect, _ = combine_peaks(np.array([[1.0, 0.9], [0.9, 1.0]]), np.array([1.0, 1.0]))
    assert np.all(effect <= 1.0)
    empty, env = combine_peaks(np.zeros((0, 3)), np.zeros(0))
    assert not empty.any() and not env.any()
