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


def test_anisotropic_kernel_is_narrower_on_the_grey_matter_mask(lattice):
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


@pytest.fixture(scope="module")
def slab():
    """A 20 x 21 x 3 brain: CSF for i < 5, pure grey for 5 <= i < 15, mostly white for i >= 15."""
    brain = np.ones((20, 21, 3), bool)
    tissue = np.zeros((3, *brain.shape))
    tissue[2, :5] = 1.0  # CSF: TV to grey = 1
    tissue[0, 5:15] = 1.0  # grey
    tissue[:, 15:] = np.array([0.2, 0.8, 0.0])[:, None, None, None]  # white: TV to grey = 0.8
    graph, node_of = lattice_graph(brain, tissue, beta=1.0)
    return graph, node_of


def test_anisotropic_kernel_stops_at_tissue_edges(slab):
    # docs/methods.md: vd^2 = (1 - a) d^2 + a D^2, D the geodesic distance whose steps cost
    # |u - w| (1 + beta TV(u, w)). From a grey peak at i = 10, n voxels (2n mm) away:
    #   along the grey (j axis, or i within the grey): D = d = 2n mm;
    #   into white (i = 10 + n, n >= 5): one 2 mm step grey -> white costs 2 (1 + 0.8): D = 2n + 1.6;
    #   into CSF (i = 10 - n, n >= 6): one 2 mm step grey -> CSF costs 2 (1 + 1): D = 2n + 2.
    graph, node_of = slab
    peak = np.array([[10, 10, 1]])
    n = np.arange(1, 10)
    along = np.column_stack([np.full(9, 10), 10 + n, np.ones(9, int)])
    to_white = np.column_stack([10 + n, np.full(9, 10), np.ones(9, int)])
    to_csf = np.column_stack([10 - n, np.full(9, 10), np.ones(9, int)])
    two_sigma2 = 2 * sigma_from_fwhm(20) ** 2
    d = 2.0 * n
    big_d_white = np.where(n >= 5, d + 1.6, d)
    big_d_csf = np.where(n >= 6, d + 2.0, d)
    for a in (1.0, 0.5):
        kernel = {name: peak_kernels(peak, targets, 20, a, graph, node_of)[0]
                  for name, targets in (("along", along), ("white", to_white), ("csf", to_csf))}
        vd2 = {"along": d**2, "white": (1 - a) * d**2 + a * big_d_white**2,
               "csf": (1 - a) * d**2 + a * big_d_csf**2}
        for name, values in kernel.items():
            np.testing.assert_allclose(values, np.exp(-vd2[name] / two_sigma2), rtol=1e-12)
        iso = peak_kernels(peak, along, 20, 0.0)[0]
        np.testing.assert_allclose(kernel["along"], iso, rtol=1e-12)  # within tissue: isotropic
        # Equal Euclidean distances: equal inside the grey, lower once the path leaves it.
        np.testing.assert_allclose(kernel["white"][n < 5], kernel["along"][n < 5], rtol=1e-12)
        np.testing.assert_allclose(kernel["csf"][n < 6], kernel["along"][n < 6], rtol=1e-12)
        assert np.all(kernel["white"][n >= 5] < 0.9 * kernel["along"][n >= 5])
        assert np.all(kernel["csf"][n >= 6] < 0.9 * kernel["along"][n >= 6])
        assert np.all(kernel["csf"][n >= 6] < kernel["white"][n >= 6])  # TV 1 > TV 0.8
        # Falls faster across the boundary: the step over it drops more than the step along.
        step_white = kernel["white"][4] / kernel["white"][3]  # i = 14 -> 15 (grey -> white)
        step_along = kernel["along"][4] / kernel["along"][3]
        assert step_white < 0.9 * step_along


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
    # docs/methods.md: effect = sum K_i (K_i g_i) / sum K_i, W = max K_i. Kernel values below 1
    # and unequal so that sum K^2 g / sum K differs from the plain weighted mean sum K g / sum K.
    kernels = np.array([[0.5, 0.8, 0.6, 0.0, 1e-9],
                        [0.0, 0.4, 0.2, 0.3, 0.0]])
    effect, envelope = combine_peaks(kernels, np.array([2.0, -1.0]))
    # voxel 0, one peak: 0.5 * 0.5 * 2 / 0.5 = 1.0 (sum K g / sum K would give 2.0)
    # voxel 1: (0.64 * 2 - 0.16 * 1) / 1.2 = 1.12 / 1.2 (sum K g / sum K: 1.2 / 1.2 = 1.0)
    # voxel 2: (0.36 * 2 - 0.04 * 1) / 0.8 = 0.85 (sum K g / sum K: 1.0 / 0.8 = 1.25)
    # voxel 3, one peak: 0.3 * -1 = -0.3; voxel 4: every K < 1e-8, so 0
    np.testing.assert_allclose(effect, [1.0, 1.12 / 1.2, 0.85, -0.3, 0.0], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(envelope, [0.5, 0.8, 0.6, 0.3, 1e-9])
    empty, env = combine_peaks(np.zeros((0, 3)), np.zeros(0))
    assert not empty.any() and not env.any()
