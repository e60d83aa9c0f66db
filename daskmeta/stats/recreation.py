"""Recreating one study's effect-size maps from its peaks (docs/methods.md, section 3).

Pure NumPy: one study in, its ``effect``, ``effect_lower``, ``effect_upper`` and
``variance`` voxel vectors out. :mod:`daskmeta.analyses.recreate` maps it over studies with Dask.

References
----------
Radua J et al. (2012). Eur Psychiatry 27:605 (ES-SDM effect sizes and variances).
Radua J et al. (2014). Front Psychiatry 5:13 (AES-SDM anisotropic kernels).
Albajes-Eizagirre A et al. (2019). NeuroImage 186:174 (bounded maps in SDM-PSI).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from daskmeta.stats.effect_size import degrees_of_freedom, hedges_g, sampling_term, variance_constant
from daskmeta.stats.peak_kernel import combine_peaks, peak_kernels

#: Order of the maps along the first axis of :func:`recreate_study`'s output.
MAP_NAMES = ("effect", "effect_lower", "effect_upper", "variance")


def recreate_study(
    peak_ijk: NDArray[np.int64],
    peak_t: NDArray[np.float64],
    n1: float,
    n2: float,
    t_thr: float,
    target_ijk: NDArray[np.int64],
    fwhm: float = 20.0,
    anisotropy: float = 1.0,
    graph: sparse.csr_matrix | None = None,
    node_of: NDArray[np.int64] | None = None,
) -> NDArray[np.float64]:
    """One study's maps, shape ``(4, n_targets)`` in the order of :data:`MAP_NAMES`.

    Parameters
    ----------
    peak_ijk : ndarray (n_peaks, 3)
        Peak voxels; empty for a null study.
    peak_t : ndarray (n_peaks,)
        Signed peak t values.
    n1, n2 : float
        Sample sizes; ``n2`` NaN for a one-sample design.
    t_thr : float
        The study's threshold t (positive); gives the bounds' half-width ``g_thr``.
    target_ijk : ndarray (n_targets, 3)
        The analysis mask's voxels.
    fwhm, anisotropy, graph, node_of
        The kernel, as :func:`daskmeta.stats.peak_kernel.peak_kernels`.

    Notes
    -----
    ``effect = sum K_i^2 g_i / sum K_i``, ``W = max K_i``,
    ``effect_lower/upper = effect -/+ (1 - W) g_thr`` and
    ``variance = 1/n1 + 1/n2 + c effect^2`` (docs/methods.md, section 3).
    """
    peak_g = hedges_g(np.asarray(peak_t, dtype=np.float64), n1, n2)
    g_thr = float(abs(hedges_g(t_thr, n1, n2)))
    kernels = peak_kernels(peak_ijk, target_ijk, fwhm, anisotropy, graph, node_of)
    effect, envelope = combine_peaks(kernels, peak_g)
    half_width = (1.0 - envelope) * g_thr
    c = float(variance_constant(degrees_of_freedom(n1, n2)))
    variance = float(sampling_term(n1, n2)) + c * effect**2
    return np.stack([effect, effect - half_width, effect + half_width, variance])
