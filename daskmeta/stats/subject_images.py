"""Preliminary subject images of SDM-PSI: smooth, tissue-aware, unit-variance noise.

SDM-PSI imputes each study's subject images in two steps: *preliminary* images of pure
noise with the spatial correlation of real images, then the imputed effect added on top
(Albajes-Eizagirre et al. 2019). This module builds the preliminary images
(docs/methods.md, section 14):

1. **Generation** (:func:`subject_images`). Brain voxels are built one at a time in C order
   of the grid (lexicographic ``i, j, k``), all subjects per voxel, from the already-built
   face neighbours ``A = (i-1, j, k)``, ``B = (i, j-1, k)``, ``C = (i, j, k-1)`` (those in
   the brain) and fresh standard normal noise ``R``. The target correlation with a face
   neighbour is ``r = exp(-l^2 / (2 s^2))``, ``l`` the tissue-aware step length of the
   anisotropic kernel (docs/methods.md, section 3.3), ``2 mm (1 + beta TV)`` with ``TV`` the
   total-variation distance of the two voxels' (grey, white, CSF) probabilities and
   ``beta = 1``; ``s = FWHM / sqrt(8 ln 2)`` with a subject-image smoothness of FWHM 8 mm
   (``r = 0.841`` within homogeneous tissue). The recursion runs along one axis at a time,
   with per-voxel coefficients ``al, be, g`` and ``q(x) = sqrt(1 - x^2)``::

       a = g a_C + q(g) R          (along k)
       b = be b_B + q(be) a        (along j)
       y = al y_A + q(al) b        (along i)

   (a neighbour off the brain counts as 0). Each step adds two independent unit-variance
   terms with squared weights summing to 1, so every voxel has exactly zero mean and unit
   variance whatever the coefficients. ``al = r_A`` gives ``corr(y, y_A) = r_A``; the
   correlations along ``j`` and ``k`` follow a recursion over the voxels (the terms of each
   pass come from disjoint rows or slices of the grid, so cross terms vanish;
   :func:`daskmeta.stats._subject_jit.step_coefficients`), which is solved once for ``be``
   and ``g`` so that ``corr(y, y_B) = r_B`` and ``corr(y, y_C) = r_C`` exactly as well. In
   homogeneous tissue ``al = be = g = r`` and the field is the separable lattice process
   with correlation ``r^(|di| + |dj| + |dk|)`` at offset ``(di, dj, dk)``, equal to the
   Gaussian ``exp(-|d|^2 / 2 s^2)`` at every offset within the 2 x 2 x 2 cube (the Gaussian
   factorises across axes). Expanded, ``y`` is a weighted sum of the built values of the
   seven voxels of the cube behind it plus ``w_r R`` with
   ``w_r^2 = q(al)^2 q(be)^2 q(g)^2``; in homogeneous tissue these are the solution
   ``w = S^-1 r``, ``w_r^2 = 1 - r' S^-1 r`` of the normal equations over that cube.
2. **Standardisation** (:func:`standardize`): per voxel, mean 0 and standard deviation 1
   (``ddof = 1``) across subjects, within each group of a two-sample study.
3. **Restriction** (:func:`restrict`) from the template's brain to the analysis mask.

Why not one field built from its three face neighbours with normal-equation weights
(chosen here). With ``r_j`` the face targets and ``S`` the neighbours' mutual correlations
from the diagonal steps (``exp(-(2 sqrt 2)^2 / 2 s^2) = 0.707``), the weights are
``w_j = 0.841 / (1 + 2 x 0.707) = 0.348``; their sum ``1.045`` exceeds 1, so the recursion
``y = sum_j w_j y_j + w_r R`` is unstable (its transfer function ``1 / (1 - w (z1 + z2 +
z3))`` has a pole inside the unit polydisc): the variance grows geometrically along the
lattice diagonal (to a median of 36 and a maximum of 1e7 over the template's brain).
Adding the four diagonal neighbours of the cube makes the homogeneous case exact, but with
tissue-weighted step lengths most voxels' 8 x 8 correlation matrices are then not positive
definite and the recursion diverges as well. The axis-by-axis recursion keeps the face
neighbours, the tissue-aware targets and exact unit variance, and is stable by
construction (every coefficient lies in ``[0, COEFFICIENT_LIMIT]``). Where the targets of
neighbouring voxels differ sharply, the exact ``be`` or ``g`` falls outside that range and is
clipped (about 20 % of the ``j`` and ``k`` coefficients on the template, at tissue
boundaries); the correlation there is the nearest reachable one, lower than the target.
Measured on the template with 300 subjects, in grey matter: along ``i`` the empirical
correlations match the targets (z of the difference: mean 0.00, sd 1.01); along ``j``
(median z 0.01, 98 % within +-3) and ``k`` (median z -0.4, mean difference -0.027, 87 %
within +-3) they match within tissue and fall short at boundaries.

References
----------
Albajes-Eizagirre A, Solanes A, Vieta E, Radua J (2019). Voxel-based meta-analysis via
permutation of subject images (PSI): theory and implementation for SDM. NeuroImage
186:174-184, doi:10.1016/j.neuroimage.2018.10.077.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.errors import plain
from daskmeta.model.grid import VOXEL_SIZE_MM, templates

__all__ = [
    "COEFFICIENT_LIMIT",
    "SUBJECT_BETA",
    "SUBJECT_FWHM",
    "SubjectField",
    "field_model",
    "group_labels",
    "restrict",
    "restricted_noise",
    "standardize",
    "subject_images",
    "target_correlation",
    "template_field",
]

#: Smoothness (FWHM, mm) of the preliminary subject images (Albajes-Eizagirre et al. 2019).
SUBJECT_FWHM = 8.0
#: Weight of the tissue change in a step's length (docs/methods.md, section 3.3).
SUBJECT_BETA = 1.0
#: Largest coefficient of a pass (coefficients are clipped to ``[0, COEFFICIENT_LIMIT]``).
COEFFICIENT_LIMIT = 0.99
#: Offsets of the face neighbours A, B, C.
FACE_OFFSETS: NDArray[np.int64] = np.array([(-1, 0, 0), (0, -1, 0), (0, 0, -1)], dtype=np.int64)


class SubjectField(NamedTuple):
    """The generation weights of every brain voxel (from :func:`field_model`).

    Attributes
    ----------
    brain : ndarray of bool, shape (nx, ny, nz)
        The lattice of the images; image columns follow its voxels in C order.
    ijk : ndarray of int64, shape (n_voxels, 3)
        Grid indices of the voxels.
    neighbours : ndarray of int64, shape (n_voxels, 3)
        Column of the face neighbours ``A = (i-1, j, k)``, ``B = (i, j-1, k)``,
        ``C = (i, j, k-1)``; -1 where off the brain.
    target : ndarray of float64, shape (n_voxels, 3)
        Their target correlations ``exp(-l^2 / (2 s^2))`` (0 where off the brain).
    coefficients : ndarray of float64, shape (n_voxels, 3)
        ``al, be, g`` of the passes along ``i, j, k`` (0 where off the brain).
    clipped : int
        Coefficients clipped to ``[0, COEFFICIENT_LIMIT]`` (their voxel's correlation is
        then the nearest reachable one).
    """

    brain: NDArray[np.bool_]
    ijk: NDArray[np.int64]
    neighbours: NDArray[np.int64]
    target: NDArray[np.float64]
    coefficients: NDArray[np.float64]
    clipped: int

    @property
    def n_voxels(self) -> int:
        return int(self.neighbours.shape[0])


def target_correlation(length_mm: ArrayLike, fwhm: float = SUBJECT_FWHM) -> NDArray[np.float64]:
    """``exp(-l^2 / (2 s^2))`` with ``s = FWHM / sqrt(8 ln 2)`` (Gaussian autocorrelation)."""
    s2 = fwhm**2 / (8.0 * np.log(2.0))
    return np.exp(-(np.asarray(length_mm, dtype=np.float64) ** 2) / (2.0 * s2))


def field_model(
    brain: ArrayLike, tissue: ArrayLike, fwhm: float = SUBJECT_FWHM, beta: float = SUBJECT_BETA
) -> SubjectField:
    """Neighbours and target correlations of the preliminary subject images over a lattice.

    Parameters
    ----------
    brain : array_like of bool, shape (nx, ny, nz)
        The voxels of the images.
    tissue : array_like, shape (3, nx, ny, nz)
        Grey, white and CSF probabilities.
    fwhm : float, default 8
        Smoothness of the images in mm.
    beta : float, default 1
        Weight of the tissue change in a step's length (docs/methods.md, section 3.3).

    Returns
    -------
    SubjectField
        ``r = exp(-l^2 / (2 s^2))`` for each face neighbour with
        ``l = 2 mm (1 + beta TV)``, ``TV`` half the L1 distance of the two voxels'
        probabilities (the step lengths of :func:`daskmeta.stats.peak_kernel.lattice_graph`),
        and the coefficients of the passes that reproduce them exactly.

    Notes
    -----
    The coefficients come from one compiled pass in C order
    (:func:`daskmeta.stats._subject_jit.step_coefficients`); about 0.5 s for the template.
    """
    from daskmeta.stats import _subject_jit

    brain = np.asarray(brain, dtype=bool)
    tissue = np.asarray(tissue, dtype=np.float64)
    if brain.ndim != 3 or tissue.shape != (3, *brain.shape):
        raise ValueError(f"tissue must have shape (3, *brain.shape); {tissue.shape} was provided")
    if not fwhm > 0 or not beta >= 0:
        raise ValueError(f"fwhm must be > 0 and beta >= 0; {plain(fwhm)!r}, {plain(beta)!r} given")
    ijk = np.argwhere(brain)
    n_voxels = len(ijk)
    lookup = np.full(tuple(s + 1 for s in brain.shape), -1, dtype=np.int64)  # index -1: off
    lookup[:-1, :-1, :-1][brain] = np.arange(n_voxels)
    here = tissue[(slice(None), *ijk.T)]
    neighbours = np.empty((n_voxels, 3), dtype=np.int64)
    target = np.zeros((n_voxels, 3))
    for column, offset in enumerate(FACE_OFFSETS):
        there = ijk + offset
        node = lookup[tuple(there.T)]
        tv = 0.5 * np.abs(here - tissue[(slice(None), *np.maximum(there, 0).T)]).sum(0)
        neighbours[:, column] = node
        target[:, column] = np.where(
            node >= 0, target_correlation(VOXEL_SIZE_MM * (1.0 + beta * tv), fwhm), 0.0)
    coefficients = np.zeros((n_voxels, 3))
    covariance = np.zeros((n_voxels, 3))
    clipped = _subject_jit.step_coefficients(neighbours, target, COEFFICIENT_LIMIT, coefficients, covariance)
    return SubjectField(brain=brain, ijk=ijk, neighbours=neighbours, target=target,
                        coefficients=coefficients, clipped=int(clipped))


@functools.cache
def template_field(fwhm: float = SUBJECT_FWHM, beta: float = SUBJECT_BETA) -> SubjectField:
    """:func:`field_model` over the template's brain (docs/methods.md, section 3.1), cached.

    Computed once per process and per ``(fwhm, beta)``.
    """
    maps = templates()
    tissue = np.stack([maps["gray"], maps["white"], maps["csf"]])
    return field_model(maps["brain"], tissue, fwhm=fwhm, beta=beta)


def _generator(seed_sequence: np.random.SeedSequence | int | ArrayLike) -> np.random.Generator:
    if not isinstance(seed_sequence, np.random.SeedSequence):
        seed_sequence = np.random.SeedSequence(seed_sequence)
    return np.random.Generator(np.random.PCG64(seed_sequence))


def subject_images(
    n: int,
    seed_sequence: np.random.SeedSequence | int,
    field: SubjectField | None = None,
) -> NDArray[np.float32]:
    """Preliminary subject images: ``n`` smooth, zero-mean, unit-variance noise images.

    Parameters
    ----------
    n : int
        Number of subjects (at least 1).
    seed_sequence : numpy.random.SeedSequence or int
        Seeds the PCG64 stream of the noise ``R``; the same seed gives the same images.
    field : SubjectField, optional
        Generation weights; default :func:`template_field` (the template's brain, FWHM 8 mm,
        ``beta = 1``).

    Returns
    -------
    ndarray of float32, shape (n, n_voxels)
        One row per subject over the field's brain voxels in C order of the grid (for the
        template, the voxels of the ``brain`` mask; :func:`restrict` selects an analysis
        mask). Values are accumulated in float64 and stored in float32.

    Notes
    -----
    One compiled pass over the voxels, all subjects per voxel
    (:func:`daskmeta.stats._subject_jit.build_images`). The noise of voxel ``v``, subject
    ``s`` is draw ``v n + s`` of the stream, so the images depend on ``n`` as well as on the
    seed. The images are not yet standardised (:func:`standardize`). Albajes-Eizagirre et
    al. (2019); docs/methods.md, section 14.
    """
    from daskmeta.stats import _subject_jit

    n = int(n)
    if n < 1:
        raise ValueError(f"n must be at least 1 subject; {plain(n)!r} was provided")
    field = template_field() if field is None else field
    out = np.empty((n, field.n_voxels), dtype=np.float32)
    _, n_j, n_k = field.brain.shape
    _subject_jit.build_images(_generator(seed_sequence), field.neighbours >= 0, field.coefficients,
                              np.ascontiguousarray(field.ijk[:, 1:]), n_j, n_k, out)
    return out


def group_labels(n1: int, n2: int | None = None) -> NDArray[np.int8]:
    """Subject labels of a study: ``n1`` ones (patients) then ``n2`` zeros (controls).

    One-sample (``n2`` None or 0): ``n1`` ones. The layout (patients first) is the one
    :mod:`daskmeta.stats.psi_group` assumes.
    """
    n2 = 0 if n2 is None else int(n2)
    return np.concatenate([np.ones(int(n1), dtype=np.int8), np.zeros(n2, dtype=np.int8)])


def standardize(images: ArrayLike, groups: ArrayLike | None = None) -> NDArray[np.float64]:
    """Per voxel, mean 0 and standard deviation 1 across subjects, within each group.

    Parameters
    ----------
    images : array_like, shape (n_subjects, n_voxels)
        Subject images (any float dtype).
    groups : array_like of int, shape (n_subjects,), optional
        Group label of each subject (e.g. :func:`group_labels`: patients and controls of a
        two-sample study are standardised separately); default one group.

    Returns
    -------
    ndarray of float64, shape (n_subjects, n_voxels)
        Within each group and voxel: ``sum E = 0`` and ``sum E^2 = n_g - 1`` (standard
        deviation 1 with ``ddof = 1``) to float64 rounding. Two passes (centre, scale),
        then a second centring and scaling that removes the first pass's rounding.

    Raises
    ------
    ValueError
        If a group has fewer than 2 subjects, a voxel has zero spread in a group, or the
        shapes disagree.

    Notes
    -----
    These are the moments the permuted group analysis relies on
    (:mod:`daskmeta.stats.psi_group`; docs/methods.md, section 14).
    """
    images = np.asarray(images)
    if images.ndim != 2:
        raise ValueError(f"images must be (n_subjects, n_voxels); shape {images.shape} was provided")
    n = images.shape[0]
    labels = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups).ravel()
    if labels.shape != (n,):
        raise ValueError(f"groups must have one label per subject ({n}); {labels.shape[0]} were provided")
    out = images.astype(np.float64, copy=True)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 2:
            raise ValueError(f"group {plain(label)!r} has {len(rows)} subject; standardising needs 2")
        block = out[rows]
        for _ in range(2):  # the second pass corrects the rounding of the first
            block -= block.mean(axis=0)
            ss = np.einsum("sv,sv->v", block, block)
            if np.any(ss <= 0):
                raise ValueError(f"a voxel has no spread across the subjects of group {plain(label)!r}")
            block *= np.sqrt((len(rows) - 1) / ss)
        out[rows] = block
    return out


def restrict(
    images: ArrayLike, mask: ArrayLike, brain: ArrayLike | None = None
) -> NDArray:
    """Restrict images over the brain lattice to the voxels of an analysis mask.

    Parameters
    ----------
    images : array_like, shape (..., n_brain_voxels)
        Images over the brain voxels in C order (:func:`subject_images`).
    mask : Mask or array_like of bool, shape (91, 109, 91)
        The analysis mask (an object with a ``volume`` attribute, such as
        :class:`daskmeta.model.grid.Mask`, or its boolean volume); a subset of the brain.
    brain : array_like of bool, optional
        The images' lattice; default the template's brain.

    Returns
    -------
    ndarray, shape (..., n_mask_voxels)
        The mask's voxels in C order of the grid, the mask's own voxel vector.
    """
    images = np.asarray(images)
    volume = np.asarray(getattr(mask, "volume", mask), dtype=bool)
    brain = templates()["brain"] if brain is None else np.asarray(brain, dtype=bool)
    if volume.shape != brain.shape:
        raise ValueError(f"mask shape {volume.shape} differs from the brain's {brain.shape}")
    if np.any(volume & ~brain):
        raise ValueError(f"the mask has {int((volume & ~brain).sum())} voxels off the brain lattice")
    if images.shape[-1] != int(brain.sum()):
        raise ValueError(f"images have {images.shape[-1]} voxels; the brain has {int(brain.sum())}")
    return images[..., volume[brain]]


def restricted_noise(
    images: ArrayLike, mask: ArrayLike, groups: ArrayLike | None = None, brain: ArrayLike | None = None
) -> NDArray[np.float32]:
    """``standardize(restrict(images, mask, brain), groups).astype(np.float32)``, in one pass.

    Parameters
    ----------
    images : array_like, shape (n_subjects, n_brain_voxels)
        Subject images over the brain lattice (:func:`subject_images`).
    mask, brain
        As in :func:`restrict`.
    groups : array_like of int, shape (n_subjects,), optional
        As in :func:`standardize`.

    Returns
    -------
    ndarray of float32, shape (n_subjects, n_mask_voxels)
        Bit for bit the composition above (the same sums in the same order, compiled:
        :func:`daskmeta.stats._psi_jit.standardize_columns`), about 20 times faster and
        without its float64 copies of the images; voxel-major in memory (a transposed view),
        as the composition's result is. float32 images take the compiled path, others the
        composition itself.

    Raises
    ------
    ValueError
        As :func:`restrict` and :func:`standardize`.

    Notes
    -----
    docs/methods.md, section 14.2 (the standardised noise of a study's permuted group
    analysis).
    """
    from daskmeta.stats import _psi_jit

    images = np.asarray(images)
    if images.dtype != np.float32 or images.ndim != 2:
        return standardize(restrict(images, mask, brain), groups).astype(np.float32)
    volume = np.asarray(getattr(mask, "volume", mask), dtype=bool)
    lattice = templates()["brain"] if brain is None else np.asarray(brain, dtype=bool)
    restrict(images[:1], volume, lattice)  # the checks of restrict, on one row
    n = images.shape[0]
    labels = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups).ravel()
    if labels.shape != (n,):
        raise ValueError(f"groups must have one label per subject ({n}); {labels.shape[0]} were provided")
    members = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    for label, rows in zip(np.unique(labels), members, strict=True):
        if len(rows) < 2:
            raise ValueError(f"group {plain(label)!r} has {len(rows)} subject; standardising needs 2")
    columns = np.flatnonzero(volume[lattice]).astype(np.int64)
    bounds = np.cumsum([0, *(len(rows) for rows in members)]).astype(np.int64)
    out = np.empty((len(columns), n), dtype=np.float32)
    bad = _psi_jit.standardize_columns(np.ascontiguousarray(images), columns,
                                       np.concatenate(members).astype(np.int64), bounds, out)
    if bad >= 0:
        raise ValueError(f"voxel {bad} has no spread across the subjects of a group")
    return out.T
