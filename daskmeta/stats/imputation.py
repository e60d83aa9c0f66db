"""Imputation of censored study effects: draws and coherent noise (docs/methods.md, section 14).

SDM-PSI (Albajes-Eizagirre et al. 2019, NeuroImage) imputes each study's effect where only
its bounds are known (docs/methods.md, section 3.5), several times, from the censored
maximum-likelihood fit of :mod:`daskmeta.stats.censored` (MetaNSUE: Albajes-Eizagirre et al.
2019, Stat Methods Med Res):

- :func:`smooth_map` smooths the fitted maps (``beta``, ``tau2``) within the mask before
  they are used;
- :func:`coherent_uniforms` gives one spatially coherent uniform field per study and
  imputation (smoothed Gaussian noise through ``Phi``), so that neighbouring voxels draw
  from similar quantiles, as neighbouring voxels of a real image would;
- :func:`truncated_draws` turns the uniforms into values within the bounds by the inverse
  CDF of the effect's density on the interval (the normal density with the variance
  ``a + c y^2 + tau2`` evaluated at each value ``y``), discretised on equal bins;
  :func:`truncated_draws_many` gives the same draws for several rows of uniforms (one per
  imputation), building each voxel's CDF table once (docs/methods.md, section 14.1).

References
----------
Albajes-Eizagirre A, Solanes A, Vieta E, Radua J (2019). Voxel-based meta-analysis via
permutation of subject images (PSI): theory and implementation for SDM. NeuroImage
186:174-184, doi:10.1016/j.neuroimage.2018.10.077.
Albajes-Eizagirre A, Solanes A, Radua J (2019). Meta-analysis of non-statistically
significant unreported effects. Stat Methods Med Res 28:3741-3754,
doi:10.1177/0962280218811349.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.special import ndtr

from daskmeta.stats.censored import KNOWN_WIDTH  # an interval narrower than this is a known value

#: Voxels x bins held at once by :func:`truncated_draws` (float64: 8 MB per buffer). Slices of
#: 1 M run about 3 times faster than slices of 8 M (the buffers stay in cache).
SLICE_ELEMENTS = 1_000_000
#: Voxels x bins of one slab of :func:`truncated_draws_many` (float64: 1 MB per buffer, so
#: the two buffers stay in a 2 MB L2 cache while a slab's table is built and inverted).
TABLE_ELEMENTS = 131_072
#: The MNI 2 mm grid (docs/methods.md, section 3.1).
GRID_SHAPE = (91, 109, 91)


def truncated_draws(
    mu: ArrayLike,
    tau2: ArrayLike,
    lo: ArrayLike,
    up: ArrayLike,
    a: ArrayLike,
    c: ArrayLike,
    u: ArrayLike,
    bins: int = 500,
) -> NDArray[np.float64]:
    """Values within ``[lo, up]`` at the quantiles ``u``, voxel by voxel.

    The density on ``[lo, up]`` is proportional to ``exp(-(y - mu)^2 / (2 w(y))) /
    sqrt(w(y))`` with ``w(y) = a + c y^2 + tau2``: the normal density of the fitted model
    with the variance evaluated at each value. It is evaluated at the centres of ``bins``
    equal bins and taken as constant within each bin, so the CDF is piecewise linear and
    its inverse at ``u`` is continuous and nondecreasing in ``u``; ``u = 0`` gives ``lo``
    and ``u = 1`` gives ``up``. Known voxels (``up - lo <`` :data:`KNOWN_WIDTH`) return
    ``(lo + up) / 2`` exactly, whatever ``u``.

    Parameters
    ----------
    mu, tau2 : array_like, shape (n_voxels,)
        The fitted mean of the study's effect (``X_s beta``) and the between-study variance.
    lo, up : array_like, shape (n_voxels,)
        The study's bounds (``effect_lower``, ``effect_upper``, docs/methods.md, section 3.5).
    a, c : array_like
        The study's variance model (scalars, or one value per voxel).
    u : array_like, shape (n_voxels,)
        Uniforms in [0, 1] (e.g. :func:`coherent_uniforms`).
    bins : int
        Bins of the discretised density.

    Returns
    -------
    ndarray, shape (n_voxels,)
        The draws, each within ``[lo, up]``.

    Notes
    -----
    Voxels are processed in slices of at most :data:`SLICE_ELEMENTS` voxel-bins, in two
    reused buffers.
    Albajes-Eizagirre et al. (2019), NeuroImage 186:174-184; docs/methods.md, section 14.
    """
    if int(bins) != bins or bins < 1:
        raise ValueError(f"'bins' must be a positive integer; got {bins!r}.")
    bins = int(bins)
    arrays = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (mu, tau2, lo, up, a, c, u)))
    mu, tau2, lo, up, a, c, u = (np.ravel(x) for x in arrays)
    shape = arrays[0].shape
    if not all(np.isfinite(x).all() for x in (mu, tau2, lo, up, a, c, u)):
        raise ValueError("the inputs of truncated_draws must be finite.")
    if np.any((u < 0) | (u > 1)):
        raise ValueError("'u' must lie within [0, 1].")
    if np.any(lo - up > KNOWN_WIDTH):
        raise ValueError("'lo' exceeds 'up' at some voxel.")
    out = 0.5 * (lo + up)
    todo = np.flatnonzero(up - lo >= KNOWN_WIDTH)
    centres = (np.arange(bins) + 0.5) / bins
    step = max(1, SLICE_ELEMENTS // bins)
    base = a + tau2
    size = min(step, todo.size)
    buffer_1 = np.empty((size, bins))  # reused, in place: two voxel-by-bin arrays in all
    buffer_2 = np.empty((size, bins))
    for start in range(0, todo.size, step):
        idx = todo[start:start + step]
        m = idx.size
        low, width = lo[idx], up[idx] - lo[idx]
        y = np.multiply(width[:, None], centres, out=buffer_1[:m])
        y += low[:, None]
        var = np.multiply(y, y, out=buffer_2[:m])
        var *= c[idx, None]
        var += base[idx, None]
        score = np.subtract(y, mu[idx, None], out=y)  # -2 log density, up to a constant
        np.square(score, out=score)
        score /= var
        score += np.log(var, out=var)
        score -= score.min(axis=1, keepdims=True)
        score *= -0.5
        density = np.exp(score, out=score)
        cdf = np.cumsum(density, axis=1, out=var)
        target = u[idx] * cdf[:, -1]
        # the bin holding the target: the first with cdf > target (it has positive mass)
        j = np.minimum(np.count_nonzero(cdf <= target[:, None], axis=1), bins - 1)
        rows = np.arange(m)
        before = np.where(j > 0, cdf[rows, np.maximum(j - 1, 0)], 0.0)
        fraction = np.clip((target - before) / density[rows, j], 0.0, 1.0)
        out[idx] = np.clip(low + width * (j + fraction) / bins, low, up[idx])
    return out.reshape(shape)


def truncated_draws_many(
    mu: ArrayLike,
    tau2: ArrayLike,
    lo: ArrayLike,
    up: ArrayLike,
    a: ArrayLike,
    c: ArrayLike,
    u: ArrayLike,
    bins: int = 500,
) -> NDArray[np.float64]:
    """:func:`truncated_draws` at several rows of uniforms, each voxel's CDF built once.

    The discretised density of a voxel depends on ``(mu, tau2, lo, up, a, c)`` only, not on
    the uniform, so its CDF table over the bins is built once and inverted at every row of
    ``u`` (binary search for the first bin with ``cdf > u * cdf[-1]``, then the same linear
    interpolation). Row ``r`` of the result equals ``truncated_draws(mu, tau2, lo, up, a, c,
    u[r], bins)`` bit for bit: the table is built with the same operations in the same order
    (``exp`` and ``log`` in NumPy, the rest in :mod:`daskmeta.stats._imputation_jit`).

    Parameters
    ----------
    mu, tau2, lo, up, a, c : array_like
        As :func:`truncated_draws`: scalars or one value per voxel (broadcast to
        ``(n_voxels,)``).
    u : array_like, shape (n_rows, n_voxels)
        Uniforms in [0, 1], one row per imputation.
    bins : int
        Bins of the discretised density.

    Returns
    -------
    ndarray, shape (n_rows, n_voxels)
        The draws, each within ``[lo, up]``; known voxels (``up - lo <``
        :data:`KNOWN_WIDTH`) are ``(lo + up) / 2`` in every row.

    Notes
    -----
    Voxels are processed in slabs of at most :data:`TABLE_ELEMENTS` voxel-bins, in two
    reused buffers; the cost is one table per voxel plus ``n_rows`` binary searches, instead
    of one table per voxel and row. Albajes-Eizagirre et al. (2019), NeuroImage
    186:174-184; docs/methods.md, section 14.1.
    """
    from daskmeta.stats import _imputation_jit as kernel

    if int(bins) != bins or bins < 1:
        raise ValueError(f"'bins' must be a positive integer; got {bins!r}.")
    bins = int(bins)
    u = np.ascontiguousarray(u, dtype=np.float64)
    if u.ndim != 2:
        raise ValueError(f"'u' must be an (n_rows, n_voxels) array; got shape {u.shape}.")
    try:
        arrays = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (mu, tau2, lo, up, a, c)),
                                     np.empty(u.shape[1]))
    except ValueError:
        arrays = []
    if not arrays or arrays[0].shape != (u.shape[1],):
        raise ValueError(f"the parameters must be scalars or one value per column of 'u' "
                         f"({u.shape[1]}).")
    mu, tau2, lo, up, a, c = (np.ascontiguousarray(x) for x in arrays[:6])
    if not (all(np.isfinite(x).all() for x in (mu, tau2, lo, up, a, c)) and np.isfinite(u).all()):
        raise ValueError("the inputs of truncated_draws_many must be finite.")
    if np.any((u < 0) | (u > 1)):
        raise ValueError("'u' must lie within [0, 1].")
    if np.any(lo - up > KNOWN_WIDTH):
        raise ValueError("'lo' exceeds 'up' at some voxel.")
    out = np.empty(u.shape)
    out[:] = 0.5 * (lo + up)
    todo = np.flatnonzero(up - lo >= KNOWN_WIDTH)
    if todo.size == 0 or u.shape[0] == 0:
        return out
    centres = (np.arange(bins) + 0.5) / bins
    step = max(1, TABLE_ELEMENTS // bins)
    base = a + tau2
    size = min(step, todo.size)
    score = np.empty((size, bins))  # reused: the scores, then the density
    var = np.empty((size, bins))  # reused: the variances, their logs, then the CDF
    for start in range(0, todo.size, step):
        idx = todo[start:start + step]
        m = idx.size
        low, width, upper = lo[idx], up[idx] - lo[idx], up[idx]
        kernel.bin_scores(low, width, mu[idx], c[idx], base[idx], centres, score, var)
        np.log(var[:m], out=var[:m])
        kernel.centred_scores(score, var, m)
        np.exp(score[:m], out=score[:m])
        kernel.invert(score, var, idx, low, width, upper, u, out)
    return out


def _sigma_voxels(fwhm_mm: float, voxel_mm: float) -> float:
    return fwhm_mm / math.sqrt(8.0 * math.log(2.0)) / voxel_mm


@functools.lru_cache(maxsize=16)
def _kernel_norm(grid_shape: tuple[int, ...], sigma: float) -> float:
    """``sqrt(sum K^2)`` of the wrapped Gaussian kernel (an impulse, smoothed)."""
    impulse = np.zeros(grid_shape)
    impulse[tuple(s // 2 for s in grid_shape)] = 1.0
    kernel = ndimage.gaussian_filter(impulse, sigma, mode="wrap")
    return float(np.sqrt(np.sum(kernel**2)))


def gaussian_noise_field(
    rng: np.random.Generator,
    fwhm_mm: float,
    grid_shape: tuple[int, int, int] = GRID_SHAPE,
    voxel_mm: float = 2.0,
) -> NDArray[np.float64]:
    """A Gaussian field of exactly unit variance on the grid, smoothed to ``fwhm_mm``.

    White noise (``rng.standard_normal(grid_shape)``) smoothed with an isotropic Gaussian
    of that FWHM with periodic boundaries (``mode="wrap"``) has variance ``sum K^2`` at
    every voxel; dividing by its square root gives unit variance everywhere.
    """
    grid_shape = tuple(int(s) for s in grid_shape)
    sigma = _sigma_voxels(fwhm_mm, voxel_mm)
    field = ndimage.gaussian_filter(rng.standard_normal(grid_shape), sigma, mode="wrap")
    return field / _kernel_norm(grid_shape, sigma)


def coherent_uniforms(
    rng: np.random.Generator,
    shape_grid: tuple[int, int, int],
    mask_ijk: ArrayLike,
    fwhm_mm: float,
    voxel_mm: float = 2.0,
) -> NDArray[np.float64]:
    """One spatially coherent uniform field over the mask's voxels.

    ``Phi`` of :func:`gaussian_noise_field` (a unit-variance Gaussian field smoothed to the
    study's kernel FWHM): every voxel is exactly uniform on (0, 1), and neighbours are
    correlated as the smoothed noise is (Albajes-Eizagirre et al. 2019, NeuroImage
    186:174-184; docs/methods.md, section 14).

    Parameters
    ----------
    rng : numpy.random.Generator
        The stream of this study and imputation.
    shape_grid : tuple of int
        The grid's shape.
    mask_ijk : array_like of int, shape (n_voxels, 3)
        The mask's voxel indices.
    fwhm_mm, voxel_mm : float
        The smoothing FWHM and the voxel size, in mm.

    Returns
    -------
    ndarray, shape (n_voxels,)
    """
    ijk = np.asarray(mask_ijk, dtype=np.intp)
    if ijk.ndim != 2 or ijk.shape[1] != 3:
        raise ValueError(f"'mask_ijk' must be an (n_voxels, 3) array; got shape {ijk.shape}.")
    field = gaussian_noise_field(rng, fwhm_mm, tuple(shape_grid), voxel_mm)
    return ndtr(field[tuple(ijk.T)])


def smooth_map(
    values: ArrayLike,
    mask_ijk: ArrayLike,
    fwhm_mm: float,
    grid_shape: tuple[int, int, int] = GRID_SHAPE,
    voxel_mm: float = 2.0,
) -> NDArray[np.float64]:
    """Gaussian smoothing of a map within the mask (normalised: constants stay constant).

    ``S(values * inside) / S(inside)`` read at the mask's voxels, with ``S`` the isotropic
    Gaussian of ``fwhm_mm`` (zero outside the grid), so voxels outside the mask take no
    part and a constant map is returned unchanged. Used on the censored ML maps (``beta``,
    ``tau2``) before imputation (Albajes-Eizagirre et al. 2019, NeuroImage 186:174-184;
    docs/methods.md, section 14).

    Parameters
    ----------
    values : array_like, shape (n_voxels,) or (n_maps, n_voxels)
        One map or several (smoothed one by one).
    mask_ijk : array_like of int, shape (n_voxels, 3)
    fwhm_mm : float
        FWHM of the smoothing; 0 returns the values unchanged.
    grid_shape : tuple of int
    voxel_mm : float
    """
    values = np.asarray(values, dtype=np.float64)
    ijk = np.asarray(mask_ijk, dtype=np.intp)
    if ijk.ndim != 2 or ijk.shape[1] != 3 or values.shape[-1] != ijk.shape[0]:
        raise ValueError(
            f"'values' must end with one value per mask voxel ({ijk.shape[0]}); got {values.shape}."
        )
    if not np.isfinite(values).all():
        raise ValueError("'values' must be finite.")
    if fwhm_mm == 0:
        return values.copy()
    sigma = _sigma_voxels(fwhm_mm, voxel_mm)
    where = tuple(ijk.T)
    inside = np.zeros(grid_shape)
    inside[where] = 1.0
    weight = ndimage.gaussian_filter(inside, sigma, mode="constant")[where]
    flat = values.reshape(-1, ijk.shape[0])
    out = np.empty_like(flat)
    volume = np.zeros(grid_shape)
    for m, row in enumerate(flat):
        volume[where] = row
        out[m] = ndimage.gaussian_filter(volume, sigma, mode="constant")[where] / weight
    return out.reshape(values.shape)
