"""The cluster-extent null with the data's own kernel: a bank of anisotropic kernels (docs/methods.md, 5.4).

With ``anisotropy > 0`` a study's kernel depends on where its peak lies (the geodesic distance
of section 3.3), so it cannot be one shifted patch, and a geodesic search per relocated peak
would cost seconds per randomization. The null therefore relocates peaks onto a fixed *bank*
of :data:`BANK_SIZE` centres, a uniform random sample of the mask's voxels, whose kernels are
computed once with :func:`~daskmeta.stats.peak_kernel.peak_kernels` (the recreation's kernel,
its virtual distance kept to 1/255 of the kernel's radius) and cached on disk; one
randomization moves each peak to a uniformly drawn centre, recreates each study's map from the
centres' stored patches with the combination rule of section 3.4, pools, and records the
largest clusters above and below the voxel thresholds.

- :func:`kernel_bank`: the bank of a mask and kernel (built once, memory-mapped thereafter);
- :func:`bank_relocated_z`: the reference z map of one randomization (NumPy ``bincount`` and
  :func:`~daskmeta.stats.sdm_model.pooled_z`);
- :func:`bank_cluster_block_reference`: largest clusters from those maps (SciPy labelling);
- :func:`bank_cluster_block`: what the null graph runs, the same cluster sizes and extremes from
  a screen of cells and certified threshold decisions (:mod:`daskmeta.stats._cell_null_jit`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from daskmeta.model.grid import cache_dir, load_mask, templates, tissue_probabilities
from daskmeta.null.cells import (
    CELL,
    CELL_VERSION,
    CellBank,
    CellTables,
    cell_bits,
    cell_null,
    coarse_cells,
    screen_grid,
)
from daskmeta.null.seeds import relocation_draws
from daskmeta.stats.labelling import largest_cluster
from daskmeta.stats.null import N_HIST, NullSummary, clipped_extremes
from daskmeta.stats.peak_kernel import (
    KERNEL_FLOOR,
    kernel_radius,
    lattice_graph,
    peak_kernels,
    sigma_from_fwhm,
)
from daskmeta.stats.sdm_model import pooled_z, variance_model

__all__ = [
    "BANK_SEED",
    "BANK_SIZE",
    "KernelBank",
    "bank_centres",
    "bank_cluster_block",
    "bank_cluster_block_reference",
    "bank_relocated_z",
    "bank_tables",
    "build_bank",
    "cell_bank",
    "kernel_bank",
    "lattice",
    "screen_candidates",
]

#: Centres of the bank (chosen here: 4096 centres, a mean spacing of about 7 mm over the
#: grey-matter mask, 59 MB at FWHM 20 mm and full anisotropy).
BANK_SIZE = 4096
#: Seed of the sample of mask voxels that are the bank's centres (fixed: the bank is a
#: property of the mask and kernel, not of an analysis).
BANK_SEED = 5_4_2026
#: Version of the bank's file layout and construction (part of the cache key).
BANK_VERSION = 4
#: Centres per batch of geodesic searches while building.
BUILD_BATCH = 32


#: Levels of the quantized virtual distance (one byte per patch entry).
N_LEVELS = 256


class KernelBank(NamedTuple):
    """Sparse kernels of the bank's centres, as runs of consecutive voxels and one byte per voxel.

    Attributes
    ----------
    centres : ndarray of int64, shape (n_centres,)
        Voxel-vector positions of the centres, increasing.
    start : ndarray of int64, shape (n_centres + 1,)
        Centre ``c`` owns entries ``start[c]:start[c + 1]``, in increasing voxel order.
    run_start : ndarray of int64, shape (n_centres + 1,)
        Centre ``c`` owns runs ``run_start[c]:run_start[c + 1]``: its maximal stretches of
        consecutive voxel positions within one grid plane, in increasing order.
    run_voxel, run_length, run_offset : ndarray of int32, shape (n_runs,)
        Each run's first voxel position, its length and its first entry relative to its
        centre's ``start``.
    code : ndarray of uint8, shape (n_entries,)
        Each entry's virtual distance ``vd`` (docs/methods.md, 3.2) as ``round(255 vd / R)``,
        ``R`` the kernel's radius.
    levels : ndarray of float64, shape (256,)
        The kernel of each code, ``exp(-(code R / 255)^2 / (2 sigma^2))``.
    """

    centres: NDArray[np.int64]
    start: NDArray[np.int64]
    run_start: NDArray[np.int64]
    run_voxel: NDArray[np.int32]
    run_length: NDArray[np.int32]
    run_offset: NDArray[np.int32]
    code: NDArray[np.uint8]
    levels: NDArray[np.float64]

    def patch(self, row: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Voxel positions and kernel values of centre ``row`` (the bank's row, not its voxel)."""
        runs = slice(int(self.run_start[row]), int(self.run_start[row + 1]))
        first = np.asarray(self.run_voxel[runs], np.int64)
        length = np.asarray(self.run_length[runs], np.int64)
        voxels = np.repeat(first - np.cumsum(length) + length, length) + np.arange(int(length.sum()))
        code = np.asarray(self.code[int(self.start[row]):int(self.start[row + 1])])
        return voxels, np.asarray(self.levels)[code]


@functools.cache
def lattice(beta: float) -> tuple[sparse.csr_matrix, NDArray[np.int64]]:
    """The brain lattice graph (:func:`~daskmeta.stats.peak_kernel.lattice_graph`), built once per process."""
    return lattice_graph(templates()["brain"], tissue_probabilities(), beta)


def bank_centres(n_voxels: int, size: int = BANK_SIZE, seed: int = BANK_SEED) -> NDArray[np.int64]:
    """The bank's centres: ``min(size, n_voxels)`` distinct voxel positions drawn uniformly, sorted."""
    chosen = np.random.default_rng(seed).choice(n_voxels, min(size, n_voxels), replace=False)
    return np.sort(chosen).astype(np.int64)


def quantized(kernel: NDArray[np.float64], fwhm: float) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    """Codes of kernel values (> 0) and the kernel of each code (:class:`KernelBank`)."""
    sigma, radius = sigma_from_fwhm(fwhm), kernel_radius(fwhm)
    distance = np.sqrt(np.maximum(-2.0 * sigma**2 * np.log(kernel), 0.0))
    code = np.clip(np.rint(distance * ((N_LEVELS - 1) / radius)), 0, N_LEVELS - 1).astype(np.uint8)
    levels = np.exp(-((np.arange(N_LEVELS) * (radius / (N_LEVELS - 1))) ** 2) / (2.0 * sigma**2))
    return code, levels


def build_bank(mask_name: str, fwhm: float, anisotropy: float, beta: float,
               size: int = BANK_SIZE) -> KernelBank:
    """Compute the bank of a mask and kernel (a geodesic search per centre; no cache).

    Each centre's patch is the row of :func:`~daskmeta.stats.peak_kernels` for a peak at the
    centre over the mask's voxels, the recreation's kernel (docs/methods.md, 3.2-3.3), with its
    virtual distance rounded to 1/255 of the kernel's radius (0.14 mm at FWHM 20 mm).
    """
    mask = load_mask(mask_name)  # type: ignore[arg-type]
    centres = bank_centres(mask.n_voxels, size)
    graph, node_of = lattice(float(beta)) if anisotropy > 0 else (None, None)
    counts = np.zeros(len(centres), dtype=np.int64)
    indexes, codes = [], []
    for first in range(0, len(centres), BUILD_BATCH):
        batch = centres[first:first + BUILD_BATCH]
        values = peak_kernels(mask.ijk[batch], mask.ijk, fwhm, anisotropy, graph, node_of)
        rows, voxels = np.nonzero(values > 0)  # row-major: increasing voxels within each row
        counts[first:first + len(batch)] = np.bincount(rows, minlength=len(batch))
        indexes.append(voxels)
        codes.append(quantized(values[rows, voxels], fwhm)[0])
    start = np.zeros(len(centres) + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    index = np.concatenate(indexes)
    new_run = np.ones(len(index), dtype=bool)
    plane = mask.ijk[index, 0]
    new_run[1:] = (np.diff(index) != 1) | (plane[1:] != plane[:-1])  # runs never cross a plane
    new_run[start[:-1][counts > 0]] = True
    run_entry = np.flatnonzero(new_run)
    run_start = np.searchsorted(run_entry, start).astype(np.int64)
    owner = np.repeat(np.arange(len(centres)), np.diff(run_start))
    return KernelBank(
        centres, start, run_start, index[run_entry].astype(np.int32),
        np.diff(np.append(run_entry, len(index))).astype(np.int32),
        (run_entry - start[owner]).astype(np.int32), np.concatenate(codes),
        quantized(np.ones(1), fwhm)[1])


def _bank_key(mask_name: str, fwhm: float, anisotropy: float, beta: float, size: int) -> str:
    text = (f"{mask_name}|{load_mask(mask_name).n_voxels}|{fwhm!r}|{anisotropy!r}|{beta!r}|{size}|"  # type: ignore[arg-type]
            f"{BANK_SEED}|{KERNEL_FLOOR!r}|{BANK_VERSION}")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (one builder per machine; the others wait, then load)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(folder: Path) -> KernelBank:
    return KernelBank(*(np.load(folder / f"{field}.npy", mmap_mode="r") for field in KernelBank._fields))


@functools.cache
def kernel_bank(mask_name: str, fwhm: float, anisotropy: float, beta: float,
                size: int = BANK_SIZE) -> KernelBank:
    """The bank of a mask and kernel: from the disk cache (memory-mapped, so the worker processes
    of a machine share one copy), built and stored there on first use.

    The cache is ``cache_dir()/kernel_bank/<key>/``; a bank is written to a temporary folder
    and renamed into place, under a file lock, so that a reader never sees a partial bank.
    """
    root = cache_dir() / "kernel_bank"
    folder = root / _bank_key(mask_name, float(fwhm), float(anisotropy), float(beta), size)
    if not (folder / "levels.npy").exists():
        root.mkdir(parents=True, exist_ok=True)
        with _locked(root / ".lock"):
            if not (folder / "levels.npy").exists():
                bank = build_bank(mask_name, fwhm, anisotropy, beta, size)
                tmp = root / f".{folder.name}.{os.getpid()}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                for field in KernelBank._fields:
                    np.save(tmp / f"{field}.npy", getattr(bank, field))
                os.replace(tmp, folder)
    return _load(folder)


@functools.cache
def cell_bank(mask_name: str, fwhm: float, anisotropy: float, beta: float) -> CellBank:
    """The bank of a mask and kernel, cell-major: cached beside it (``cells<CELL>/``), built on
    first use from its runs (seconds), memory-mapped thereafter."""
    from daskmeta.stats import _cell_null_jit as _bank_kernel

    bank = kernel_bank(mask_name, fwhm, anisotropy, beta)
    root = cache_dir() / "kernel_bank"
    folder = (root / _bank_key(mask_name, float(fwhm), float(anisotropy), float(beta), BANK_SIZE)
              / f"cells{CELL}-v{CELL_VERSION}")
    if not (folder / "cell_record.npy").exists():
        with _locked(root / ".lock"):
            if not (folder / "cell_record.npy").exists():
                cells = coarse_cells(mask_name)
                built = CellBank(*_bank_kernel.build_cells(
                    *(np.asarray(bank[i]) for i in (1, 2, 3, 4)), np.asarray(bank.code),
                    cells.cell_of, cells.bit, cells.voxel.shape[0]))
                tmp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                for field in CellBank._fields:
                    np.save(tmp / f"{field}.npy", getattr(built, field))
                os.replace(tmp, folder)
    return CellBank(*(np.load(folder / f"{field}.npy", mmap_mode="r") for field in CellBank._fields))


def bank_relocated_z(centre: NDArray[np.int64], g: NDArray[np.float64], study_of: NDArray[np.int64],
                     sampling: NDArray[np.float64], constant: NDArray[np.float64],
                     bank: KernelBank, n_voxels: int) -> NDArray[np.float64]:
    """SDM-Z of one randomization of the bank null (the reference; NumPy).

    Study ``s``'s map is ``sum K^2 g / sum K`` of its peaks' patches (``bincount`` in peak
    order; 0 where none reaches), the maps are pooled by
    :func:`~daskmeta.stats.sdm_model.pooled_z` with the variance model ``a + c y^2``.

    Parameters
    ----------
    centre : ndarray of int, shape (n_peaks,)
        Bank row of each peak (study after study).
    g : ndarray of float64, shape (n_peaks,)
    study_of : ndarray of int, shape (n_peaks,)
    sampling, constant : ndarray of float64, shape (n_studies,)
    bank : KernelBank
    n_voxels : int
        Voxels of the mask.

    Returns
    -------
    ndarray of float64, shape (n_voxels,)
    """
    effect = np.zeros((len(sampling), n_voxels))
    for s in range(len(sampling)):
        patches = [bank.patch(int(row)) for row in np.asarray(centre)[study_of == s]]
        if not patches:
            continue
        index = np.concatenate([voxels for voxels, _ in patches])
        kernel = np.concatenate([values for _, values in patches])
        weight = kernel * kernel * np.repeat(g[study_of == s], [len(v) for v, _ in patches])
        total = np.bincount(index, weights=kernel, minlength=n_voxels)
        weighted = np.bincount(index, weights=weight, minlength=n_voxels)
        np.divide(weighted, total, out=effect[s], where=total > 0)
    return pooled_z(effect, sampling, constant)


def _arguments(peak_g, n1, n2):
    from daskmeta.null.cluster_extent import flat_peaks

    g, study_of = flat_peaks(peak_g)
    sampling, constant = variance_model(n1, n2)
    return g, study_of, sampling, constant


def bank_cluster_block_reference(
    peak_g: np.ndarray, n1: np.ndarray, n2: np.ndarray, seed: int, name: str, start: int,
    stop: int, mask_name: str, fwhm: float, anisotropy: float, beta: float,
    thresholds: tuple[float, float],
) -> NullSummary:
    """Largest clusters of randomizations ``start..stop-1`` of the bank null: the reference.

    :func:`bank_relocated_z` of each randomization, thresholded and labelled by
    :func:`~daskmeta.stats.labelling.largest_cluster` (SciPy). Arguments as
    :func:`bank_cluster_block`.
    """
    mask = load_mask(mask_name)  # type: ignore[arg-type]
    bank = kernel_bank(mask_name, float(fwhm), float(anisotropy), float(beta))
    g, study_of, sampling, constant = _arguments(peak_g, n1, n2)
    centres = relocation_draws(seed, name, start, stop, len(g), len(bank.centres))
    largest = np.zeros((2, stop - start), dtype=np.int64)
    extremes = np.zeros((2, stop - start))
    for row, centre in enumerate(centres):
        z = bank_relocated_z(centre, g, study_of, sampling, constant, bank, mask.n_voxels)
        largest[0, row] = largest_cluster(z >= thresholds[0], mask)
        largest[1, row] = largest_cluster(z <= thresholds[1], mask)
        extremes[:, row] = clipped_extremes(z, thresholds)
    return NullSummary(np.zeros(N_HIST, np.int64), extremes[0], extremes[1], largest[0], largest[1])


def bank_cluster_block(
    peak_g: np.ndarray, n1: np.ndarray, n2: np.ndarray, seed: int, name: str, start: int,
    stop: int, mask_name: str, fwhm: float, anisotropy: float, beta: float,
    thresholds: tuple[float, float], screen: bool = True,
) -> NullSummary:
    """Largest clusters of randomizations ``start..stop-1`` of the cluster-extent null, data's kernel.

    Each randomization moves every peak to a uniformly drawn centre of the :func:`kernel_bank`
    (one ``integers(0, n_centres, n_peaks)`` per randomization, stream 1), recreates and pools
    the maps and records the largest clusters of ``z >= z_pos`` and ``z <= z_neg`` and the
    maps' clipped extremes; the same numbers as :func:`bank_cluster_block_reference`, from the
    screen of cells and certified decisions (:func:`~daskmeta.null.cells.cell_null` on
    :func:`bank_tables`). Falls back to the reference where the
    certificate's premises fail (``a <= 0``, ``c < 0``, non-finite values, thresholds not on
    both sides of 0, or a single study).

    Parameters
    ----------
    peak_g : ndarray, shape (n_studies, n_peaks)
        Each study's peak Hedges g, NaN-padded.
    n1, n2 : ndarray, shape (n_studies,)
        Sample sizes (``n2`` NaN for one-sample studies).
    seed : int
    name : str
    start, stop : int
    mask_name : str
    fwhm, anisotropy, beta : float
        The study maps' kernel (docs/methods.md, 3.2-3.3).
    thresholds : (float, float)
        ``(z_pos, z_neg)``.
    screen : bool
        Recreate only the coarse cells where a voxel may pass a threshold
        (:func:`~daskmeta.stats._screen_jit.screen_cells`; the default). False recreates every
        voxel a kernel reaches: the same sizes, for checks and benchmarks.

    Returns
    -------
    NullSummary
        Empty histogram; ``max_z``/``min_z`` each randomization's extremes, clipped at the
        thresholds (:func:`~daskmeta.stats.null.clipped_extremes`); ``max_cluster_pos``/
        ``max_cluster_neg`` filled.
    """
    from daskmeta.null.cluster_extent import _certifiable, _tolerance, neighbourhood

    g, study_of, sampling, constant = _arguments(peak_g, n1, n2)
    z_pos, z_neg = float(thresholds[0]), float(thresholds[1])
    if not (_certifiable(sampling, constant, g) and z_neg < 0.0 < z_pos and len(sampling) > 1):
        return bank_cluster_block_reference(peak_g, n1, n2, seed, name, start, stop, mask_name,
                                            fwhm, anisotropy, beta, thresholds)
    tables = bank_tables(mask_name, float(fwhm), float(anisotropy), float(beta))
    centres = relocation_draws(seed, name, start, stop, len(g), len(tables.cell_first) - 1)
    largest, extremes, _ = cell_null(tables, centres, np.zeros_like(centres), g, study_of, sampling,
                                     constant, (z_pos, z_neg), _tolerance(len(sampling)), mask_name,
                                     neighbourhood(mask_name), screen)
    return NullSummary(np.zeros(N_HIST, np.int64), extremes[0], extremes[1], largest[0], largest[1])


@functools.cache
def bank_tables(mask_name: str, fwhm: float, anisotropy: float, beta: float) -> CellTables:
    """The bank's kernels cell by cell as :func:`~daskmeta.null.cells.cell_null` takes them
    (groups: the centres; cells numbered directly)."""
    cells = cell_bank(mask_name, fwhm, anisotropy, beta)
    n_cells = coarse_cells(mask_name).voxel.shape[0]
    return CellTables(np.asarray(cells.cell_first), np.asarray(cells.cell_id),
                      np.asarray(cells.cell_code), np.asarray(cells.cell_record),
                      np.asarray(kernel_bank(mask_name, fwhm, anisotropy, beta).levels),
                      np.arange(n_cells, dtype=np.int32), cell_bits(mask_name))


def screen_candidates(centre: NDArray[np.int64], g: NDArray[np.float64], study_of: NDArray[np.int64],
                      sampling: NDArray[np.float64], constant: NDArray[np.float64],
                      thresholds: tuple[float, float], mask_name: str, fwhm: float, anisotropy: float,
                      beta: float) -> NDArray[np.uint8]:
    """The coarse cells where the screen lets one randomization's SDM-Z pass a threshold (1; 0
    where no voxel can: :func:`~daskmeta.stats._screen_jit.screen_cells`).

    Parameters
    ----------
    centre : ndarray of int64, shape (n_peaks,)
        Bank row of each peak (study after study).
    g, study_of, sampling, constant
        The peaks' effects and studies and the studies' variance model.
    thresholds : (float, float)
        ``(z_pos, z_neg)``.
    mask_name, fwhm, anisotropy, beta
        The bank's mask and kernel.
    """
    from daskmeta.stats import _screen_jit as _screen_kernel

    tables = bank_tables(mask_name, float(fwhm), float(anisotropy), float(beta))
    n_cells = len(tables.cell_at)
    taus, growth = screen_grid(g, study_of, sampling, constant)
    inv_tau = 1.0 / (sampling[:, None] + taus[None, :])
    longest = int(np.diff(tables.cell_first).max(initial=0)) * len(g)
    candidate = np.zeros(n_cells + 1, np.uint8)
    _screen_kernel.screen_cells(
        np.asarray(centre, np.int64), np.zeros(len(g), np.int64), tables.cell_at, g, study_of,
        sampling, constant, float(thresholds[0]), float(thresholds[1]), tables.cell_first,
        tables.cell_id, tables.cell_code, tables.levels, inv_tau, inv_tau.sum(0), taus, growth,
        np.zeros((n_cells + 1, 8)), np.empty(n_cells + 1, np.int64), np.empty((longest, 2), np.int64),
        np.empty((longest, 2)), np.empty((n_cells, len(taus), 3)), candidate)
    return candidate[:n_cells]
