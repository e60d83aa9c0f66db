"""The fused SDM-PSI null kernel (daskmeta.stats._psi_jit) against the NumPy path.

docs/methods.md, sections 14.2 and 14.3: the permuted g of every study and imputation,
DerSimonian-Laird per imputation and Rubin's rules across imputations, fused per tile of
voxels, must equal psi_group + pool_imputations to rounding (the kernel's g' and weight take
one division and one root instead of three divisions and a root: a few ulps).
"""

from __future__ import annotations

import numpy as np
import pytest

from daskmeta.model.grid import load_mask
from daskmeta.null import psi as null_psi
from daskmeta.null.psi import (
    CHUNK_VOXELS,
    _study_noise,
    _study_terms,
    chunked_extremes,
    null_z,
    null_z_reference,
    permuted_z,
    permuted_z_reference,
    pool_imputations,
    psi_block,
    psi_z_chunk,
    stack_chunks,
)
from daskmeta.stats import _psi_jit
from daskmeta.stats.psi_group import one_sample_g, random_flips, random_relabels, two_sample_g
from daskmeta.stats.random_effects import dersimonian_laird
from daskmeta.stats.subject_images import (
    group_labels,
    restrict,
    restricted_noise,
    standardize,
    subject_images,
)

#: One-sample and two-sample studies mixed; ``n2 = 0`` is one-sample.
SIZES = [(9, 0), (7, 6), (12, 0), (5, 8), (6, 6)]
RTOL, ATOL = 1e-10, 1e-12


def _inputs(n_imputations: int, n_voxels: int = 700, seed: int = 0):
    """Standardised noise, permutations (row 0 the identity) and effects (M, k, V) float32.

    Voxels ``0..255`` have the same effect in every study (and imputation): with the
    identity permutation every g' is equal there, Q = 0 and tau2 = 0 on whole tiles. The
    others spread widely across studies (tau2 > 0) or a little.
    """
    rng = np.random.default_rng(seed)
    noise, perms = [], []
    for n1, n2 in SIZES:
        raw = rng.normal(size=(n1 + n2, n_voxels))
        noise.append(standardize(raw, group_labels(n1, n2) if n2 else None).astype(np.float32))
        flips = (random_relabels(rng.integers(2**32), 4, n1, n2) if n2
                 else random_flips(rng.integers(2**32), 4, n1))
        perms.append(flips.astype(np.float64))
    k = len(SIZES)
    common = rng.normal(0.0, 0.6, (1, 1, n_voxels))
    spread = np.where(np.arange(n_voxels) % 3 == 0, 1.5, 0.1)
    effects = (common + spread * rng.normal(size=(1, k, n_voxels))
               + 0.2 * rng.normal(size=(n_imputations, k, n_voxels)))
    effects[:, :, :256] = common[:, :, :256]
    return noise, perms, effects.astype(np.float32)


@pytest.mark.parametrize("n_imputations", [1, 4])
def test_fused_null_equals_the_numpy_path(n_imputations):
    noise, perms, effects = _inputs(n_imputations)
    fused = null_z(effects, SIZES, noise, perms)
    reference = null_z_reference(effects, SIZES, noise, perms)
    assert fused.shape == (4, effects.shape[2])
    assert np.isfinite(reference).all()
    np.testing.assert_allclose(fused, reference, rtol=RTOL, atol=ATOL)


def test_the_inputs_reach_both_branches_of_tau2():
    """tau2 = 0 on whole tiles (the skipped pass) and tau2 > 0 elsewhere, per imputation."""
    noise, perms, effects = _inputs(3)
    g = np.empty((4, 3, len(SIZES), effects.shape[2]))
    for s, ((n1, n2), e) in enumerate(zip(SIZES, noise, strict=True)):
        out = (two_sample_g(e, perms[s], effects[:, s], n1, check=False) if n2
               else one_sample_g(e, perms[s], effects[:, s], check=False))
        g[:, :, s] = out.g
    terms = _study_terms(SIZES, perms)
    v = terms.sampling[:, None] + terms.constant[:, None] * g * g
    tau2 = dersimonian_laird(g, v, axis=2).tau2
    tile = _psi_jit.TILE
    assert np.all(tau2[0, :, :tile] == 0)  # identity permutation, equal effects: a whole tile
    assert 0.05 < np.mean(tau2[:, :, 256:] > 0) < 0.95


def _literal_z(noise_term, b, effects, terms):
    """psi_group's formula written out on a given noise term, then pool_imputations."""
    d = effects.astype(np.float64)[None] / terms.j_factor[None, None, :, None]  # (1, M, k, V)
    a_term = np.moveaxis(noise_term, 0, 1)[:, None]  # (P, 1, k, V)
    mean = a_term + d * b.T[:, None, :, None]
    ss = terms.base[:, None] + terms.square[:, None] * d * d
    x = np.maximum(ss - terms.square[:, None] * mean * mean, 0.0) / terms.df[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        g = terms.j_factor[:, None] * mean / np.sqrt(x)
        v = terms.sampling[:, None] + terms.constant[:, None] * g * g
        return pool_imputations(g, v, study_axis=2, imputation_axis=1).z


def test_kernel_on_given_noise_terms_and_the_guard():
    """The kernel alone, on arbitrary noise terms: where ``S + s d^2 - s m^2 < 0`` (which
    standardised noise cannot reach except by rounding) g' is infinite and z NaN, as in
    NumPy."""
    rng = np.random.default_rng(5)
    _, perms, effects = _inputs(3, n_voxels=300)
    terms = _study_terms(SIZES, perms)
    k, n_perm, n_voxels = len(SIZES), 4, effects.shape[2]
    noise_term = rng.normal(0.0, 0.3, (k, n_perm, n_voxels))
    noise_term[1, 2, 40:45] = 50.0  # the guard binds
    z = np.empty((n_perm, n_voxels))
    _psi_jit.pooled_z(noise_term, terms.b, effects, 0, terms.j_factor, terms.base, terms.square,
                      terms.df, terms.sampling, terms.constant, z)
    with np.errstate(invalid="ignore"):
        expected = _literal_z(noise_term, terms.b, effects, terms)
    assert np.isnan(expected[2, 40:45]).all()
    np.testing.assert_array_equal(np.isnan(z), np.isnan(expected))
    np.testing.assert_allclose(z, expected, rtol=RTOL, atol=ATOL)
    # a chunk that starts inside the voxels
    part = np.empty((n_perm, 100))
    _psi_jit.pooled_z(np.ascontiguousarray(noise_term[:, :, 150:250]), terms.b, effects, 150,
                      terms.j_factor, terms.base, terms.square, terms.df, terms.sampling,
                      terms.constant, part)
    np.testing.assert_allclose(part, expected[:, 150:250], rtol=RTOL, atol=ATOL)


def _three_studies(seed):
    """A one-sample and two two-sample studies, two imputations over the grey-matter mask."""
    n_voxels = load_mask("gray_matter").n_voxels
    rng = np.random.default_rng(seed)
    effects = (rng.normal(0.0, 0.5, (1, 3, n_voxels)) + rng.normal(0.0, 0.2, (2, 3, n_voxels)))
    return [(6, 0), (5, 4), (4, 4)], ["one", "two", "three"], effects.astype(np.float32)


def test_permuted_z_equals_the_old_path_on_the_mask():
    sizes, studies, effects = _three_studies(3)
    fused = permuted_z(effects, sizes, studies, 7, "kernel", 3, 5, "gray_matter")
    reference = permuted_z_reference(effects, sizes, studies, 7, "kernel", 3, 5, "gray_matter")
    np.testing.assert_allclose(fused, reference, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("sizes", [(7, 0), (6, 5)])
def test_restricted_noise_is_bit_identical_to_standardize(sizes):
    n1, n2 = sizes
    mask = load_mask("gray_matter")
    images = subject_images(n1 + n2, 11)
    groups = group_labels(n1, n2) if n2 else None
    expected = standardize(restrict(images, mask), groups).astype(np.float32)
    got = restricted_noise(images, mask, groups)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.int32), expected.view(np.int32))
    with pytest.raises(ValueError, match="standardising needs 2"):
        restricted_noise(images, mask, np.r_[np.zeros(n1 + n2 - 1), 1])


def test_study_noise_is_built_once_per_process():
    null_psi._NOISE_CACHE.clear()
    first = _study_noise(5, 4, "cached", 2, "gray_matter")
    again = _study_noise(5, 4, "cached", 2, "gray_matter")
    assert again is first and not first.flags.writeable
    np.testing.assert_array_equal(first, null_psi._build_noise(5, 4, "cached", 2, "gray_matter"))


def test_stack_chunks_start_at_multiples_of_the_kernel_chunk():
    n_voxels = load_mask("gray_matter").n_voxels
    maps = (16384,) * (n_voxels // 16384) + (n_voxels % 16384,)
    assert stack_chunks(maps, 50, 12) == maps  # 39 MB a chunk: kept
    assert stack_chunks(maps, 50, 24)[:2] == (8192, 8192)  # 79 MB: halved (nested)
    assert stack_chunks(maps, 200, 200)[0] == CHUNK_VOXELS  # never narrower
    odd = (10000,) * 17 + (n_voxels - 170000,)
    assert stack_chunks(odd, 50, 12)[:2] == (24576, 24576)  # the widest aligned within 64 MiB
    assert stack_chunks(odd, 2, 3) == (n_voxels,)
    assert stack_chunks((n_voxels,), 50, 12)[0] == 24576
    for chunks in (stack_chunks(maps, 50, 24), stack_chunks(odd, 50, 12), stack_chunks(maps, 9, 9, 10**6)):
        assert sum(chunks) == n_voxels and all(c % CHUNK_VOXELS == 0 for c in chunks[:-1])
        assert len(set(chunks[:-1])) <= 1 and chunks[-1] <= chunks[0]


@pytest.mark.parametrize("width", [4096, 16384, 40960])
def test_the_null_by_voxel_chunks_is_bit_identical_to_the_whole_stack(width):
    """Each chunk task reads its (M, k, chunk) slice only; joined, the z maps and maxima are
    those of one task over the whole stack, bit for bit."""
    sizes, studies, effects = _three_studies(5)
    n_voxels = effects.shape[2]
    whole = permuted_z(effects, sizes, studies, 7, "chunks", 2, 5, "gray_matter")
    parts = [psi_z_chunk(np.ascontiguousarray(effects[:, :, begin:begin + width]), sizes, studies, 7,
                         "chunks", 2, 5, "gray_matter", begin)
             for begin in range(0, n_voxels, width)]
    assert all(part.shape == (3, min(width, n_voxels - begin))
               for part, begin in zip(parts, range(0, n_voxels, width), strict=True))
    joined = np.concatenate(parts, axis=1)
    np.testing.assert_array_equal(joined.view(np.int64), whole.view(np.int64))
    np.testing.assert_array_equal(chunked_extremes(parts, "gray_matter"),
                                  psi_block(effects, sizes, studies, 7, "chunks", 2, 5, "gray_matter"))
