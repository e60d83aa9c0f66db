"""The permutation null of SDM-PSI's linear models: Freedman-Lane permutations of studies.

docs/methods.md, section 14.5. A task handles a block of permutations against the whole
``(imputation, study, voxel)`` stack of imputed effects: per permutation, the reduced model's
residuals move between studies (the same order for every imputation and voxel,
:func:`daskmeta.stats.freedman_lane.freedman_lane`), the meta-regression is refitted per
imputation, Rubin's rules pool the tested coefficient, and the maxima of z and of TFCE are kept
by sign. Permutation ``b`` draws its order from ``SeedSequence(seed, spawn_key=(crc32(name), b,
crc32("studies")))``: the same numbers whatever the block size or the workers.
"""

from __future__ import annotations

import zlib

import numpy as np

from daskmeta.null.psi import null_extremes
from daskmeta.stats.freedman_lane import TESTED_COLUMN, freedman_lane, pool_model, reduced_design, reduced_fit

#: Elements of the largest (imputation, study, voxel) slab fitted at once.
SLAB_ELEMENTS = 4_000_000
#: Stream key of the study permutations.
STUDIES_KEY = zlib.crc32(b"studies")


def study_order(seed: int, name: str, permutation: int, k: int) -> np.ndarray:
    """The order of permutation ``permutation``: study ``s`` receives study ``order[s]``'s residual."""
    sequence = np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode("utf-8")), permutation,
                                                       STUDIES_KEY))
    return np.random.default_rng(sequence).permutation(k)


def _study_first(effects: np.ndarray, part: slice) -> np.ndarray:
    """``(M, k, V)`` float32 -> ``(k, M, width)`` float64 for the voxels ``part``."""
    return np.moveaxis(effects[:, :, part], 1, 0).astype(np.float64)


def observed_model(effects: np.ndarray, a: np.ndarray, c: np.ndarray, design: np.ndarray) -> np.ndarray:
    """Rows ``effect, variance, z, tau2, i2, q`` of the pooled tested coefficient, (6, V).

    ``effects`` is the imputed stack ``(M, k, V)``; variances are ``a + c y^2`` in float64.
    """
    n_imputations, k, n_voxels = effects.shape
    out = np.empty((6, n_voxels))
    width = max(64, SLAB_ELEMENTS // max(1, n_imputations * k))
    for begin in range(0, n_voxels, width):
        part = slice(begin, min(begin + width, n_voxels))
        y = _study_first(effects, part)
        v = a[:, None, None] + c[:, None, None] * y * y
        out[:, part] = np.stack(list(pool_model(y, v, design, TESTED_COLUMN)))
    return out


def permuted_model_z(effects: np.ndarray, a: np.ndarray, c: np.ndarray, design: np.ndarray, seed: int,
                     name: str, start: int, stop: int, kernel: bool = True) -> np.ndarray:
    """The pooled z maps of the tested coefficient under permutations ``start..stop-1``, (P, V).

    ``kernel=True`` runs the Numba kernel (:mod:`daskmeta.stats._freedman_lane_jit`), one pass
    per permutation over the float32 stack without temporaries; ``False`` the NumPy
    reference (:mod:`daskmeta.stats.freedman_lane`), equal to about 1e-12.
    """
    n_imputations, k, n_voxels = effects.shape
    orders = [study_order(seed, name, b, k) for b in range(start, stop)]
    z = np.empty((stop - start, n_voxels))
    if kernel:
        from daskmeta.stats._freedman_lane_jit import model_z, slope_z

        design = np.ascontiguousarray(design, dtype=np.float64)
        a, c = np.asarray(a, dtype=np.float64), np.asarray(c, dtype=np.float64)
        kept = np.array([j for j in range(design.shape[1]) if j != TESTED_COLUMN], dtype=np.int64)
        stack = np.ascontiguousarray(effects, dtype=np.float32)
        one_regressor = design.shape[1] == 2 and np.all(design[:, 0] == 1.0)
        for row, order in enumerate(orders):
            if one_regressor:
                slope_z(stack, a, c, np.ascontiguousarray(design[:, 1]), order.astype(np.int64), z[row])
            else:
                model_z(stack, a, c, design, kept, TESTED_COLUMN, order.astype(np.int64), 0, n_voxels, z[row])
        return z
    reduced = reduced_design(design, TESTED_COLUMN)
    width = max(64, SLAB_ELEMENTS // max(1, n_imputations * k))
    for begin in range(0, n_voxels, width):
        part = slice(begin, min(begin + width, n_voxels))
        y = _study_first(effects, part)
        fitted = reduced_fit(y, a[:, None, None] + c[:, None, None] * y * y, reduced)
        for row, order in enumerate(orders):
            y_star, v_star = freedman_lane(y, a, c, reduced, order, fitted)
            z[row, part] = pool_model(y_star, v_star, design, TESTED_COLUMN).z
    return z


def psi_model_block(effects: np.ndarray, a: np.ndarray, c: np.ndarray, design: np.ndarray, seed: int,
                    name: str, start: int, stop: int, mask_name: str) -> np.ndarray:
    """Null maxima of permutations ``start..stop-1``: rows ``max z, min z, max TFCE, min TFCE``."""
    return null_extremes(permuted_model_z(effects, a, c, design, seed, name, start, stop), mask_name)
