"""The permutation null of SDM-PSI: blocks of subject-image permutations on Dask.

docs/methods.md, section 14.3. The null of a block of permutations is one Dask task per
voxel chunk of the ``(imputation, study, voxel)`` stack of imputed effects
(:func:`psi_z_chunk`: it reads that chunk only, shape ``(M, k, chunk)``) and one task that
joins the block's z maps and takes their maxima (:func:`chunked_extremes`; TFCE needs the
whole map of each permutation). A chunk task builds each study's preliminary subject
images from the study's seed (inside the task; they never travel through the scheduler),
draws the block's sign flips (one-sample) or relabellings (two-sample), the same for every
imputation and chunk, and computes for each permutation the permuted Hedges g of every
study and imputation by algebra (:mod:`daskmeta.stats.psi_group`), DerSimonian-Laird per
imputation, Rubin's rules across imputations (fused in one compiled kernel,
:mod:`daskmeta.stats._psi_jit`; the NumPy path :func:`null_z_reference` is the tests'
reference). Every computation is per voxel, and the chunks start at multiples of
:data:`CHUNK_VOXELS` (:func:`stack_chunks`), so the z maps are bit for bit those of the
whole stack in one task (:func:`psi_block`). A worker process builds each study's
standardised noise once and keeps it for the later blocks of the analysis. Permutation ``b``
of study ``s`` draws from ``SeedSequence(seed, spawn_key=(crc32(name), b, crc32(s)))``: the
same numbers whatever the block size, the chunks or the workers.
"""

from __future__ import annotations

import functools
import threading
import zlib
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from daskmeta.model.grid import load_mask
from daskmeta.stats.effect_size import hedges_j, sampling_term, variance_constant
from daskmeta.stats.psi_group import one_sample_g, random_flips, random_relabels, two_sample_g
from daskmeta.stats.random_effects import dersimonian_laird
from daskmeta.stats.rubin import pool_chi_square, pool_estimates, pool_square_root
from daskmeta.stats.subject_images import group_labels, restricted_noise, subject_images
from daskmeta.stats.tfce import Neighbours, neighbours, tfce_maxima

#: Elements of the largest (permutation, imputation, study, voxel) slab held at once
#: (:func:`permuted_z_reference`).
SLAB_ELEMENTS = 20_000_000
#: Voxels per chunk of :func:`permuted_z`: the chunk's noise terms (k, P, chunk) float64.
#: The voxel chunks of the imputed stack start at multiples of it (:func:`stack_chunks`).
CHUNK_VOXELS = 4096
#: Most bytes of one voxel chunk of the imputed stack, ``M x k x chunk`` float32, where the
#: chunk can be cut down to fit (at least :data:`CHUNK_VOXELS` voxels): what one null task
#: reads (:func:`stack_chunks`).
STACK_CHUNK_BYTES = 64 * 1024**2
#: Most bytes of standardised subject noise a process keeps between blocks (least recently
#: used studies are dropped first); the 12 ReHo studies of the CLBP example take 545 MB.
NOISE_CACHE_BYTES = 2 * 1024**3
_NOISE_CACHE: OrderedDict[tuple[int, int, str, int, str], np.ndarray] = OrderedDict()
_NOISE_LOCK = threading.Lock()
#: Stream key of the subject images.
SUBJECTS_KEY = zlib.crc32(b"subjects")


class StudyTerms(NamedTuple):
    """Per-study constants of the permuted g (docs/methods.md, section 14.2), float64.

    ``g' = J m / sqrt(max(S + s d^2 - s m^2, 0) / df)`` with ``m = A + d b`` and
    ``d = g / J``; the variance is ``a + c g'^2``.
    """

    b: np.ndarray  # (k, P)
    j_factor: np.ndarray  # (k,) Hedges' J
    base: np.ndarray  # (k,) S: n - 1 or N - 2
    square: np.ndarray  # (k,) s: n or n1 n2 / N
    df: np.ndarray  # (k,) n - 1 or N - 2
    sampling: np.ndarray  # (k,) a
    constant: np.ndarray  # (k,) c


class PooledMaps(NamedTuple):
    """Rubin-pooled maps over imputations (imputation and study axes removed)."""

    effect: np.ndarray
    variance: np.ndarray
    z: np.ndarray
    tau2: np.ndarray
    i2: np.ndarray
    q: np.ndarray


def study_key(study: str) -> int:
    """A stable 32-bit key of a study name (part of its random streams)."""
    return zlib.crc32(str(study).encode("utf-8"))


def subjects_seed(seed: int, study: str) -> np.random.SeedSequence:
    """The seed of study ``study``'s preliminary subject images."""
    return np.random.SeedSequence(seed, spawn_key=(SUBJECTS_KEY, study_key(study)))


def permutation_seed(seed: int, name: str, permutation: int, study: str) -> np.random.SeedSequence:
    """The seed of permutation ``permutation`` of study ``study`` in analysis ``name``."""
    return np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode("utf-8")), permutation,
                                                   study_key(study)))


def pool_imputations(effect: np.ndarray, variance: np.ndarray, study_axis: int = -2,
                     imputation_axis: int = -3) -> PooledMaps:
    """DerSimonian-Laird per imputation, then Rubin's rules across imputations.

    ``effect, variance`` have an imputation and a study axis (e.g. ``(M, k, V)`` or
    ``(P, M, k, V)``); both are reduced. Q is pooled by the D2 rule and reported as the
    chi-square with ``k - 1`` degrees of freedom of the same p; tau2 and I2 as the square of
    the mean of their square roots (docs/methods.md, section 14.2).
    """
    study_axis, imputation_axis = (axis % effect.ndim for axis in (study_axis, imputation_axis))
    k = effect.shape[study_axis]
    pooled = dersimonian_laird(effect, variance, axis=study_axis)
    axis = imputation_axis if imputation_axis < study_axis else imputation_axis - 1
    rubin = pool_estimates(pooled.effect, pooled.variance, axis=axis)
    q = pool_chi_square(pooled.q, k - 1, axis=axis).q
    return PooledMaps(rubin.effect, rubin.variance, rubin.z, pool_square_root(pooled.tau2, axis=axis),
                      pool_square_root(pooled.i2, axis=axis), q)


@functools.cache
def _neighbours(mask_name: str) -> Neighbours:
    return neighbours(load_mask(mask_name))


def _study_noise(n1: int, n2: int, study: str, seed: int, mask_name: str) -> np.ndarray:
    """A study's standardised subject noise over the mask, float32 (subject, voxel).

    Cached per process (:func:`_cached_noise`): every block of permutations of an analysis
    on a worker reuses it (docs/methods.md, section 14.2: the images are generated from the
    study's seed, never sent through the scheduler).
    """
    key = (int(n1), int(n2), str(study), int(seed), str(mask_name))
    with _NOISE_LOCK:
        cached = _NOISE_CACHE.get(key)
        if cached is not None:
            _NOISE_CACHE.move_to_end(key)
            return cached
    noise = _build_noise(*key)
    with _NOISE_LOCK:
        _NOISE_CACHE[key] = noise
        while sum(x.nbytes for x in _NOISE_CACHE.values()) > NOISE_CACHE_BYTES and len(_NOISE_CACHE) > 1:
            _NOISE_CACHE.popitem(last=False)
    return noise


def _build_noise(n1: int, n2: int, study: str, seed: int, mask_name: str) -> np.ndarray:
    """:func:`_study_noise` without the cache."""
    images = subject_images(n1 + n2, subjects_seed(seed, study))
    groups = group_labels(n1, n2 or None) if n2 else None
    noise = restricted_noise(images, load_mask(mask_name), groups)
    noise.flags.writeable = False  # shared by the blocks of a process
    return noise


def _permutations(n1: int, n2: int, seed: int, name: str, study: str, start: int, stop: int) -> np.ndarray:
    """The block's flips (one-sample, +-1) or labels (two-sample, 0/1), shape (P, n)."""
    rows = []
    for b in range(start, stop):
        sequence = permutation_seed(seed, name, b, study)
        rows.append(random_relabels(sequence, 1, n1, n2, identity_first=False)[0] if n2
                    else random_flips(sequence, 1, n1, identity_first=False)[0])
    return np.stack(rows)


def _study_terms(sizes: list[tuple[int, int]], perms: list[np.ndarray]) -> StudyTerms:
    """The constants of :class:`StudyTerms`, as :mod:`daskmeta.stats.psi_group` computes them."""
    rows: list[tuple[float, ...]] = []
    b = []
    for (n1, n2), perm in zip(sizes, perms, strict=True):
        if n2:
            total = n1 + n2
            kept = perm[:, :n1].sum(axis=1)
            b.append(kept / n1 - (n1 - kept) / n2)
            rows.append((float(hedges_j(total - 2)), float(total - 2), n1 * n2 / total, float(total - 2),
                         float(sampling_term(n1, n2)), float(variance_constant(total - 2))))
        else:
            b.append(perm.mean(axis=1))
            rows.append((float(hedges_j(n1 - 1)), float(n1 - 1), float(n1), float(n1 - 1),
                         float(sampling_term(n1)), float(variance_constant(n1 - 1))))
    columns = (np.array(column, dtype=np.float64) for column in zip(*rows, strict=True))
    return StudyTerms(np.array(b, dtype=np.float64).reshape(len(sizes), -1), *columns)


def block_inputs(sizes: list[tuple[int, int]], studies: list[str], seed: int, name: str, start: int,
                 stop: int, mask_name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each study's standardised noise (float32, (n, V)) and permutations ``start..stop-1``
    (float64, (P, n)): the inputs of :func:`null_z` (docs/methods.md, sections 14.2-14.3)."""
    pairs = list(zip(sizes, studies, strict=True))
    noise = [_study_noise(n1, n2, study, seed, mask_name) for (n1, n2), study in pairs]
    perms = [_permutations(n1, n2, seed, name, study, start, stop).astype(np.float64)
             for (n1, n2), study in pairs]
    return noise, perms


def null_z(effects: np.ndarray, sizes: list[tuple[int, int]], noise: list[np.ndarray],
           perms: list[np.ndarray]) -> np.ndarray:
    """Rubin-pooled z of a block of permutations, fused (docs/methods.md, section 14.2).

    Parameters
    ----------
    effects : ndarray, shape (M, k, V)
        The imputed Hedges g (float32 or float64).
    sizes : list of (int, int)
        Each study's ``(n1, n2)`` (``n2 = 0`` one-sample).
    noise : list of ndarray, shape (n, V)
        Each study's standardised subject noise (:func:`_study_noise`).
    perms : list of ndarray, shape (P, n)
        Each study's sign flips or labels (:func:`_permutations`), float64.

    Returns
    -------
    ndarray of float64, shape (P, V)

    Notes
    -----
    Per chunk of :data:`CHUNK_VOXELS` voxels, each study's permuted noise term ``A`` (P,
    chunk) is one BLAS matrix product of its permutations and its noise; the permuted g of
    every imputation and study, DerSimonian-Laird per imputation and Rubin's rules across
    imputations are then fused in :func:`daskmeta.stats._psi_jit.pooled_z`, which never forms
    a (P, M, k, V) array. The arithmetic is that of :func:`null_z_reference` in the same
    order, except that the kernel forms each g' and its weight with one division and one
    root (a few ulps apart) and the matrix products are separate BLAS calls: the two agree
    to about 1e-15 absolute (see :mod:`daskmeta.stats._psi_jit`). A block of 10
    permutations of the 12 ReHo studies of the CLBP example costs about 0.1 s per
    permutation at 10 imputations and 0.45 s at 50, one core (the NumPy path: 2.3 s and
    8.3 s).
    """
    from daskmeta.stats import _psi_jit

    n_imputations, k, n_voxels = effects.shape
    n_permutations = perms[0].shape[0]
    terms = _study_terms(sizes, perms)
    if effects.dtype not in (np.float32, np.float64):
        effects = effects.astype(np.float64)
    effects = np.ascontiguousarray(effects)
    width = max(_psi_jit.TILE, CHUNK_VOXELS // _psi_jit.TILE * _psi_jit.TILE)
    z = np.empty((n_permutations, n_voxels))
    noise_term = np.empty((k, n_permutations, min(width, n_voxels)))
    for begin in range(0, n_voxels, width):
        stop = min(begin + width, n_voxels)
        part = noise_term[:, :, :stop - begin]
        for s, (n1, n2) in enumerate(sizes):
            np.matmul(perms[s], noise[s][:, begin:stop].astype(np.float64), out=part[s])
            if n2:  # as psi_group: (1/n1 + 1/n2) (L E), (sigma E) / n
                np.multiply(1.0 / n1 + 1.0 / n2, part[s], out=part[s])
            else:
                np.divide(part[s], n1, out=part[s])
        _psi_jit.pooled_z(part, terms.b, effects, begin, terms.j_factor, terms.base, terms.square,
                          terms.df, terms.sampling, terms.constant, z[:, begin:stop])
    return z


def null_z_reference(effects: np.ndarray, sizes: list[tuple[int, int]], noise: list[np.ndarray],
                     perms: list[np.ndarray]) -> np.ndarray:
    """:func:`null_z` in NumPy: the reference the fused kernel is tested against.

    The permuted g of every (permutation, imputation, study, voxel) of a slab of at most
    :data:`SLAB_ELEMENTS` elements by :func:`~daskmeta.stats.psi_group.one_sample_g` /
    :func:`~daskmeta.stats.psi_group.two_sample_g`, then :func:`pool_imputations`
    (docs/methods.md, sections 14.2 and 14.3). Same arguments and result as :func:`null_z`,
    several times slower and with (P, M, k, slab) temporaries.
    """
    n_imputations, k, n_voxels = effects.shape
    n_permutations = perms[0].shape[0]
    width = max(64, SLAB_ELEMENTS // max(1, n_permutations * n_imputations * k))
    z = np.empty((n_permutations, n_voxels))
    for begin in range(0, n_voxels, width):
        part = slice(begin, min(begin + width, n_voxels))
        g = np.empty((n_permutations, n_imputations, k, part.stop - part.start))
        v = np.empty_like(g)
        for s, (n1, n2) in enumerate(sizes):
            observed = effects[:, s, part].astype(np.float64)
            e = noise[s][:, part].astype(np.float64)
            out = (two_sample_g(e, perms[s], observed, n1, check=False) if n2
                   else one_sample_g(e, perms[s], observed, check=False))
            g[:, :, s], v[:, :, s] = out.g, out.variance
        z[:, part] = pool_imputations(g, v, study_axis=2, imputation_axis=1).z
    return z


def permuted_z(effects: np.ndarray, sizes: list[tuple[int, int]], studies: list[str], seed: int,
               name: str, start: int, stop: int, mask_name: str) -> np.ndarray:
    """The pooled z maps of permutations ``start..stop-1``, shape (P, V).

    ``effects`` is the imputed stack (M, k, V); ``sizes`` each study's ``(n1, n2)`` (``n2 =
    0`` one-sample). The subject noise and permutations of :func:`block_inputs`, pooled by
    the fused kernel (:func:`null_z`; docs/methods.md, sections 14.2 and 14.3).
    """
    noise, perms = block_inputs(sizes, studies, seed, name, start, stop, mask_name)
    return null_z(effects, sizes, noise, perms)


def permuted_z_reference(effects: np.ndarray, sizes: list[tuple[int, int]], studies: list[str],
                         seed: int, name: str, start: int, stop: int, mask_name: str) -> np.ndarray:
    """:func:`permuted_z` by the NumPy reference :func:`null_z_reference` (for tests)."""
    noise, perms = block_inputs(sizes, studies, seed, name, start, stop, mask_name)
    return null_z_reference(effects, sizes, noise, perms)


def stack_chunks(voxel_chunks: tuple[int, ...], n_imputations: int, k: int,
                 budget: int | None = None) -> tuple[int, ...]:
    """Voxel chunks of the imputed stack ``(M, k, V)``: regular, multiples of :data:`CHUNK_VOXELS`.

    ``voxel_chunks`` (the study maps' chunks) are kept when they are regular, multiples of
    :data:`CHUNK_VOXELS` (the last excepted) and hold at most ``budget`` bytes of float32
    ``(M, k, chunk)``; a larger aligned chunk is cut into equal aligned parts (nested: no
    data crosses chunks); otherwise the chunks are the widest multiple of
    :data:`CHUNK_VOXELS` within ``budget`` (at least :data:`CHUNK_VOXELS`; default
    :data:`STACK_CHUNK_BYTES`). Starting every chunk at a multiple of :data:`CHUNK_VOXELS`
    keeps :func:`null_z`'s inner chunks, hence its arithmetic, those of the whole stack.
    """
    budget = STACK_CHUNK_BYTES if budget is None else budget
    n_voxels = int(sum(voxel_chunks))
    row = 4 * max(1, n_imputations) * max(1, k)
    widest = max(1, budget // (row * CHUNK_VOXELS)) * CHUNK_VOXELS
    first = int(voxel_chunks[0])
    if len(voxel_chunks) == 1:
        width = n_voxels if n_voxels * row <= budget else widest
    elif first % CHUNK_VOXELS == 0 and all(c == first for c in voxel_chunks[:-1]):
        parts = first // CHUNK_VOXELS
        width = CHUNK_VOXELS * max([d for d in range(1, parts + 1)
                                    if parts % d == 0 and d * CHUNK_VOXELS <= widest] or [1])
    else:
        width = widest
    full, rest = divmod(n_voxels, width)
    return (width,) * full + ((rest,) if rest else ())


def psi_z_chunk(effects: np.ndarray, sizes: list[tuple[int, int]], studies: list[str], seed: int,
                name: str, start: int, stop: int, mask_name: str, begin: int) -> np.ndarray:
    """:func:`permuted_z` on one voxel chunk of the stack: ``effects`` (M, k, chunk) holds the
    voxels ``begin..begin+chunk-1`` of the mask; returns (P, chunk).

    The noise is the process' cached whole-mask noise (:func:`_study_noise`), sliced (a
    view). With ``begin`` a multiple of :data:`CHUNK_VOXELS`, equal bit for bit to those
    columns of :func:`permuted_z` on the whole stack.
    """
    noise, perms = block_inputs(sizes, studies, seed, name, start, stop, mask_name)
    width = effects.shape[2]
    return null_z(effects, sizes, [part[:, begin:begin + width] for part in noise], perms)


def chunked_extremes(z_chunks: list[np.ndarray], mask_name: str) -> np.ndarray:
    """:func:`null_extremes` of a block's z maps given by voxel chunks ``(P, chunk)``, in order."""
    return null_extremes(np.concatenate(z_chunks, axis=1), mask_name)


def psi_block(effects: np.ndarray, sizes: list[tuple[int, int]], studies: list[str], seed: int,
              name: str, start: int, stop: int, mask_name: str) -> np.ndarray:
    """Null maxima of permutations ``start..stop-1``: rows ``max z, min z, max TFCE, min TFCE``.

    ``min TFCE`` is the most negative TFCE (``-`` the maximum of the negative part). The
    whole stack in one task: :func:`daskmeta.psi` runs :func:`psi_z_chunk` per voxel chunk
    and :func:`chunked_extremes` instead, with the same result (tests and benchmarks).
    """
    return null_extremes(permuted_z(effects, sizes, studies, seed, name, start, stop, mask_name),
                         mask_name)


def null_extremes(z: np.ndarray, mask_name: str) -> np.ndarray:
    """Rows ``max z, min z, max TFCE, min TFCE`` of permuted z maps ``(P, V)``.

    ``min TFCE`` is the most negative TFCE (``-`` the maximum of the negative part); the
    mask's neighbour lists are built once per process.
    """
    max_tfce, max_negative = tfce_maxima(z, _neighbours(mask_name))
    return np.stack([z.max(axis=1), z.min(axis=1), max_tfce, -max_negative])
