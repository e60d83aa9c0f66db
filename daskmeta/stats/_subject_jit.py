"""Numba kernel of the preliminary subject images of SDM-PSI (docs/methods.md, section 14).

One compiled pass over the brain voxels in C order of the grid (lexicographic ``i, j, k``),
all subjects per voxel: the face-neighbour recursion is run along ``k``, then ``j``, then
``i`` at each voxel (see :mod:`daskmeta.stats.subject_images`), with fresh standard normal
noise drawn from a NumPy ``Generator`` (Numba draws the same stream as NumPy). Imported
lazily by :func:`daskmeta.stats.subject_images.subject_images`.

References
----------
Albajes-Eizagirre A, Solanes A, Vieta E, Radua J (2019). Voxel-based meta-analysis via
permutation of subject images (PSI): theory and implementation for SDM. NeuroImage
186:174-184, doi:10.1016/j.neuroimage.2018.10.077.
"""

from __future__ import annotations

import numpy as np

from daskmeta.stats._pooling_jit import _jit


@_jit
def build_images(generator, present, coef, jk, n_j, n_k, out):
    """Fill ``out`` (n_subjects, n_voxels) voxel by voxel.

    At voxel ``v`` with face neighbours ``A = (i-1, j, k)``, ``B = (i, j-1, k)``,
    ``C = (i, j, k-1)`` and coefficients ``al, be, g`` (:func:`step_coefficients`; a
    neighbour off the brain counts as 0)::

        a_v = g a_C + sqrt(1 - g^2) R_v        (along k)
        b_v = be b_B + sqrt(1 - be^2) a_v      (along j)
        y_v = al y_A + sqrt(1 - al^2) b_v      (along i)

    Parameters
    ----------
    generator : numpy.random.Generator
        Source of ``R``: draw ``v * n_subjects + s`` is voxel ``v``, subject ``s``.
    present : ndarray of bool, shape (n_voxels, 3)
        Whether ``A, B, C`` are brain voxels (``C``, when present, is voxel ``v - 1``).
    coef : ndarray of float64, shape (n_voxels, 3)
        ``al, be, g``, each in (-1, 1).
    jk : ndarray of int64, shape (n_voxels, 2)
        Grid indices ``j, k`` of each voxel: ``b`` and ``y`` are kept in float64 for one
        slice of the grid (``b`` of the current slice, ``y`` of the previous one).
    n_j, n_k : int
        Grid extent along ``j`` and ``k``.
    out : ndarray of float32, shape (n_subjects, n_voxels)
        ``y``, written in place.
    """
    n_subjects, n_voxels = out.shape
    a = np.zeros(n_subjects)
    b_slice = np.zeros((n_j, n_k, n_subjects))
    y_slice = np.zeros((n_j, n_k, n_subjects))
    for v in range(n_voxels):
        j = jk[v, 0]
        k = jk[v, 1]
        r = coef[v, 2] if present[v, 2] else 0.0
        q = np.sqrt(1.0 - r * r)
        for s in range(n_subjects):
            a[s] = r * a[s] + q * generator.standard_normal()
        if present[v, 1]:
            r = coef[v, 1]
            q = np.sqrt(1.0 - r * r)
            for s in range(n_subjects):
                b_slice[j, k, s] = r * b_slice[j - 1, k, s] + q * a[s]
        else:
            for s in range(n_subjects):
                b_slice[j, k, s] = a[s]
        if present[v, 0]:  # y_slice[j, k] still holds y of (i - 1, j, k)
            r = coef[v, 0]
            q = np.sqrt(1.0 - r * r)
            for s in range(n_subjects):
                y_slice[j, k, s] = r * y_slice[j, k, s] + q * b_slice[j, k, s]
        else:
            for s in range(n_subjects):
                y_slice[j, k, s] = b_slice[j, k, s]
        for s in range(n_subjects):
            out[s, v] = np.float32(y_slice[j, k, s])
    return out


@_jit
def step_coefficients(neighbours, target, limit, coef, covariance):
    """Coefficients of the three passes that give every face neighbour its target correlation.

    With ``q(x) = sqrt(1 - x^2)`` and the passes ``a = g a_C + q(g) R``,
    ``b = be b_B + q(be) a``, ``y = al y_A + q(al) b`` (``al, be, g`` of the voxel, 0 where
    the neighbour is off the brain), every variance is 1 and, because the terms of each pass
    come from disjoint rows or slices of the grid, the neighbour covariances obey::

        cov(y, y_A) = al
        cov(y, y_B) = al al_B cov(y_A, y_AB) + q(al) q(al_B) be
        cov(b, b_C) = be be_C cov(b_B, b_BC) + q(be) q(be_C) g
        cov(y, y_C) = al al_C cov(y_A, y_AC) + q(al) q(al_C) cov(b, b_C)

    (``y_AB`` is the ``B`` neighbour of ``A``, and so on, all earlier voxels). So ``al = r_A``
    and, solving in C order, ``be`` and ``g`` are set so that ``cov(y, y_B) = r_B`` and
    ``cov(y, y_C) = r_C`` exactly; a coefficient outside ``[0, limit]`` is clipped and
    that voxel's correlation is then the nearest reachable one.

    Parameters
    ----------
    neighbours : ndarray of int64, shape (n_voxels, 3)
        Rows of ``A, B, C``, -1 off the brain.
    target : ndarray of float64, shape (n_voxels, 3)
        ``r_A, r_B, r_C``.
    limit : float
        Largest coefficient (below 1).
    coef : ndarray of float64, shape (n_voxels, 3)
        Out: ``al, be, g``.
    covariance : ndarray of float64, shape (n_voxels, 3)
        Out: the field's ``cov(y, y_B)``, ``cov(y, y_C)`` and ``cov(b, b_C)``.

    Returns
    -------
    int
        Number of coefficients clipped.
    """
    clipped = 0
    for v in range(neighbours.shape[0]):
        ia = neighbours[v, 0]
        ib = neighbours[v, 1]
        ic = neighbours[v, 2]
        al = target[v, 0] if ia >= 0 else 0.0
        coef[v, 0] = al
        qa = np.sqrt(1.0 - al * al)
        be = 0.0
        if ib >= 0:
            al_b = coef[ib, 0]
            carried = al * al_b * covariance[ia, 0] if (ia >= 0 and al_b != 0.0) else 0.0
            be = (target[v, 1] - carried) / (qa * np.sqrt(1.0 - al_b * al_b))
            if be > limit or be < 0.0:
                be = min(max(be, 0.0), limit)
                clipped += 1
            covariance[v, 0] = carried + qa * np.sqrt(1.0 - al_b * al_b) * be
        coef[v, 1] = be
        g = 0.0
        if ic >= 0:
            al_c = coef[ic, 0]
            be_c = coef[ic, 1]
            carried_y = al * al_c * covariance[ia, 1] if (ia >= 0 and al_c != 0.0) else 0.0
            q_ac = qa * np.sqrt(1.0 - al_c * al_c)
            wanted_b = (target[v, 2] - carried_y) / q_ac
            carried_b = be * be_c * covariance[ib, 2] if (ib >= 0 and be_c != 0.0) else 0.0
            q_bc = np.sqrt(1.0 - be * be) * np.sqrt(1.0 - be_c * be_c)
            g = (wanted_b - carried_b) / q_bc
            if g > limit or g < 0.0:
                g = min(max(g, 0.0), limit)
                clipped += 1
            covariance[v, 2] = carried_b + q_bc * g
            covariance[v, 1] = carried_y + q_ac * covariance[v, 2]
        coef[v, 2] = g
    return clipped
