"""The permutation null of SDM-PSI: blocks of subject-image permutations on Dask.

docs/methods.md, section 14.3. A task handles a block of permutations against the whole
``(imputation, study, voxel)`` stack of imputed effects (one graph task, fetched once per
worker): it builds each study's preliminary subject images from the study's seed (inside the
task; they never travel through the scheduler), draws the block's sign flips (one-sample) or
relabellings (two-sample), the same for every imputation, and computes for each permutation
the permuted Hedges g of every study and imputation by algebra
(:mod:`daskmeta.stats.psi_group`), DerSimonian-Laird per imputation, Rubin's rules across
imputations, then the maxima of z and of TFCE, by sign. Permutation ``b`` of study ``s``
draws from ``SeedSequence(seed, spawn_key=(crc32(name), b, crc32(s)))``: the same numbers
whatever the block size or the workers.
"""

from __future__ import annotations

import functools
import zlib
from typing import NamedTuple

import numpy as np

from daskmeta.model.grid import load_mask
from daskmeta.stats.psi_group import one_sample_g, random_flips, random_relabels, two_sample_g
from daskmeta.stats.random_effects import dersimonian_laird
from daskmeta.stats.rubin import pool_chi_square, pool_estimates, pool_square_root
from daskmeta.stats.subject_images import group_labels, restrict, standardize, subject_images
from daskmeta.stats.tfce import Neighbours, neighbours, tfce_maxima

#: Elements of the largest (permutation, imputation, study, voxel) slab held at once.
SLAB_ELEMENTS = 20_000_000
#: Stream key of the subject images.
SUBJECTS_KEY = zlib.crc32(b"subjects")


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
    """A study's standardised subject noise over the mask, float32 (subject, voxel)."""
    n = n1 + n2
    images = subject_images(n, subjects_seed(seed, study))
    restricted = restrict(images, load_mask(mask_name))
    groups = group_labels(n1, n2 or None) if n2 else None
    return standardize(restricted, groups).astype(np.float32)


def _permutations(n1: int, n2: int, seed: int, name: str, study: str, start: int, stop: int) -> np.ndarray:
    """The block's flips (one-sample, +-1) or labels (two-sample, 0/1), shape (P, n)."""
    rows = []
    for b in range(start, stop):
        sequence = permutation_seed(seed, name, b, study)
        rows.append(random_relabels(sequence, 1, n1, n2, identity_first=False)[0] if n2
                    else random_flips(sequence, 1, n1, identity_first=False)[0])
    return np.stack(rows)


def permuted_z(effects: np.ndarray, sizes: list[tuple[int, int]], studies: list[str], seed: int,
               name: str, start: int, stop: int, mask_name: str) -> np.ndarray:
    """The pooled z maps of permutations ``start..stop-1``, shape (P, V).

    ``effects`` is the imputed stack (M, k, V); ``sizes`` each study's ``(n1, n2)`` (``n2 =
    0`` one-sample). Voxels are processed in slabs of at most :data:`SLAB_ELEMENTS`
    (permutation x imputation x study x voxel) elements.
    """
    n_imputations, k, n_voxels = effects.shape
    n_permutations = stop - start
    pairs = list(zip(sizes, studies, strict=True))
    noise = [_study_noise(n1, n2, study, seed, mask_name) for (n1, n2), study in pairs]
    perms = [_permutations(n1, n2, seed, name, study, start, stop) for (n1, n2), study in pairs]
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


def psi_block(effects: np.ndarray, sizes: list[tuple[int, int]], studies: list[str], seed: int,
              name: str, start: int, stop: int, mask_name: str) -> np.ndarray:
    """Null maxima of permutations ``start..stop-1``: rows ``max z, min z, max TFCE, min TFCE``.

    ``min TFCE`` is the most negative TFCE (``-`` the maximum of the negative part).
    """
    z = permuted_z(effects, sizes, studies, seed, name, start, stop, mask_name)
    max_tfce, max_negative = tfce_maxima(z, _neighbours(mask_name))
    return np.stack([z.max(axis=1), z.min(axis=1), max_tfce, -max_negative])
