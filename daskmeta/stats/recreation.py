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

from daskmeta.stats.effect_size import (
    degrees_of_freedom,
    hedges_g,
    sampling_term,
    t_from_z,
    variance_constant,
)
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


def statmap_study(
    values: NDArray[np.float64],
    n1: float,
    n2: float,
    t_thr: float,
    stat: str = "t",
) -> NDArray[np.float64]:
    """One image study's maps from its statistic at each voxel, shape ``(4, n_voxels)``.

    Parameters
    ----------
    values : ndarray (n_voxels,)
        The study's t (or z) at the analysis mask's voxels, resampled to the grid; NaN where
        the image has no value.
    n1, n2 : float
        Sample sizes (``n2`` NaN for a one-sample study); they give the degrees of freedom.
    t_thr : float
        The study's threshold t: unknown voxels are bounded by its Hedges g.
    stat : {"t", "z"}
        What ``values`` hold; z is converted to t first (docs/methods.md, section 1.3).

    Returns
    -------
    ndarray (4, n_voxels)
        ``effect, effect_lower, effect_upper, variance`` in the order of :data:`MAP_NAMES`.

    Notes
    -----
    A voxel is *known* where the value is finite and not exactly 0 (an exact 0 is the
    background of most statistical images): there ``effect = g(t)`` (Hedges' g of section 2),
    ``effect_lower = effect_upper = effect`` and the variance is that of g. Elsewhere it is
    unknown and treated as a voxel no peak reaches in a peak study: ``effect = 0``, bounds
    ``-/+ g_thr``, variance ``1/n1 + 1/n2`` (docs/methods.md, section 3.8).
    """
    if stat not in ("t", "z"):
        raise ValueError(f"'stat' must be 't' or 'z'; {stat!r} was provided")
    values = np.asarray(values, dtype=np.float64)
    known = np.isfinite(values) & (values != 0)
    t = np.where(known, values, 0.0)
    if stat == "z":
        t = np.where(known, t_from_z(t, degrees_of_freedom(n1, n2)), 0.0)
    effect = hedges_g(t, n1, n2)
    g_thr = float(abs(hedges_g(t_thr, n1, n2)))
    half_width = np.where(known, 0.0, g_thr)
    c = float(variance_constant(degrees_of_freedom(n1, n2)))
    variance = float(sampling_term(n1, n2)) + c * effect**2
    return np.stack([effect, effect - half_width, effect + half_width, variance])
