"""Randomization p-values of SDM-Z against the null summaries of :mod:`daskmeta.stats.null`.

Pure NumPy kernels (docs/methods.md, section 5): the uncorrected one-tailed p-value of a z against the
binned null histogram (:func:`p_from_histogram`) and the z thresholds where it reaches a
given p (:func:`z_threshold_for_p`); family-wise error (FWE) corrected voxel
(:func:`p_fwe`) and cluster (:func:`cluster_p_fwe`) p-values from per-randomization maxima.
Every p-value has the ``(1 + count) / (1 + N)`` form, never 0.

References
----------
Nichols TE, Holmes AP (2002). Nonparametric permutation tests for functional neuroimaging.
Hum Brain Mapp 15:1-25 (maximum statistics for FWE control).
Phipson B, Smyth GK (2010). Permutation p-values should never be zero. Stat Appl Genet Mol
Biol 9:39 (the ``(1 + count) / (1 + N)`` form).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.stats.null import _LO_INT, BINS_PER_UNIT, N_HIST, bin_index

__all__ = ["cluster_p_fwe", "p_fwe", "p_from_histogram", "z_threshold_for_p"]


def _check_hist(hist: ArrayLike) -> tuple[NDArray[np.int64], int]:
    hist = np.asarray(hist)
    if hist.shape != (N_HIST,) or not np.issubdtype(hist.dtype, np.integer):
        raise ValueError(
            f"'hist' must be integer counts of shape ({N_HIST},) from histogram(); got "
            f"{hist.dtype} of shape {hist.shape}."
        )
    hist = hist.astype(np.int64, copy=False)
    total = int(hist.sum())
    if total <= 0:
        raise ValueError("'hist' is empty; run at least one randomization.")
    return hist, total


def _tail_p(hist: NDArray[np.int64], total: int) -> tuple[NDArray[np.float64], ...]:
    """p of a z in each bin: upper tail ``(1 + #{bin >= i}) / (1 + N)``, lower with ``<=``."""
    upper = np.cumsum(hist[::-1])[::-1]
    lower = np.cumsum(hist)
    return (1.0 + upper) / (1.0 + total), (1.0 + lower) / (1.0 + total)


def _signed_p(
    z: NDArray[np.float64], p_pos: NDArray[np.float64], p_neg: NDArray[np.float64]
) -> NDArray[np.float64]:
    p = np.where(z > 0, p_pos, p_neg)
    p[z == 0] = 1.0
    p[np.isnan(z)] = np.nan
    return p


def p_from_histogram(z: ArrayLike, hist: ArrayLike) -> NDArray[np.float64]:
    """One-tailed randomization p-value of each z against a binned null (docs/methods.md, section 5.2).

    ``p = (1 + #{null >= z}) / (1 + N)`` for ``z > 0`` and ``(1 + #{null <= z}) / (1 + N)``
    for ``z < 0``, with ``N = hist.sum()``. Counting is conservative: the whole bin holding
    ``z`` counts as beyond it (and the overflow beyond any positive z, the underflow beyond
    any negative z), so the result lies between the exact empirical p at ``z`` and at
    ``z -+ BIN_WIDTH``. ``z == 0`` gives ``p = 1`` (neither direction); NaN gives NaN.

    Parameters
    ----------
    z : array_like
        Observed SDM-Z, any shape.
    hist : array_like of int, shape (N_HIST,)
        Null histogram from :func:`~daskmeta.stats.null.histogram` or a
        :class:`~daskmeta.stats.null.NullSummary`.

    Returns
    -------
    ndarray of float64
        p-values, the shape of ``z``.
    """
    hist, total = _check_hist(hist)
    z = np.asarray(z, dtype=np.float64)
    index = bin_index(np.nan_to_num(z, nan=0.0))
    p_pos, p_neg = _tail_p(hist, total)
    return _signed_p(z, p_pos[index], p_neg[index])


def p_fwe(z: ArrayLike, max_z: ArrayLike, min_z: ArrayLike) -> NDArray[np.float64]:
    """Family-wise corrected voxel p-values from per-randomization extremes (docs/methods.md, section 5.3).

    ``(1 + #{max_b >= z}) / (1 + B)`` for ``z > 0``, ``(1 + #{min_b <= z}) / (1 + B)`` for
    ``z < 0``; ``z == 0`` gives 1 and NaN gives NaN. Exact (no binning).

    Parameters
    ----------
    z : array_like
        Observed SDM-Z, any shape.
    max_z, min_z : array_like, shape (B,)
        Per-randomization maximum and minimum z (:class:`~daskmeta.stats.null.NullSummary`).

    Returns
    -------
    ndarray of float64
        p-values, the shape of ``z``.

    References
    ----------
    Nichols & Holmes (2002).
    """
    max_z = np.sort(np.asarray(max_z, dtype=np.float64).ravel())
    min_z = np.sort(np.asarray(min_z, dtype=np.float64).ravel())
    if max_z.size == 0 or min_z.size == 0:
        raise ValueError("'max_z' and 'min_z' must hold at least one randomization each.")
    z = np.asarray(z, dtype=np.float64)
    n_pos = max_z.size - np.searchsorted(max_z, z, side="left")
    n_neg = np.searchsorted(min_z, z, side="right")
    return _signed_p(z, (1.0 + n_pos) / (1.0 + max_z.size), (1.0 + n_neg) / (1.0 + min_z.size))


def cluster_p_fwe(cluster_sizes: ArrayLike, max_cluster: ArrayLike) -> NDArray[np.float64]:
    """Family-wise corrected cluster p-values: ``(1 + #{max_b >= size}) / (1 + B)``.

    Parameters
    ----------
    cluster_sizes : array_like of int
        Observed cluster extents (voxels) of one direction, any shape.
    max_cluster : array_like of int, shape (B,)
        The largest cluster of that direction in each randomization
        (``NullSummary.max_cluster_pos`` or ``max_cluster_neg``).

    Returns
    -------
    ndarray of float64
        p-values, the shape of ``cluster_sizes``; a size of 0 gives 1.
    """
    max_cluster = np.sort(np.asarray(max_cluster).ravel())
    if max_cluster.size == 0:
        raise ValueError("'max_cluster' must hold at least one randomization.")
    sizes = np.asarray(cluster_sizes)
    n_ge = max_cluster.size - np.searchsorted(max_cluster, sizes, side="left")
    return np.asarray((1.0 + n_ge) / (1.0 + max_cluster.size), dtype=np.float64)


def _first_in_bin(target: int, guess: float) -> float:
    """Smallest float64 ``z`` with ``bin_index(z) >= target``, searched by ulps from ``guess``."""
    z = guess
    while bin_index(z) < target:
        z = float(np.nextafter(z, np.inf))
    while bin_index(np.nextafter(z, -np.inf)) >= target:
        z = float(np.nextafter(z, -np.inf))
    return z


def z_threshold_for_p(hist: ArrayLike, p: float) -> tuple[float, float]:
    """z thresholds at which the null's one-tailed p (of :func:`p_from_histogram`) reaches ``p``.

    Use them as cluster-forming thresholds inside randomizations (e.g. voxel ``p < 0.005``):
    for ``z > 0``, ``z >= z_pos`` exactly when ``p_from_histogram(z, hist) <= p``; for
    ``z < 0``, ``z <= z_neg`` exactly when it is ``<= p``.

    Parameters
    ----------
    hist : array_like of int, shape (N_HIST,)
        Null histogram.
    p : float
        One-tailed p threshold in (0, 1].

    Returns
    -------
    z_pos : float
        Positive threshold (``inf`` when no z reaches ``p`` with this many null values; the
        smallest positive float when every positive z does).
    z_neg : float
        Negative threshold (``-inf`` or the largest negative float likewise).
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"'p' must be in (0, 1]; {p} was provided.")
    hist, total = _check_hist(hist)
    p_pos, p_neg = _tail_p(hist, total)
    tiny = float(np.nextafter(0.0, 1.0))
    # p_pos is non-increasing with the bin: the first bin at or below p starts the tail.
    first = int(np.count_nonzero(p_pos > p))
    if first == N_HIST:
        z_pos = np.inf
    elif first == 0:
        z_pos = tiny
    else:
        z_pos = max(_first_in_bin(first, (first - 1 + _LO_INT) / BINS_PER_UNIT), tiny)
    # p_neg is non-decreasing: the last bin at or below p ends the lower tail.
    last = int(np.count_nonzero(p_neg <= p)) - 1
    if last < 0:
        z_neg = -np.inf
    elif last == N_HIST - 1:
        z_neg = -tiny
    else:
        edge = _first_in_bin(last + 1, (last + _LO_INT) / BINS_PER_UNIT)
        z_neg = min(float(np.nextafter(edge, -np.inf)), -tiny)
    return float(z_pos), float(z_neg)
