"""The cluster-extent null fused with Numba: one randomization in a few milliseconds.

One randomization of the cluster-extent null (see :func:`daskmeta.null.randomization.null_summary`)
relocates each study's peaks to uniform random mask voxels, recreates the study maps with the
isotropic kernel, pools them into SDM-Z and records the largest 26-connected cluster above and
below the voxel thresholds. :func:`cluster_null_block` computes exactly what
``daskmeta.null.randomization._cluster_block`` computes (the same draws, the same z maps bit for
bit, the same cluster sizes) without the ``(study, voxel)`` stack and without
``scipy.ndimage``:

- the peaks are drawn with the same ``numpy.random.Generator`` calls, study by study;
- the maps are pasted and pooled plane by plane by
  :meth:`daskmeta.stats.peak_kernel.KernelPaster.pooled_z` (:func:`daskmeta.stats._paste_jit.relocated_z`);
- the clusters are found by union-find over the mask's 26-neighbourhood
  (:func:`daskmeta.stats._paste_jit.largest_components`), equal to ``scipy.ndimage.label`` with a
  3x3x3 structure.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.model.grid import Mask, load_mask
from daskmeta.stats.null import N_HIST, NullSummary
from daskmeta.stats.peak_kernel import KernelPaster
from daskmeta.stats.sdm_model import variance_model

__all__ = [
    "Neighbourhood",
    "cluster_null_block",
    "largest_clusters",
    "neighbourhood",
    "paster",
    "relocated_peaks",
    "relocated_z",
]


class Neighbourhood(NamedTuple):
    """The 26-neighbourhood of a mask's voxels, for :func:`largest_clusters`.

    Attributes
    ----------
    padded_index : ndarray of int64, shape (n_voxels,)
        Flat index of each mask voxel in the grid padded by one voxel on every side.
    padded_lookup : ndarray of int64, shape (n_padded,)
        Voxel-vector position of each padded grid voxel (-1 off the mask), raveled.
    offsets : ndarray of int64, shape (13,)
        Flat offsets of the 13 neighbours that precede a voxel in C order.
    """

    padded_index: NDArray[np.int64]
    padded_lookup: NDArray[np.int64]
    offsets: NDArray[np.int64]


@functools.cache
def neighbourhood(mask_name: str) -> Neighbourhood:
    """The :class:`Neighbourhood` of mask ``mask_name`` (built once per process)."""
    mask = load_mask(mask_name)  # type: ignore[arg-type]
    padded = np.pad(mask.lookup, 1, constant_values=-1)
    shape = padded.shape
    padded_index = np.ravel_multi_index(tuple((mask.ijk + 1).T), shape).astype(np.int64)
    steps = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
    flat = (steps[:, 0] * shape[1] + steps[:, 1]) * shape[2] + steps[:, 2]
    return Neighbourhood(padded_index, np.ascontiguousarray(padded.ravel(), dtype=np.int64),
                         np.ascontiguousarray(flat[flat < 0], dtype=np.int64))


@functools.cache
def paster(mask_name: str, fwhm: float) -> KernelPaster:
    """The :class:`~daskmeta.stats.peak_kernel.KernelPaster` of a mask and FWHM, its row layout built."""
    paste = KernelPaster(load_mask(mask_name).lookup, fwhm)  # type: ignore[arg-type]
    paste.rows  # noqa: B018 -- build the layout once, here
    return paste


def largest_clusters(z: ArrayLike, thresholds: tuple[float, float], mask: Mask) -> tuple[int, int]:
    """Largest 26-connected clusters of ``z >= z_pos`` and of ``z <= z_neg`` (Numba).

    Equal to ``(largest_cluster(z >= z_pos, mask), largest_cluster(z <= z_neg, mask))`` of
    :func:`daskmeta.stats.labelling.largest_cluster` (NaN is in neither set).

    Parameters
    ----------
    z : array_like of float, shape (n_voxels,)
        A map on ``mask``'s voxel vector.
    thresholds : (float, float)
        ``(z_pos, z_neg)``.
    mask : Mask
        The mask of the voxel vector.

    Returns
    -------
    (int, int)
        Sizes in voxels (0 where no voxel passes).
    """
    from daskmeta.stats import _paste_jit as _paste_kernel

    z = np.ascontiguousarray(z, dtype=np.float64)
    if z.shape != (mask.n_voxels,):
        raise ValueError(f"z must have shape ({mask.n_voxels},) for mask {mask.name!r}; "
                         f"shape {z.shape} was provided")
    hood = neighbourhood(mask.name)
    work = np.empty((2, mask.n_voxels), dtype=np.int64)
    pos, neg = _paste_kernel.largest_components(
        z, float(thresholds[0]), float(thresholds[1]), hood.padded_index, hood.padded_lookup,
        hood.offsets, work[0], work[1])
    return int(pos), int(neg)


def relocated_peaks(
    rng: np.random.Generator, counts: NDArray[np.int64], peak_g: NDArray[np.float64], mask: Mask
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """Each study's peaks moved to uniform random mask voxels, as ``_cluster_block`` draws them.

    Study ``s`` draws ``rng.integers(0, n_voxels, counts[s])`` in study order (one call per
    study, none skipped) and keeps its effects ``peak_g[s, :counts[s]]``.

    Returns
    -------
    peak_ijk : ndarray of int64, shape (n_peaks, 3)
    g : ndarray of float64, shape (n_peaks,)
    study_start : ndarray of int64, shape (n_studies + 1,)
        Study ``s`` owns peaks ``study_start[s]:study_start[s + 1]``.
    """
    n_voxels = mask.n_voxels
    draws = [rng.integers(0, n_voxels, count) for count in counts]
    study_start = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=study_start[1:])
    g = np.empty(int(study_start[-1]))
    for study, count in enumerate(counts):
        g[study_start[study]:study_start[study + 1]] = peak_g[study, :count]
    voxels = np.concatenate(draws) if draws else np.zeros(0, dtype=np.int64)
    return np.ascontiguousarray(mask.ijk[voxels], dtype=np.int64), g, study_start


def relocated_z(
    rng: np.random.Generator, peak_g: NDArray[np.float64], sampling: NDArray[np.float64],
    constant: NDArray[np.float64], mask_name: str, fwhm: float,
) -> NDArray[np.float64]:
    """SDM-Z of one randomization of the cluster null (the map ``_cluster_block`` thresholds).

    Parameters
    ----------
    rng : numpy.random.Generator
        The randomization's generator (``default_rng`` of its seed sequence, stream 1).
    peak_g : ndarray of float64, shape (n_studies, n_peaks)
        Peak effects, NaN-padded after each study's peaks.
    sampling, constant : ndarray of float64, shape (n_studies,)
        The variance model (:func:`~daskmeta.stats.sdm_model.variance_model`).
    mask_name : str
        The analysis mask.
    fwhm : float
        The isotropic kernel's FWHM in mm.

    Returns
    -------
    ndarray of float64, shape (n_voxels,)
    """
    peak_g = np.asarray(peak_g, dtype=np.float64)
    counts = np.isfinite(peak_g).sum(1)
    peaks = relocated_peaks(rng, counts, peak_g, load_mask(mask_name))  # type: ignore[arg-type]
    return paster(mask_name, float(fwhm)).pooled_z(*peaks, sampling, constant)


def cluster_null_block(
    peak_g: np.ndarray, n1: np.ndarray, n2: np.ndarray, seed: int, name: str, start: int,
    stop: int, mask_name: str, fwhm: float, thresholds: tuple[float, float],
) -> NullSummary:
    """Largest clusters of randomizations ``start..stop-1`` of the cluster-extent null (fused).

    A drop-in replacement of ``daskmeta.null.randomization._cluster_block`` (same arguments, same
    :class:`~daskmeta.stats.null.NullSummary`, same cluster sizes for the same seeds).

    Parameters
    ----------
    peak_g : ndarray, shape (n_studies, n_peaks)
        Each study's peak Hedges g, NaN-padded.
    n1, n2 : ndarray, shape (n_studies,)
        Sample sizes (``n2`` NaN for one-sample studies).
    seed : int
        The analysis seed.
    name : str
        The analysis name.
    start, stop : int
        The randomizations of the block.
    mask_name : str
        The analysis mask.
    fwhm : float
        The kernel FWHM in mm.
    thresholds : (float, float)
        ``(z_pos, z_neg)``: clusters of ``z >= z_pos`` and of ``z <= z_neg``.

    Returns
    -------
    NullSummary
        Empty histogram and max/min z; ``max_cluster_pos``/``max_cluster_neg`` filled.
    """
    from daskmeta.null.seeds import randomization_seeds

    mask = load_mask(mask_name)  # type: ignore[arg-type]
    paste = paster(mask_name, float(fwhm))
    peak_g = np.asarray(peak_g, dtype=np.float64)
    sampling, constant = variance_model(n1, n2)
    counts = np.isfinite(peak_g).sum(1)
    n = stop - start
    largest = np.zeros((2, n), dtype=np.int64)
    for row, sequence in enumerate(randomization_seeds(seed, name, start, stop, stream=1)):
        rng = np.random.default_rng(sequence)
        z = paste.pooled_z(*relocated_peaks(rng, counts, peak_g, mask), sampling, constant)
        largest[:, row] = largest_clusters(z, thresholds, mask)
    empty = np.zeros(n)
    return NullSummary(np.zeros(N_HIST, np.int64), empty, empty, largest[0], largest[1])
