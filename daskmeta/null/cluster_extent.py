"""The cluster-extent null with Numba: one randomization in a few milliseconds (docs/methods.md, section 5.4).

One randomization of the cluster-extent null (see :func:`daskmeta.null.randomization.null_summary`)
relocates each study's peaks to uniform random mask voxels, recreates the study maps with the
isotropic kernel, pools them into SDM-Z and records the largest 26-connected cluster above and
below the voxel thresholds. Four implementations give the same cluster sizes for the same seeds:

- ``daskmeta.null.randomization._cluster_block``: the NumPy/SciPy reference (``KernelPaster``
  with ``bincount``, :func:`~daskmeta.stats.sdm_model.pooled_z` of the ``(study, voxel)`` stack,
  ``scipy.ndimage.label``);
- :func:`cluster_null_block_fused`: the same z maps bit for bit, pasted and pooled plane by plane
  (:meth:`daskmeta.stats.peak_kernel.KernelPaster.pooled_z`), labelled by union-find over the
  mask (:func:`largest_clusters`);
- :func:`cluster_null_block_spans`: only the *decisions* ``z >= z_pos`` and ``z <= z_neg`` are
  needed, and only a few per cent of the voxels pass. It pools sparsely over the mask's span
  layout and certifies each decision (:func:`daskmeta.stats._sparse_null_jit.classify_randomization`),
  then labels the passing voxels only (:func:`daskmeta.stats._sparse_null_jit.largest_listed_component`);
- :func:`cluster_null_block` (what the null graph runs): the same certified decisions, cell by
  cell after the screen of cells (:func:`daskmeta.null.cells.cell_null` with the isotropic
  kernel's records relative to its peak's cell, :func:`daskmeta.null.cells.relative_cells`);
  the span null is its fallback where the screen's premises fail.

**Why the decisions are the reference's.** For each voxel, the reference z is a function of the
studies' effects ``y_s`` (pasted in peak order) through the sums ``sum w``, ``sum w y``,
``sum w y^2`` (``sum w^2`` too where ``tau2 > 0`` is possible) accumulated in study order. The fast
pass sums the same terms relative to a zero effect, only where a study's kernels reach (a study
that does not reach a voxel has ``y = 0``, ``w = w_0 = 1 / a``, and adds nothing to the other
sums), computes each study's terms with one division instead of two, and adds ``sum_s w_0,s``
once. Each of its three sums differs from the reference's by rounding only: at most about
``(2k + 20) u`` times ``sum_s w_0,s``, ``sqrt(sum w sum w y^2)`` and ``sum w y^2`` (recursive
summation bound, Higham 2002, section 4.2; ``u = 2^-53``; the per-study terms agree to ``16 u``
relative; ``w <= w_0`` because ``c >= 0``; Cauchy-Schwarz gives ``sum |w y| <= sqrt(sum w sum w
y^2)``). Propagated to ``z = sum w y / sqrt(sum w)`` and to the one-pass Q test of
:func:`daskmeta.stats._pooling_jit.finish`, this gives error bounds proportional to
``(k + 4) u``; the fast pass uses them with the factor ``1e-12 (k + 4)`` (over 1000 times larger).
A voxel whose fast z lies beyond its bound from both thresholds and whose Q test certainly
passes (``tau2 = 0``, so the reference z is the fixed-effect one the fast pass estimates) has the
reference's decisions; every other mask voxel (about 0.3 % of them: those where ``tau2 > 0`` is
possible, and the few near a threshold) is recomputed with the reference arithmetic, operation
for operation (:func:`daskmeta.stats._sparse_null_jit.exact_voxel_z`). The tests compare the passing
sets and the cluster sizes with both references over many randomizations, including thresholds
set exactly at voxels' z values.

References
----------
Higham NJ (2002). Accuracy and Stability of Numerical Algorithms, 2nd ed. SIAM (rounding-error
bounds of recursive summation).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.model.grid import Mask, load_mask
from daskmeta.stats.null import N_HIST, NullSummary, clipped_extremes
from daskmeta.stats.peak_kernel import KernelPaster
from daskmeta.stats.sdm_model import variance_model

__all__ = [
    "Neighbourhood",
    "SpanLayout",
    "cluster_null_block",
    "cluster_null_block_fused",
    "cluster_null_block_spans",
    "flat_peaks",
    "largest_clusters",
    "neighbourhood",
    "paster",
    "relocated_classes",
    "relocated_peaks",
    "relocated_z",
    "span_layout",
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


class SpanLayout(NamedTuple):
    """The span layout of a mask and an isotropic kernel, for the certified null (:func:`span_layout`).

    Each grid row ``(i, j)`` holding mask voxels is stored, within its plane ``i``, as the
    contiguous run of ``k`` from its first to its last mask voxel (off-mask voxels between them
    included: 234,040 elements for the 179,890 grey-matter voxels) followed by
    :data:`daskmeta.stats._sparse_null_jit.ROW_SPARE` spare elements, so that a kernel row clipped to
    the run and rounded up to whole vectors of 8 values, and the blocks of terms computed over
    it, land inside the row's storage.

    Attributes
    ----------
    row_info : ndarray of int64, shape (nx, ny, 3)
        Of each grid row: its first element in its plane's layout (-1: no mask voxel), the
        ``k`` of its first and of its last mask voxel.
    plane_size : ndarray of int64, shape (nx,)
        Elements of each plane's layout.
    reach_j : ndarray of int64, shape (2 reach + 1,)
        Largest ``|dj|`` of the kernel's support in each offset plane ``di``.
    tab1 : ndarray of float64, shape ((2 reach + 1)^2 L,)
        The kernel ``K`` along ``k`` in each offset row ``(di, dj)``, from offset ``-reach``,
        zero beyond ``+reach`` (``L = 2 reach + 8`` rounded up to a multiple of 8).
    """

    row_info: NDArray[np.int64]
    plane_size: NDArray[np.int64]
    reach_j: NDArray[np.int64]
    tab1: NDArray[np.float64]


@functools.cache
def span_layout(mask_name: str, fwhm: float) -> SpanLayout:
    """The :class:`SpanLayout` of a mask and FWHM (built once per process)."""
    from daskmeta.stats._sparse_null_jit import ROW_SPARE

    rows = paster(mask_name, fwhm).rows
    inside = load_mask(mask_name).lookup >= 0  # type: ignore[arg-type]
    nz = inside.shape[2]
    present = inside.any(2)
    first = np.where(present, inside.argmax(2), 0)
    last = np.where(present, nz - 1 - inside[:, :, ::-1].argmax(2), -1)
    stored = np.where(present, last - first + 1 + ROW_SPARE, 0)
    row_start = np.where(present, np.cumsum(stored, axis=1) - stored, -1)
    reach = rows.reach
    side = 2 * reach + 1
    length = -(-(2 * reach + 8) // 8) * 8
    tab1 = np.zeros((side, side, length))
    tab1[:, :, :side] = rows.table
    reach_j = np.array([np.abs(np.flatnonzero(row >= 0) - reach).max(initial=-1) for row in rows.half],
                       dtype=np.int64)
    return SpanLayout(np.ascontiguousarray(np.stack([row_start, first, last], -1), dtype=np.int64),
                      stored.sum(1).astype(np.int64), reach_j, tab1.ravel())


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
    study, none skipped) and keeps its effects ``peak_g[s, :counts[s]]``. Those calls are made
    as one ``rng.integers(0, n_voxels, counts.sum())``: for a range below ``2^32`` NumPy draws
    each integer from the bit generator's 32-bit stream (Lemire's method, no buffer kept between
    calls other than the bit generator's own), so one call returns the concatenation of the
    per-study calls (the tests hold it to them), 20 times faster.

    Returns
    -------
    peak_ijk : ndarray of int64, shape (n_peaks, 3)
    g : ndarray of float64, shape (n_peaks,)
    study_start : ndarray of int64, shape (n_studies + 1,)
        Study ``s`` owns peaks ``study_start[s]:study_start[s + 1]``.
    """
    study_start = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=study_start[1:])
    g = np.empty(int(study_start[-1]))
    for study, count in enumerate(counts):
        g[study_start[study]:study_start[study + 1]] = peak_g[study, :count]
    voxels = rng.integers(0, mask.n_voxels, int(study_start[-1]))
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


def flat_peaks(peak_g: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """All studies' finite peak effects of a NaN-padded ``(study, peak)`` array, study after
    study, and the study of each (the order in which the nulls relocate them)."""
    peak_g = np.asarray(peak_g, dtype=np.float64)
    counts = np.isfinite(peak_g).sum(1)
    g = np.concatenate([peak_g[s, :count] for s, count in enumerate(counts)] + [np.zeros(0)])
    return g, np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def _certifiable(sampling: NDArray[np.float64], constant: NDArray[np.float64],
                 g: NDArray[np.float64]) -> bool:
    """Whether the certified pass's error bounds hold: ``a > 0``, ``c >= 0``, all finite."""
    return bool(np.all(np.isfinite(sampling)) and np.all(sampling > 0) and np.all(np.isfinite(constant))
                and np.all(constant >= 0) and np.all(np.isfinite(g)))


def _layout_arguments(mask_name: str, fwhm: float) -> tuple:
    """The span layout and kernel tables as :mod:`daskmeta.stats._sparse_null_jit` takes them."""
    layout = span_layout(mask_name, float(fwhm))
    rows = paster(mask_name, float(fwhm)).rows
    return (layout.row_info.ravel(), layout.plane_size, rows.half.ravel(), layout.reach_j,
            layout.tab1, rows.table, rows.reach, rows.before)


def _tolerance(n_studies: int) -> float:
    """Relative factor of the certified pass's error bounds: over 1000 times the rounding bound."""
    return 1e-12 * (n_studies + 4)


def relocated_classes(
    peak_ijk: NDArray[np.int64], g: NDArray[np.float64], study_start: NDArray[np.int64],
    sampling: NDArray[np.float64], constant: NDArray[np.float64], mask_name: str, fwhm: float,
    thresholds: tuple[float, float],
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """The voxels whose SDM-Z passes each threshold, certified (the sets :func:`cluster_null_block` labels).

    Equal to ``(flatnonzero(z >= z_pos), flatnonzero(z <= z_neg))`` of ``z =
    paster(mask_name, fwhm).pooled_z(peak_ijk, g, study_start, sampling, constant)``, without
    computing ``z`` where the decision is certain (see the module notes).

    Parameters
    ----------
    peak_ijk : ndarray of int, shape (n_peaks, 3)
        The peaks on the grid, study after study (as :func:`relocated_peaks` returns them).
    g : ndarray of float, shape (n_peaks,)
    study_start : ndarray of int, shape (n_studies + 1,)
    sampling, constant : ndarray of float64, shape (n_studies,)
        The variance model (``a > 0``, ``c >= 0``).
    mask_name : str
    fwhm : float
    thresholds : (float, float)
        ``(z_pos, z_neg)``.

    Returns
    -------
    pos, neg : ndarray of int64
        Voxel-vector positions, increasing.
    n_exact : int
        Voxels recomputed with the reference arithmetic.
    """
    from daskmeta.stats import _sparse_null_jit as _sparse_kernel

    peak_ijk, g, study_start = KernelPaster._checked(peak_ijk, g, study_start)
    sampling = np.ascontiguousarray(sampling, dtype=np.float64)
    constant = np.ascontiguousarray(constant, dtype=np.float64)
    if not _certifiable(sampling, constant, g):
        raise ValueError("the certified pass needs finite effects, a > 0 and c >= 0")
    mask = load_mask(mask_name)  # type: ignore[arg-type]
    width = int(max(span_layout(mask_name, float(fwhm)).plane_size.max(), 1))
    k = len(sampling)
    study_of = np.repeat(np.arange(k, dtype=np.int64), np.diff(study_start))
    pos = np.empty(mask.n_voxels, np.int64)
    neg = np.empty(mask.n_voxels, np.int64)
    n_peaks = len(g)
    n_pos, n_neg, n_exact = _sparse_kernel.classify_randomization(
        peak_ijk, g, study_of, sampling, constant, constant / sampling, float(np.sum(1.0 / sampling)),
        float(thresholds[0]), float(thresholds[1]), _tolerance(k), *_layout_arguments(mask_name, fwhm),
        np.empty(n_peaks, np.int64), np.empty(n_peaks, np.int64), np.zeros(width), np.zeros(width),
        np.zeros((3, width)), np.zeros(mask.lookup.shape[2], np.int8),
        np.zeros((2, mask.lookup.shape[2])), np.full(mask.lookup.shape[1], width, np.int64),
        np.zeros(mask.lookup.shape[1], np.int64), np.empty(k), np.empty(k), np.empty(k), pos, neg,
        np.zeros(2))
    return pos[:n_pos].copy(), neg[:n_neg].copy(), int(n_exact)


def cluster_null_block(
    peak_g: np.ndarray, n1: np.ndarray, n2: np.ndarray, seed: int, name: str, start: int,
    stop: int, mask_name: str, fwhm: float, thresholds: tuple[float, float], screen: bool = True,
) -> NullSummary:
    """Largest clusters of randomizations ``start..stop-1`` of the cluster-extent null.

    A drop-in replacement of ``daskmeta.null.randomization._cluster_block`` (same arguments, same
    :class:`~daskmeta.stats.null.NullSummary`, same cluster sizes and extremes for the same
    seeds): the peaks of every randomization are drawn first (as :func:`relocated_peaks` draws
    them), then the screen of coarse cells bounds each cell's SDM-Z and only the cells that may
    hold a passing voxel are recreated, pooled with certified decisions and labelled
    (:func:`~daskmeta.null.cells.cell_null` with the isotropic kernel cell by cell,
    :func:`~daskmeta.null.cells.relative_cells`; docs/methods.md 5.4). Where the screen's or the
    certificate's premises fail (a single study, thresholds not on both sides of 0) it runs
    :func:`cluster_null_block_spans`, and where the certificate's fail (``a <= 0``, ``c < 0`` or
    non-finite values) :func:`cluster_null_block_fused`.

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
    screen : bool
        False recreates every cell a kernel reaches (the same sizes; for checks and benchmarks).

    Returns
    -------
    NullSummary
        Empty histogram; ``max_z``/``min_z`` each randomization's extremes, clipped at the
        thresholds (:func:`~daskmeta.stats.null.clipped_extremes`); ``max_cluster_pos``/
        ``max_cluster_neg`` filled.
    """
    from daskmeta.null.cells import cell_null, coarse_cells, relative_cells
    from daskmeta.null.seeds import relocation_draws

    peak_g = np.asarray(peak_g, dtype=np.float64)
    sampling, constant = variance_model(n1, n2)
    g, study_of = flat_peaks(peak_g)
    z_pos, z_neg = float(thresholds[0]), float(thresholds[1])
    if not (_certifiable(sampling, constant, g) and z_neg < 0.0 < z_pos and len(sampling) > 1):
        return cluster_null_block_spans(peak_g, n1, n2, seed, name, start, stop, mask_name, fwhm,
                                        thresholds)
    mask = load_mask(mask_name)  # type: ignore[arg-type]
    tables, base = relative_cells(mask_name, float(fwhm))
    voxels = relocation_draws(seed, name, start, stop, len(g), mask.n_voxels)
    largest, extremes, _ = cell_null(tables, coarse_cells(mask_name).bit[voxels], base[voxels], g,
                                     study_of, sampling, constant, (z_pos, z_neg),
                                     _tolerance(len(sampling)), mask_name, neighbourhood(mask_name),
                                     screen)
    return NullSummary(np.zeros(N_HIST, np.int64), extremes[0], extremes[1], largest[0], largest[1])


def cluster_null_block_spans(
    peak_g: np.ndarray, n1: np.ndarray, n2: np.ndarray, seed: int, name: str, start: int,
    stop: int, mask_name: str, fwhm: float, thresholds: tuple[float, float],
) -> NullSummary:
    """Largest clusters of randomizations ``start..stop-1``: the certified span-layout null.

    What :func:`cluster_null_block` ran before the screen of cells (same arguments and result,
    the same numbers), kept as a second certified implementation for the tests and the benchmark
    and for the cases the screen does not cover. About 10 times faster than the reference and 2
    times faster than :func:`cluster_null_block_fused` (``benchmarks/cluster_null.py``): the
    peaks of every randomization are drawn first (as :func:`relocated_peaks` draws them), then
    one Numba call classifies each randomization's voxels with certified decisions and labels
    the passing ones (:func:`daskmeta.stats._sparse_null_jit.cluster_null_randomizations`;
    module notes). Where the certificate's premises fail (a variance model with ``a <= 0`` or
    ``c < 0``, or non-finite values) it runs :func:`cluster_null_block_fused`.

    Parameters and result as :func:`cluster_null_block` (which adds ``screen``).
    """
    from daskmeta.null.seeds import relocation_draws
    from daskmeta.stats import _sparse_null_jit as _sparse_kernel

    peak_g = np.asarray(peak_g, dtype=np.float64)
    sampling, constant = variance_model(n1, n2)
    g, study_of = flat_peaks(peak_g)
    if not _certifiable(sampling, constant, g):
        return cluster_null_block_fused(peak_g, n1, n2, seed, name, start, stop, mask_name, fwhm,
                                        thresholds)
    mask = load_mask(mask_name)  # type: ignore[arg-type]
    hood = neighbourhood(mask_name)
    n = stop - start
    voxels = relocation_draws(seed, name, start, stop, len(g), mask.n_voxels)
    peak_ijk = np.ascontiguousarray(mask.ijk[voxels], dtype=np.int64)
    largest = np.zeros((2, n), dtype=np.int64)
    extremes = np.zeros((2, n))
    _sparse_kernel.cluster_null_randomizations(
        peak_ijk, g, study_of, sampling, constant, float(thresholds[0]), float(thresholds[1]),
        _tolerance(len(sampling)), *_layout_arguments(mask_name, fwhm), hood.padded_index,
        hood.padded_lookup, hood.offsets, largest, extremes, np.zeros(n, np.int64))
    return NullSummary(np.zeros(N_HIST, np.int64), extremes[0], extremes[1], largest[0], largest[1])


def cluster_null_block_fused(
    peak_g: np.ndarray, n1: np.ndarray, n2: np.ndarray, seed: int, name: str, start: int,
    stop: int, mask_name: str, fwhm: float, thresholds: tuple[float, float],
) -> NullSummary:
    """Largest clusters of randomizations ``start..stop-1``: the fused z maps (a reference).

    The whole z map of each randomization (:meth:`~daskmeta.stats.peak_kernel.KernelPaster.pooled_z`,
    bit for bit the reference's) labelled by :func:`largest_clusters`: the implementation
    :func:`cluster_null_block` replaced, kept as a reference for the tests and the benchmark.
    Parameters and result as :func:`cluster_null_block`.
    """
    from daskmeta.null.seeds import randomization_seeds

    mask = load_mask(mask_name)  # type: ignore[arg-type]
    paste = paster(mask_name, float(fwhm))
    peak_g = np.asarray(peak_g, dtype=np.float64)
    sampling, constant = variance_model(n1, n2)
    counts = np.isfinite(peak_g).sum(1)
    n = stop - start
    largest = np.zeros((2, n), dtype=np.int64)
    extremes = np.zeros((2, n))
    for row, sequence in enumerate(randomization_seeds(seed, name, start, stop, stream=1)):
        rng = np.random.default_rng(sequence)
        z = paste.pooled_z(*relocated_peaks(rng, counts, peak_g, mask), sampling, constant)
        largest[:, row] = largest_clusters(z, thresholds, mask)
        extremes[:, row] = clipped_extremes(z, thresholds)
    return NullSummary(np.zeros(N_HIST, np.int64), extremes[0], extremes[1], largest[0], largest[1])
