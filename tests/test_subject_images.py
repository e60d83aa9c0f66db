"""Preliminary subject images of SDM-PSI (daskmeta.stats.subject_images)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from daskmeta.model.grid import load_mask, templates
from daskmeta.stats import subject_images as si

S2 = 8.0**2 / (8.0 * np.log(2.0))
RHO = float(np.exp(-4.0 / (2.0 * S2)))  # face step of 2 mm within one tissue


@pytest.fixture(scope="module")
def template_images():
    field = si.template_field()
    start = time.perf_counter()
    images = si.subject_images(300, np.random.SeedSequence(11))
    return field, images, time.perf_counter() - start


def _box_field(shape=(12, 12, 12), tissue_of=None):
    brain = np.ones(shape, dtype=bool)
    tissue = np.zeros((3, *shape))
    tissue[0] = 1.0
    if tissue_of is not None:
        tissue = tissue_of(tissue)
    return si.field_model(brain, tissue)


def _corr(y, a, b):
    y = y.astype(np.float64)
    ya, yb = y[:, a], y[:, b]
    norm = np.sqrt(np.einsum("sv,sv->v", ya, ya) * np.einsum("sv,sv->v", yb, yb))
    return np.einsum("sv,sv->v", ya, yb) / norm


def test_face_only_normal_equations_are_unstable_at_8mm():
    # why the face recursion runs axis by axis: the single-field weights sum above 1
    s = np.full((3, 3), np.exp(-8.0 / (2.0 * S2)))
    np.fill_diagonal(s, 1.0)
    w = np.linalg.solve(s, np.full(3, RHO))
    assert w.sum() == pytest.approx(1.045, abs=1e-3)
    assert w.sum() > 1.0


def test_homogeneous_box_is_the_separable_gaussian_process():
    field = _box_field()
    present = field.neighbours >= 0
    np.testing.assert_allclose(field.target[present], RHO, rtol=1e-12)
    np.testing.assert_allclose(field.coefficients[present], RHO, rtol=1e-10)
    assert field.clipped == 0
    n = 3000
    y = si.subject_images(n, 5, field=field)
    lookup = np.arange(12**3).reshape(12, 12, 12)
    inner = lookup[1:, 1:, 1:].ravel()
    for offset, power in [((1, 0, 0), 1), ((0, 1, 0), 1), ((0, 0, 1), 1), ((1, 1, 0), 2), ((1, 1, 1), 3)]:
        other = lookup[tuple(slice(1 - o, 12 - o) for o in offset)].ravel()
        r = _corr(y, inner, other)
        expected = RHO**power  # = exp(-|d|^2 / 2 s^2): the Gaussian factorises across axes
        z = (r - expected) / ((1 - expected**2) / np.sqrt(n))
        assert abs(z.mean()) < 0.6 and z.std() < 1.3 and np.abs(z).max() < 5, (offset, z.mean(), z.std())
    var = (y.astype(np.float64) ** 2).mean(0)
    assert abs(var.mean() - 1) < 0.01 and np.abs(var - 1).max() < 6 * np.sqrt(2 / n)


def test_tissue_change_lowers_the_target_and_keeps_unit_variance():
    def two_tissues(tissue):
        tissue[:, 6:] = 0.0
        tissue[1, 6:] = 1.0  # white matter from i = 6
        return tissue

    field = _box_field(tissue_of=two_tissues)
    across = field.ijk[:, 0] == 6
    assert np.allclose(field.target[across, 0], np.exp(-16.0 / (2.0 * S2)))  # 4 mm step: r = 0.5
    n = 3000
    y = si.subject_images(n, 9, field=field)
    r = _corr(y, np.flatnonzero(across), field.neighbours[across, 0])
    assert abs(r.mean() - 0.5) < 0.02
    var = (y.astype(np.float64) ** 2).mean(0)
    assert abs(var.mean() - 1) < 0.01


def test_template_neighbour_correlations_match_the_targets(template_images):
    field, images, _ = template_images
    n = images.shape[0]
    gm = load_mask("gray_matter").volume[templates()["brain"]]
    for column in range(3):
        ok = np.flatnonzero((field.neighbours[:, column] >= 0) & gm)
        r = _corr(images, ok, field.neighbours[ok, column])
        target = field.target[ok, column]
        z = (r - target) / ((1 - target**2) / np.sqrt(n))
        if column == 0:  # along i the recursion is exact
            assert abs(z.mean()) < 0.05 and 0.9 < z.std() < 1.1
        else:  # exact where reachable, the nearest reachable value elsewhere
            assert abs(np.median(z)) < 0.6, (column, np.median(z))
            assert np.mean(np.abs(z) < 3) > 0.85, (column, np.mean(np.abs(z) < 3))


def test_template_correlation_drops_across_tissue_boundaries(template_images):
    field, images, _ = template_images
    maps = templates()
    tissue = np.stack([maps["gray"], maps["white"], maps["csf"]])[:, maps["brain"]]
    ok = np.flatnonzero(field.neighbours[:, 0] >= 0)
    tv = 0.5 * np.abs(tissue[:, ok] - tissue[:, field.neighbours[ok, 0]]).sum(0)
    r = _corr(images, ok, field.neighbours[ok, 0])
    within, across = r[tv < 0.05].mean(), r[tv > 0.3].mean()
    assert within > 0.8 and across < within - 0.12, (within, across)


def test_template_images_have_unit_variance(template_images):
    _, images, _ = template_images
    n = images.shape[0]
    var = np.einsum("sv,sv->v", images, images, dtype=np.float64) / n
    assert abs(var.mean() - 1) < 0.005
    assert np.mean(np.abs(var - 1) < 4 * np.sqrt(2 / n)) > 0.995
    assert abs(images.mean(dtype=np.float64)) < 0.01


def test_same_seed_same_images():
    field = _box_field((5, 6, 7))
    a = si.subject_images(4, np.random.SeedSequence(3), field=field)
    b = si.subject_images(4, np.random.SeedSequence(3), field=field)
    c = si.subject_images(4, np.random.SeedSequence(4), field=field)
    assert a.dtype == np.float32 and a.shape == (4, 5 * 6 * 7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(si.subject_images(2, 3, field=field), si.subject_images(2, 3, field=field))


def test_cost_of_forty_subjects_on_the_whole_brain(template_images):
    field, _, _ = template_images
    si.subject_images(1, 0)  # compiled
    start = time.perf_counter()
    images = si.subject_images(40, np.random.SeedSequence(1))
    generation = time.perf_counter() - start
    start = time.perf_counter()
    si.standardize(images, si.group_labels(20, 20))
    standardising = time.perf_counter() - start
    print(f"\nsubject_images(40): {generation:.2f} s over {field.n_voxels} voxels; "
          f"standardize: {standardising:.2f} s")
    assert images.shape == (40, field.n_voxels) == (40, int(templates()["brain"].sum()))
    assert generation < 20.0


@pytest.mark.parametrize("groups", [None, si.group_labels(7, 5),
                                    np.array([2, 0, 1, 0, 2, 1, 1, 0, 2, 0, 1, 2])])
def test_standardize_is_exact(rng, groups):
    images = (rng.normal(3.0, 5.0, (12, 50)) * rng.uniform(0.1, 10, 50)).astype(np.float32)
    out = si.standardize(images, groups)
    assert out.dtype == np.float64
    labels = np.zeros(12) if groups is None else groups
    for label in np.unique(labels):
        block = out[labels == label]
        np.testing.assert_allclose(block.sum(0), 0.0, atol=1e-13)
        np.testing.assert_allclose((block**2).sum(0), len(block) - 1, rtol=1e-14)
        np.testing.assert_allclose(block.std(0, ddof=1), 1.0, rtol=1e-14)


def test_standardize_rejects_bad_groups(rng):
    with pytest.raises(ValueError, match="needs 2"):
        si.standardize(rng.normal(size=(4, 3)), [0, 0, 0, 1])
    with pytest.raises(ValueError, match="one label per subject"):
        si.standardize(rng.normal(size=(4, 3)), [0, 1])
    with pytest.raises(ValueError, match="no spread"):
        si.standardize(np.ones((4, 3)))


def test_restrict_selects_the_mask_voxels():
    brain = templates()["brain"]
    flat = np.flatnonzero(brain)[None, :]  # each brain voxel's C-order index in the grid
    for name in ("gray_matter", "brain"):
        mask = load_mask(name)
        np.testing.assert_array_equal(si.restrict(flat, mask)[0], mask.flat_index)
        np.testing.assert_array_equal(si.restrict(flat, mask.volume)[0], mask.flat_index)
    off = np.zeros_like(brain)
    off[0, 0, 0] = True
    with pytest.raises(ValueError, match="off the brain"):
        si.restrict(flat, off)
