"""The permuted group analysis of SDM-PSI, by algebra, for all imputations at once.

In SDM-PSI each study's subject images are imputed (Albajes-Eizagirre et al. 2019), and
the study's group analysis (a one-sample or two-sample t test, turned into Hedges g) is
repeated on permuted subjects: sign flips of a one-sample study, relabellings of patients
and controls of a two-sample study. This module computes the permuted Hedges g of every
permutation and every imputation without forming the ``(P, M, n, V)`` subject images
(docs/methods.md, section 14).

Model. ``E`` (n, V) is the study's standardised noise (:func:`daskmeta.stats.subject_images.standardize`:
per voxel, and within each group of a two-sample study, ``sum E = 0`` and
``sum E^2 = n_g - 1``); ``d = g / J`` the imputed standardised mean difference of an
imputation (``g`` its Hedges g, ``J`` Hedges' factor at the study's df). The subject images
are ``Y_i = E_i + d`` (one-sample), or ``E_i + d`` for patients and ``E_i`` for controls
(two-sample; patients are rows ``0 .. n1 - 1``). Hedges g of the images is
``J mean / sd`` (one-sample: ``t = mean / (sd / sqrt n)``, ``g = J t / sqrt n``) or
``J diff / s_pooled`` (two-sample: ``g = J t sqrt(1/n1 + 1/n2)``); docs/methods.md,
section 2.

**One-sample, sign flips** ``sigma`` (P, n) in ``{-1, +1}``:

- ``mean' = sum_i sigma_i (E_i + d) / n = A + d b`` with ``A = sigma E / n`` (one GEMM,
  (P, V)) and ``b = mean(sigma)`` (P,).
- ``SS = sum_i (sigma_i Y_i)^2 = sum_i Y_i^2`` (``sigma_i^2 = 1``)
  ``= sum E^2 + 2 d sum E + n d^2 = (n - 1) + n d^2``, the same for every flip.
- ``sd'^2 = (SS - n mean'^2) / (n - 1)``, ``g' = J mean' / sd'``.
- Identity flips: ``A = 0``, ``b = 1``, ``mean' = d``, ``sd' = 1``, ``g' = J d = g``.

**Two-sample, relabelling** ``L`` (P, n) in ``{0, 1}`` with ``n1`` ones (new patients
``P'``; new controls ``C'``), original patients ``P``, ``N = n1 + n2``:

- ``diff = mean_{P'} Y - mean_{C'} Y = A + d B`` with
  ``A = mean_{P'} E - mean_{C'} E = (1/n1 + 1/n2) L E`` (one GEMM: ``sum_{C'} E =
  sum_all E - sum_{P'} E`` and ``sum_all E = 0``) and
  ``B = |P' n P| / n1 - |C' n P| / n2`` with ``|C' n P| = n1 - |P' n P|``.
- Total sum of squares about the grand mean, the same for every relabelling (it does not
  depend on the labels): with ``sum_P E = sum_C E = 0``, ``sum_P E^2 = n1 - 1``,
  ``sum_C E^2 = n2 - 1``, ``sum Y = n1 d``, ``sum Y^2 = (n1 - 1) + 2 d sum_P E + n1 d^2
  + (n2 - 1) = N - 2 + n1 d^2``, so ``SS_T = sum Y^2 - (sum Y)^2 / N = N - 2 + n1 d^2
  - n1^2 d^2 / N = (N - 2) + n1 n2 d^2 / N``.
- Between-groups sum of squares of groups of sizes ``n1, n2`` with means ``m1, m2`` and
  grand mean ``(n1 m1 + n2 m2) / N``: ``n1 (m1 - m)^2 + n2 (m2 - m)^2
  = n1 (n2 diff / N)^2 + n2 (n1 diff / N)^2 = n1 n2 diff^2 / N``.
- ``SS_W = SS_T - n1 n2 diff^2 / N``, ``s' = sqrt(SS_W / (N - 2))``, ``g' = J diff / s'``.
- Identity labels: ``A = 0``, ``B = 1``, ``diff = d``, ``SS_W = N - 2``, ``s' = 1``,
  ``g' = g``.

The variance of each permuted g is ``a + c g'^2`` (docs/methods.md, section 2). Memory is
``P M V`` float64 per output: callers pass a chunk of voxels.

References
----------
Albajes-Eizagirre A, Solanes A, Vieta E, Radua J (2019). Voxel-based meta-analysis via
permutation of subject images (PSI): theory and implementation for SDM. NeuroImage
186:174-184, doi:10.1016/j.neuroimage.2018.10.077.
Hedges LV (1981). Distribution theory for Glass's estimator of effect size and related
estimators. J Educ Stat 6:107-128.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.errors import plain
from daskmeta.stats.effect_size import hedges_j, sampling_term, variance_constant

__all__ = [
    "PermutedG",
    "one_sample_g",
    "random_flips",
    "random_relabels",
    "two_sample_g",
]

#: Tolerance of the check that the noise is standardised (relative to ``n``).
STANDARDISED_TOLERANCE = 1e-8


class PermutedG(NamedTuple):
    """Permuted Hedges g and its variance, float64 arrays of shape (P, M, V).

    Attributes
    ----------
    g : ndarray
        Hedges g of each permutation, imputation and voxel.
    variance : ndarray
        ``a + c g^2`` with the study's ``a = 1/n`` (or ``1/n1 + 1/n2``) and ``c``.
    """

    g: NDArray[np.float64]
    variance: NDArray[np.float64]


def _generator(seed_sequence: np.random.SeedSequence | int) -> np.random.Generator:
    if not isinstance(seed_sequence, np.random.SeedSequence):
        seed_sequence = np.random.SeedSequence(seed_sequence)
    return np.random.Generator(np.random.PCG64(seed_sequence))


def random_flips(
    seed_sequence: np.random.SeedSequence | int, n_permutations: int, n: int, identity_first: bool = True
) -> NDArray[np.int8]:
    """Random sign flips of a one-sample study's subjects, shape (P, n), values +-1.

    Parameters
    ----------
    seed_sequence : numpy.random.SeedSequence or int
        Seeds the PCG64 stream; the same seed gives the same flips. Use one block of flips
        for every imputation of a study.
    n_permutations : int
        ``P``.
    n : int
        Number of subjects.
    identity_first : bool, default True
        Permutation 0 is the identity (all +1) by convention, so that row 0 of the permuted
        analysis is the unpermuted one (chosen here: the observed statistic is one member of
        its own permutation distribution).

    Returns
    -------
    ndarray of int8, shape (n_permutations, n)
    """
    if n_permutations < 1 or n < 1:
        raise ValueError(f"need P >= 1 and n >= 1; {plain(n_permutations)!r}, {plain(n)!r} given")
    flips = np.where(_generator(seed_sequence).random((n_permutations, n)) < 0.5, -1, 1).astype(np.int8)
    if identity_first:
        flips[0] = 1
    return flips


def random_relabels(
    seed_sequence: np.random.SeedSequence | int,
    n_permutations: int,
    n1: int,
    n2: int,
    identity_first: bool = True,
) -> NDArray[np.int8]:
    """Random relabellings of a two-sample study's subjects, shape (P, n1 + n2), values 0/1.

    Parameters
    ----------
    seed_sequence : numpy.random.SeedSequence or int
        Seeds the PCG64 stream; the same seed gives the same labels. Use one block for every
        imputation of a study.
    n_permutations : int
        ``P``.
    n1, n2 : int
        Patients and controls. Each row has exactly ``n1`` ones (the subjects labelled
        patients), uniformly at random among the ``C(n1 + n2, n1)`` labellings.
    identity_first : bool, default True
        Permutation 0 is the identity (``n1`` ones then ``n2`` zeros: the original patients
        are the first ``n1`` rows of the images) by convention.

    Returns
    -------
    ndarray of int8, shape (n_permutations, n1 + n2)
    """
    if n_permutations < 1 or n1 < 1 or n2 < 1:
        raise ValueError(f"need P, n1, n2 >= 1; {plain(n_permutations)!r}, {plain(n1)!r}, "
                         f"{plain(n2)!r} given")
    base = np.concatenate([np.ones(n1, dtype=np.int8), np.zeros(n2, dtype=np.int8)])
    labels = _generator(seed_sequence).permuted(np.tile(base, (n_permutations, 1)), axis=1)
    if identity_first:
        labels[0] = base
    return labels


def _check_inputs(
    noise: ArrayLike, g: ArrayLike, perms: ArrayLike, groups: list[slice]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """float64 noise (n, V), effects (M, V) and permutations (P, n), checked."""
    noise = np.asarray(noise, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    perms = np.asarray(perms, dtype=np.float64)
    if noise.ndim != 2:
        raise ValueError(f"noise must be (n, V); shape {noise.shape} was provided")
    if g.ndim == 1:
        g = g[None, :]
    if g.ndim != 2 or g.shape[1] != noise.shape[1]:
        raise ValueError(f"g must be (M, V) with V = {noise.shape[1]}; shape {g.shape} was provided")
    if perms.ndim != 2 or perms.shape[1] != noise.shape[0]:
        raise ValueError(f"permutations must be (P, n) with n = {noise.shape[0]}; shape {perms.shape} "
                         "was provided")
    for rows in groups:
        block = noise[rows]
        size = block.shape[0]
        mean_ok = np.abs(block.sum(0)) <= STANDARDISED_TOLERANCE * size
        ss_ok = np.abs(np.einsum("sv,sv->v", block, block) - (size - 1)) <= STANDARDISED_TOLERANCE * size
        if not (mean_ok.all() and ss_ok.all()):
            raise ValueError("the noise is not standardised (sum 0 and sum of squares n - 1 per voxel, "
                             "within each group); use daskmeta.stats.subject_images.standardize")
    return noise, g, perms


def one_sample_g(
    noise: ArrayLike, flips: ArrayLike, g: ArrayLike, check: bool = True
) -> PermutedG:
    """Hedges g of a one-sample study under sign flips, for every imputation at once.

    Parameters
    ----------
    noise : array_like, shape (n, V)
        Standardised noise ``E`` (per voxel ``sum E = 0``, ``sum E^2 = n - 1``).
    flips : array_like, shape (P, n)
        Sign flips ``sigma`` in ``{-1, +1}`` (:func:`random_flips`).
    g : array_like, shape (M, V) or (V,)
        Imputed Hedges g of each imputation; the images are ``E_i + g / J``.
    check : bool, default True
        Check that ``noise`` is standardised (costs ``1 / P`` of the GEMM).

    Returns
    -------
    PermutedG
        ``g`` and ``variance`` of shape (P, M, V); with identity flips, row 0 equals the
        input ``g`` to rounding (about 1e-15).

    Notes
    -----
    ``mean' = A + d b`` (``A = sigma E / n``, ``b = mean sigma``, ``d = g / J``),
    ``SS = (n - 1) + n d^2``, ``sd' = sqrt((SS - n mean'^2) / (n - 1))``,
    ``g' = J mean' / sd'`` (derivation in the module notes; docs/methods.md, section 14).
    One ``(P, n) x (n, V)`` GEMM; never forms ``(P, M, n, V)``.
    """
    noise = np.asarray(noise)
    n = noise.shape[0] if noise.ndim == 2 else 0
    if n < 3:  # Hedges' J is 0 at df = 1
        raise ValueError(f"a one-sample study needs at least 3 subjects; {n} were provided")
    noise, g, sigma = _check_inputs(noise, g, flips, [slice(None)] if check else [])
    if not np.all(np.abs(sigma) == 1):
        raise ValueError("sign flips must be -1 or +1")
    j = float(hedges_j(n - 1))
    d = g / j  # (M, V)
    a_term = (sigma @ noise) / n  # (P, V)
    b = sigma.mean(axis=1)  # (P,)
    mean = a_term[:, None, :] + d[None, :, :] * b[:, None, None]
    ss = (n - 1) + n * d * d  # (M, V)
    sd2 = np.maximum(ss[None] - n * mean * mean, 0.0) / (n - 1)
    g_perm = j * mean / np.sqrt(sd2)
    return PermutedG(g_perm, _variance(g_perm, n, None))


def two_sample_g(
    noise: ArrayLike, labels: ArrayLike, g: ArrayLike, n1: int, check: bool = True
) -> PermutedG:
    """Hedges g of a two-sample study under relabelling, for every imputation at once.

    Parameters
    ----------
    noise : array_like, shape (N, V)
        Standardised noise ``E``: rows ``0 .. n1 - 1`` are the patients, the rest the
        controls, each group with ``sum E = 0`` and ``sum E^2 = n_g - 1`` per voxel.
    labels : array_like, shape (P, N)
        1 for the subjects labelled patients, 0 for controls, ``n1`` ones per row
        (:func:`random_relabels`).
    g : array_like, shape (M, V) or (V,)
        Imputed Hedges g of each imputation; patients' images are ``E_i + g / J``,
        controls' ``E_i``.
    n1 : int
        Number of patients.
    check : bool, default True
        Check that ``noise`` is standardised within each group.

    Returns
    -------
    PermutedG
        ``g`` and ``variance`` of shape (P, M, V); with identity labels, row 0 equals the
        input ``g`` to rounding.

    Notes
    -----
    ``diff = A + d B`` (``A = (1/n1 + 1/n2) L E``, ``B = |P' n P| / n1 - |C' n P| / n2``),
    ``SS_T = (N - 2) + n1 n2 d^2 / N``, ``SS_W = SS_T - n1 n2 diff^2 / N``,
    ``s' = sqrt(SS_W / (N - 2))``, ``g' = J diff / s'`` (derivation in the module notes;
    docs/methods.md, section 14). One ``(P, N) x (N, V)`` GEMM.
    """
    noise = np.asarray(noise)
    total = noise.shape[0] if noise.ndim == 2 else 0
    n1 = int(n1)
    n2 = total - n1
    if n1 < 2 or n2 < 2:
        raise ValueError(f"a two-sample study needs at least 2 subjects per group; n1 = {n1}, n2 = {n2}")
    groups = [slice(0, n1), slice(n1, None)] if check else []
    noise, g, lab = _check_inputs(noise, g, labels, groups)
    if not (np.isin(lab, (0.0, 1.0)).all() and (lab.sum(axis=1) == n1).all()):
        raise ValueError(f"labels must be 0/1 with exactly n1 = {n1} ones per permutation")
    j = float(hedges_j(total - 2))
    d = g / j
    a_term = (1.0 / n1 + 1.0 / n2) * (lab @ noise)  # (P, V)
    kept = lab[:, :n1].sum(axis=1)  # |P' n P|
    b = kept / n1 - (n1 - kept) / n2  # (P,)
    diff = a_term[:, None, :] + d[None, :, :] * b[:, None, None]
    scale = n1 * n2 / total
    ss_total = (total - 2) + scale * d * d  # (M, V)
    within = np.maximum(ss_total[None] - scale * diff * diff, 0.0)
    g_perm = j * diff / np.sqrt(within / (total - 2))
    return PermutedG(g_perm, _variance(g_perm, n1, n2))


def _variance(g: NDArray[np.float64], n1: int, n2: int | None) -> NDArray[np.float64]:
    """``a + c g^2`` (docs/methods.md, section 2)."""
    df = n1 - 1 if n2 is None else n1 + n2 - 2
    a = float(sampling_term(n1) if n2 is None else sampling_term(n1, n2))
    return a + float(variance_constant(df)) * g * g
