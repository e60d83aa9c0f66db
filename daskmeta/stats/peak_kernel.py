"""The AES-SDM peak kernel with a tissue-aware anisotropic distance (docs/methods.md, section 3).

Pure NumPy/SciPy: no Dask, no files. The kernel of a peak p at voxel v is
``K = exp(-vd^2 / (2 sigma^2))`` with the virtual distance
``vd^2 = (1 - a) d^2 + a D^2``: ``d`` the Euclidean distance, ``D`` the geodesic distance on
the 26-neighbour lattice of brain voxels whose steps are lengthened where tissue changes
(the daskmeta stand-in for SDM's correlation templates), ``a`` the anisotropy.

References
----------
Radua J et al. (2014). Anisotropic kernels for coordinate-based meta-analyses of
neuroimaging studies. Front Psychiatry 5:13.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse import csgraph

from daskmeta.errors import plain
from daskmeta.model.grid import VOXEL_SIZE_MM

#: Peaks per geodesic search in :func:`peak_kernels`.
_PEAKS_PER_SEARCH = 4
#: Kernel values below this are set to zero; it fixes the kernel's radius (docs/methods.md, section 3.2).
KERNEL_FLOOR = 1e-4


def sigma_from_fwhm(fwhm: float) -> float:
    """Gaussian ``sigma = FWHM / sqrt(8 ln 2)`` in mm."""
    return float(fwhm) / np.sqrt(8.0 * np.log(2.0))


def kernel_radius(fwhm: float, floor: float = KERNEL_FLOOR) -> float:
    """Virtual distance (mm) beyond which the kernel drops below ``floor``."""
    return sigma_from_fwhm(fwhm) * np.sqrt(2.0 * np.log(1.0 / floor))


def _half_offsets() -> list[tuple[int, int, int]]:
    """The 13 neighbour offsets of one half of the 26-neighbourhood."""
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=3) if o != (0, 0, 0)]
    return [o for o in offsets if o > (0, 0, 0)]


def lattice_graph(
    brain: NDArray[np.bool_], tissue: NDArray[np.floating], beta: float = 1.0
) -> tuple[sparse.csr_matrix, NDArray[np.int64]]:
    """The weighted 26-neighbour lattice graph of the brain voxels.

    A step from voxel u to neighbour w has length ``|u - w|_mm * (1 + beta * TV(u, w))``,
    ``TV`` being half the L1 distance between their (grey, white, CSF) probabilities.

    Parameters
    ----------
    brain : ndarray of bool, shape (91, 109, 91)
        The voxels that are nodes of the graph.
    tissue : ndarray, shape (3, 91, 109, 91)
        Grey, white and CSF probabilities.
    beta : float
        Weight of the tissue change in a step's length (docs/methods.md, section 3.3, chosen here: 1).

    Returns
    -------
    graph : scipy.sparse.csr_matrix
        Symmetric (n_nodes, n_nodes) matrix of step lengths in mm.
    node_of : ndarray of int64, shape (91, 109, 91)
        Node index of each brain voxel, -1 elsewhere.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0; {plain(beta)!r} was provided")
    node_of = np.full(brain.shape, -1, dtype=np.int64)
    node_of[brain] = np.arange(int(brain.sum()))
    rows, cols, lengths = [], [], []
    nx, ny, nz = brain.shape
    for oi, oj, ok in _half_offsets():
        src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip((oi, oj, ok), (nx, ny, nz), strict=True))
        dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip((oi, oj, ok), (nx, ny, nz), strict=True))
        both = brain[src] & brain[dst]
        a, b = node_of[src][both], node_of[dst][both]
        here, there = tissue[(slice(None), *src)][:, both], tissue[(slice(None), *dst)][:, both]
        tv = 0.5 * np.abs(here - there).sum(0)
        step = VOXEL_SIZE_MM * np.sqrt(oi * oi + oj * oj + ok * ok)
        rows += [a, b]
        cols += [b, a]
        lengths += [step * (1.0 + beta * tv)] * 2
    graph = sparse.csr_matrix(
        (np.concatenate(lengths), (np.concatenate(rows), np.concatenate(cols))),
        shape=(node_of.max() + 1,) * 2,
    )
    return graph, node_of


def nearest_node(ijk: NDArray[np.int64], node_of: NDArray[np.int64]) -> tuple[NDArray, NDArray]:
    """Node index of each voxel, or of the nearest brain voxel for voxels off the brain.

    Returns the node indices and the Euclidean gap in mm between the voxel and that node
    (0 for voxels on the brain).
    """
    ijk = np.atleast_2d(ijk)
    nodes = node_of[tuple(ijk.T)]
    gaps = np.zeros(len(ijk))
    off = np.flatnonzero(nodes < 0)
    if off.size:
        brain_ijk = np.argwhere(node_of >= 0)
        for n in off:  # rare: a peak outside the brain; one distance computation each
            dist2 = ((brain_ijk - ijk[n]) ** 2).sum(1)
            best = int(np.argmin(dist2))
            nodes[n] = node_of[tuple(brain_ijk[best])]
            gaps[n] = VOXEL_SIZE_MM * np.sqrt(dist2[best])
    return nodes, gaps


def peak_kernels(
    peak_ijk: NDArray[np.int64],
    target_ijk: NDArray[np.int64],
    fwhm: float = 20.0,
    anisotropy: float = 1.0,
    graph: sparse.csr_matrix | None = None,
    node_of: NDArray[np.int64] | None = None,
) -> NDArray[np.float64]:
    """Kernel values of each peak at each target voxel, shape (n_peaks, n_targets).

    Parameters
    ----------
    peak_ijk : ndarray (n_peaks, 3)
        Peak voxels on the grid (may lie off the brain).
    target_ijk : ndarray (n_targets, 3)
        Voxels at which to evaluate the kernel (the analysis mask; all on the brain when
        ``anisotropy > 0``).
    fwhm : float
        Full width at half maximum in mm (SDM default 20).
    anisotropy : float
        ``a`` in [0, 1]; 0 is the isotropic Gaussian and needs no graph.
    graph, node_of
        From :func:`lattice_graph`; required when ``anisotropy > 0``.

    Notes
    -----
    Values below :data:`KERNEL_FLOOR` are zero. The geodesic search stops at
    ``R / sqrt(a)``, the largest ``D`` that can keep ``vd`` within the kernel radius ``R``.
    A peak off the brain starts its geodesic search at the nearest brain voxel and adds
    the straight gap to it (chosen here).
    """
    if not 0.0 <= anisotropy <= 1.0:
        raise ValueError(f"anisotropy must be in [0, 1]; {plain(anisotropy)!r} was provided")
    if fwhm <= 0:
        raise ValueError(f"fwhm must be > 0 mm; {plain(fwhm)!r} was provided")
    peak_ijk = np.atleast_2d(np.asarray(peak_ijk, dtype=np.int64))
    target_ijk = np.asarray(target_ijk, dtype=np.int64)
    out = np.zeros((len(peak_ijk), len(target_ijk)))
    if len(peak_ijk) == 0:
        return out
    sigma = sigma_from_fwhm(fwhm)
    radius = kernel_radius(fwhm)
    if anisotropy == 0.0:
        np.exp(-_euclidean2(peak_ijk, target_ijk) / (2.0 * sigma**2), out=out)
    else:
        if graph is None or node_of is None:
            raise ValueError("an anisotropic kernel needs the lattice graph and node_of")
        sources, gaps = nearest_node(peak_ijk, node_of)
        target_nodes = node_of[tuple(target_ijk.T)]
        if (target_nodes < 0).any():
            raise ValueError("target voxels must lie on the brain for an anisotropic kernel")
        limit = radius / np.sqrt(anisotropy)
        # a few peaks at a time: the (peaks, nodes) arrays stay small (2.5x faster than all at once)
        for first in range(0, len(peak_ijk), _PEAKS_PER_SEARCH):
            rows = slice(first, first + _PEAKS_PER_SEARCH)
            geodesic = csgraph.dijkstra(graph, directed=True, indices=sources[rows], limit=limit)
            big_d2 = (geodesic[:, target_nodes] + gaps[rows, None]) ** 2
            # at a = 1, (1 - a) d^2 + a D^2 is D^2 exactly (0 d^2 = 0 for finite d): skip d^2
            vd2 = big_d2 if anisotropy == 1.0 else (
                (1.0 - anisotropy) * _euclidean2(peak_ijk[rows], target_ijk) + anisotropy * big_d2)
            np.exp(-vd2 / (2.0 * sigma**2), out=out[rows])
    out[out < KERNEL_FLOOR] = 0.0
    return out


def _euclidean2(peak_ijk: NDArray[np.int64], target_ijk: NDArray[np.int64]) -> NDArray[np.float64]:
    """Squared Euclidean distances in mm^2, shape (n_peaks, n_targets)."""
    diff = (target_ijk[None, :, :] - peak_ijk[:, None, :]).astype(np.float64)
    return VOXEL_SIZE_MM**2 * np.einsum("pvk,pvk->pv", diff, diff)


def combine_peaks(kernels: NDArray[np.float64], peak_g: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
    """Combine a study's peaks into its effect map and the kernel envelope ``W``.

    ``effect = sum_i K_i (K_i g_i) / sum_i K_i`` (0 where every ``K_i < 1e-8``) and
    ``W = max_i K_i`` (docs/methods.md, section 3.4, chosen here): never above the largest peak, equal
    to ``g_i`` at an isolated peak, cancelling where positive and negative peaks meet.
    """
    n_targets = kernels.shape[1]
    if kernels.shape[0] == 0:
        return np.zeros(n_targets), np.zeros(n_targets)
    total = kernels.sum(0)
    weighted = (kernels**2 * np.asarray(peak_g, dtype=np.float64)[:, None]).sum(0)
    reached = kernels.max(0) >= 1e-8
    effect = np.divide(weighted, total, out=np.zeros(n_targets), where=reached)
    return effect, kernels.max(0)



def isotropic_offsets(fwhm: float = 20.0) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Voxel offsets (n, 3) within the kernel radius and the isotropic kernel at each.

    Pasting these around a peak gives :func:`peak_kernels` with ``anisotropy=0`` exactly,
    without computing distances to every target voxel.
    """
    sigma = sigma_from_fwhm(fwhm)
    reach = int(np.floor(kernel_radius(fwhm) / VOXEL_SIZE_MM))
    span = np.arange(-reach, reach + 1)
    offsets = np.stack(np.meshgrid(span, span, span, indexing="ij"), -1).reshape(-1, 3)
    values = np.exp(-(VOXEL_SIZE_MM**2) * (offsets**2).sum(1) / (2.0 * sigma**2))
    keep = values >= KERNEL_FLOOR
    return offsets[keep], values[keep]


class PasteRows(NamedTuple):
    """The grid-row layout of a mask and an isotropic kernel (:attr:`KernelPaster.rows`).

    Attributes
    ----------
    before : ndarray of int64, shape (nx, ny, nz + 1)
        Mask voxels preceding each grid voxel in C order; the mask voxels of row ``(i, j)``
        from ``k0`` to ``k1`` are the vector positions ``before[i, j, k0]:before[i, j, k1 + 1]``.
    mask_k : ndarray of int64, shape (n_voxels,)
        Third grid index of each mask voxel.
    half : ndarray of int64, shape (2 reach + 1, 2 reach + 1)
        Half length along ``k`` of the kernel's support in offset row ``(di, dj)`` (-1: none).
    table : ndarray of float64, shape (2 reach + 1,) * 3
        The kernel's value at each offset (0 off its support).
    reach : int
        Largest offset along any axis.
    """

    before: NDArray[np.int64]
    mask_k: NDArray[np.int64]
    half: NDArray[np.int64]
    table: NDArray[np.float64]
    reach: int


class KernelPaster:
    """Effect maps with the isotropic kernel by pasting kernel patches (fast, exact).

    The same kernel as :func:`peak_kernels` with ``anisotropy=0`` and the same combination
    rule as :func:`combine_peaks` (``sum K^2 g / sum K``). Calling it pastes one study by flat
    indexing into the mask's lookup volume padded by the kernel's reach and two weighted
    ``bincount`` calls (the reference). :meth:`paste_all` pastes many studies at once and
    :meth:`pooled_z` pastes and pools them into SDM-Z without a ``(study, voxel)`` stack, both
    with the Numba kernels of :mod:`daskmeta.stats._paste_jit` over the grid rows of the mask
    (:attr:`rows`; needs a lookup numbering the mask in C order, as ``Mask.lookup`` does): the
    same numbers bit for bit, several times faster.

    Parameters
    ----------
    lookup : ndarray of int64, shape (91, 109, 91)
        The mask's voxel-vector position of each grid voxel (-1 outside), ``Mask.lookup``.
    fwhm : float
        Kernel FWHM in mm.
    """

    def __init__(self, lookup: NDArray[np.int64], fwhm: float = 20.0) -> None:
        offsets, self.values = isotropic_offsets(fwhm)
        self.reach = int(np.abs(offsets).max())
        padded = np.pad(lookup, self.reach, constant_values=-1)
        self.shape = padded.shape
        self.flat_lookup = padded.ravel()
        self.flat_offsets = np.ravel_multi_index((offsets + self.reach).T, self.shape) - np.ravel_multi_index(
            (self.reach,) * 3, self.shape)
        self.n_voxels = int(lookup.max()) + 1
        self._lookup = np.asarray(lookup)
        self._offsets = offsets

    @functools.cached_property
    def rows(self) -> PasteRows:
        """The row layout of the mask and the kernel used by the Numba paths (built once).

        Raises
        ------
        ValueError
            When the lookup's voxel-vector positions are not in C order of the grid (the rows
            of the grid would not be runs of the vector).
        """
        lookup = self._lookup
        inside = lookup >= 0
        if not np.array_equal(lookup[inside], np.arange(int(inside.sum()))):
            raise ValueError("the lookup's positions must number the mask voxels in C order of the grid")
        nx, ny, nz = lookup.shape
        count = np.concatenate([[0], np.cumsum(inside.ravel(), dtype=np.int64)])
        starts = (np.arange(nx)[:, None, None] * ny + np.arange(ny)[None, :, None]) * nz
        before = count[starts + np.arange(nz + 1)[None, None, :]]
        reach = self.reach
        side = 2 * reach + 1
        table = np.zeros((side,) * 3)
        table[tuple((self._offsets + reach).T)] = self.values
        half = np.full((side, side), -1, dtype=np.int64)
        np.maximum.at(half, tuple((self._offsets[:, :2] + reach).T), np.abs(self._offsets[:, 2]))
        present = half >= 0
        if not np.array_equal((table > 0).sum(2)[present], 2 * half[present] + 1):
            raise AssertionError("the kernel's support along k is not a run centred on the peak")
        return PasteRows(before, np.argwhere(inside)[:, 2].astype(np.int64), half, table, reach)

    def paste_all(
        self, peak_ijk: NDArray[np.int64], peak_g: NDArray[np.float64], study_start: NDArray[np.int64],
        out: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]:
        """The effect maps of several studies at once (Numba), each equal to :meth:`__call__`.

        Parameters
        ----------
        peak_ijk : ndarray of int, shape (n_peaks, 3)
            All studies' peaks on the grid, study after study.
        peak_g : ndarray of float, shape (n_peaks,)
            Their Hedges g.
        study_start : ndarray of int, shape (n_studies + 1,)
            Study ``s`` owns peaks ``study_start[s]:study_start[s + 1]`` (0 first, ``n_peaks``
            last; a study may own none).
        out : ndarray of float64, shape (n_studies, n_voxels), optional
            Where to write the maps (C-contiguous).

        Returns
        -------
        ndarray of float64, shape (n_studies, n_voxels)
            Row ``s`` equals ``self(peak_ijk[a:b], peak_g[a:b])`` bit for bit: each voxel
            adds its peaks' terms in peak order, as the ``bincount`` of :meth:`__call__` does.
        """
        from daskmeta.stats import _paste_jit as _paste_kernel

        peak_ijk, peak_g, study_start = self._checked(peak_ijk, peak_g, study_start)
        shape = (len(study_start) - 1, self.n_voxels)
        if out is None:
            out = np.empty(shape)
        if out.shape != shape or out.dtype != np.float64 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float64 array of shape {shape}")
        r = self.rows
        _paste_kernel.paste_studies(peak_ijk, peak_g, study_start, r.before, r.mask_k, r.half,
                                    r.table, r.reach, out, np.empty(self.n_voxels))
        return out

    def pooled_z(
        self, peak_ijk: NDArray[np.int64], peak_g: NDArray[np.float64], study_start: NDArray[np.int64],
        sampling: NDArray[np.float64], constant: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """SDM-Z of the studies' pasted maps, fused (Numba; no ``(study, voxel)`` stack).

        Equals ``daskmeta.stats.sdm_model.pooled_z(self.paste_all(...), sampling, constant)``
        bit for bit, several times faster (see :mod:`daskmeta.stats._paste_jit`).

        Parameters
        ----------
        peak_ijk, peak_g, study_start
            As in :meth:`paste_all`.
        sampling, constant : ndarray of float64, shape (n_studies,)
            The variance model ``v = a + c g^2`` of each study
            (:func:`~daskmeta.stats.sdm_model.variance_model`).

        Returns
        -------
        ndarray of float64, shape (n_voxels,)
        """
        from daskmeta.stats import _paste_jit as _paste_kernel

        peak_ijk, peak_g, study_start = self._checked(peak_ijk, peak_g, study_start)
        sampling = np.ascontiguousarray(sampling, dtype=np.float64)
        constant = np.ascontiguousarray(constant, dtype=np.float64)
        if sampling.shape != (len(study_start) - 1,) or constant.shape != sampling.shape:
            raise ValueError("sampling and constant must hold one value per study")
        r = self.rows
        out = np.empty(self.n_voxels)
        _paste_kernel.relocated_z(peak_ijk, peak_g, study_start, r.before, r.mask_k, r.half, r.table,
                                  r.reach, sampling, constant, out)
        return out

    @staticmethod
    def _checked(peak_ijk: NDArray, peak_g: NDArray, study_start: NDArray) -> tuple[NDArray, ...]:
        peak_ijk = np.ascontiguousarray(np.asarray(peak_ijk, dtype=np.int64).reshape(-1, 3))
        peak_g = np.ascontiguousarray(peak_g, dtype=np.float64).ravel()
        study_start = np.ascontiguousarray(study_start, dtype=np.int64)
        if (len(peak_g) != len(peak_ijk) or study_start.ndim != 1 or len(study_start) < 1
                or study_start[0] != 0 or study_start[-1] != len(peak_g)
                or np.any(np.diff(study_start) < 0)):
            raise ValueError("study_start must rise from 0 to the number of peaks, one g per peak")
        return peak_ijk, peak_g, study_start

    def __call__(self, peak_ijk: NDArray[np.int64], peak_g: NDArray[np.float64]) -> NDArray[np.float64]:
        """The effect map (n_voxels,) of peaks on the grid with Hedges g values."""
        if len(peak_ijk) == 0:
            return np.zeros(self.n_voxels)
        centres = np.ravel_multi_index((np.asarray(peak_ijk) + self.reach).T, self.shape)
        position = self.flat_lookup[centres[:, None] + self.flat_offsets[None, :]]
        hit = position >= 0
        kernel = np.broadcast_to(self.values, position.shape)[hit]
        g = np.broadcast_to(np.asarray(peak_g, dtype=np.float64)[:, None], position.shape)[hit]
        position = position[hit]
        total = np.bincount(position, weights=kernel, minlength=self.n_voxels)
        weighted = np.bincount(position, weights=kernel * kernel * g, minlength=self.n_voxels)
        return np.divide(weighted, total, out=np.zeros(self.n_voxels), where=total > 0)
