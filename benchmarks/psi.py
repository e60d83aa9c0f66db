"""SDM-PSI on the reference example: time, cost per permutation, and agreement with AES-SDM.

Usage (from the repository root)::

    .venv/bin/python benchmarks/psi.py [--imputations 10] [--permutations 4] [--workers 2]
    .venv/bin/python benchmarks/psi.py --kernel-only  # steps 1 and 4 only

On the 12 ReHo studies of the CLBP example (grey-matter mask, FWHM 20 mm) and a LocalCluster:

1. the imputation (censored ML per voxel, smoothing, draws) with ``--imputations``;
2. the observed PSI maps, and their agreement with the AES-SDM mean of the same studies
   (Pearson r of the z maps over the mask; signs at the AES peaks);
3. ``--permutations`` permutations (after one to warm up), giving the cost of one
   permutation with that many imputations, and the extrapolation to SDM-PSI's defaults,
   50 imputations x 1000 permutations (the cost is linear in imputations x permutations, see
   docs/methods.md, section 14.2).

With ``--memory``, one whole ``psi`` run (``--imputations`` x ``--permutations`` in blocks
of ``--block``) on a fresh LocalCluster: its wall time, each worker's resident memory before
the run and its peak during it (sampled every 20 ms), and the bytes the workers served to
each other and to the client; ``--save FILE.npz`` keeps the result's arrays (to compare two
versions of the code bit for bit).

With ``--impute-only``, only the imputation, at 10 and 50 imputations (``--impute-counts``):
the time of :func:`~daskmeta.analyses.psi.impute` on the LocalCluster, then the serial time
of each of its parts in this process (censored ML per voxel chunk, smoothing of the ML maps,
the uniform fields, the draws), the same calls its tasks make.

Not a test: a measurement, printed with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from daskmeta.analyses.means import mean
from daskmeta.analyses.psi import impute, psi, selected_table, sizes_of
from daskmeta.analyses.recreate import recreate
from daskmeta.app.dask_client import cluster_client
from daskmeta.app.logs import log_to_file
from daskmeta.datasets import clbp_folder
from daskmeta.inference.thresholding import threshold
from daskmeta.io import load_studies
from daskmeta.model.grid import load_mask, mm_to_ijk
from daskmeta.null import psi as null_psi
from daskmeta.stats import _psi_jit
from daskmeta.stats.tfce import tfce_maxima

WHERE = "modality == 'ReHo'"
#: Permutations per block of the fused path (the default block size of daskmeta.psi).
BLOCK = 10


def _timed(function, repeats: int = 3) -> list[float]:
    """CPU seconds of each of ``repeats`` calls (one thread: robust to other processes)."""
    times = []
    for _ in range(repeats):
        started = time.process_time()
        function()
        times.append(time.process_time() - started)
    return times


def _span(times: list[float], per: int = 1, unit: float = 1e3) -> str:
    low, high = min(times) / per * unit, max(times) / per * unit
    return f"{low:.0f}" if high < 1.05 * low else f"{low:.0f}-{high:.0f}"


@numba.njit(nogil=True, error_model="numpy")
def _stream(effects):
    """One pass over the (M, k, V) float32 effects (their float64 sum)."""
    total = 0.0
    n_imp, k, n_voxels = effects.shape
    for m in range(n_imp):
        for s in range(k):
            for t in range(n_voxels):
                total += effects[m, s, t]
    return total


@numba.njit(nogil=True, error_model="numpy")
def _g_floor(noise_term, b, effects, j_factor, base, square, df, sampling, constant):
    """The permuted g' and weight of every permutation, imputation, study and voxel of a
    chunk (what the fused kernel cannot avoid), nothing pooled."""
    k, n_perm, width_all = noise_term.shape
    tile = _psi_jit.TILE
    d = np.empty((k, tile))
    ss = np.empty((k, tile))
    g = np.empty((k, tile))
    w = np.empty((k, tile))
    for t0 in range(0, width_all - tile + 1, tile):
        for m in range(effects.shape[0]):
            _psi_jit._study_terms(effects, m, t0, tile, j_factor, base, square, d, ss)
            for p in range(n_perm):
                for s in range(k):
                    _psi_jit._permuted_g(noise_term, s, p, t0, d, ss, b[s, p], j_factor[s], square[s],
                                         1.0 / df[s], sampling[s], constant[s], g, w, tile)
    return g[0, 0]


def kernel_costs(effects: np.ndarray, sizes: list[tuple[int, int]], studies: list[str],
                 mask_name: str) -> None:
    """Step 4 of the module notes: the null's cost per permutation, NumPy vs fused, vs its bound."""
    null_psi._NOISE_CACHE.clear()
    started = time.process_time()
    noise, perms = null_psi.block_inputs(sizes, studies, 1, "psi", 0, BLOCK, mask_name)
    cold = time.process_time() - started
    warm = _timed(lambda: null_psi.block_inputs(sizes, studies, 1, "psi", BLOCK, 2 * BLOCK, mask_name))
    print(f"fixed cost of a task: subject noise of the {len(sizes)} studies "
          f"({sum(a + b for a, b in sizes)} subjects) {cold:.1f} s the first time in a process, "
          f"{_span(warm)} ms cached")
    k, n_voxels = effects.shape[1:]
    terms = null_psi._study_terms(sizes, perms)
    width = null_psi.CHUNK_VOXELS
    chunk = np.empty((k, BLOCK, width))

    def gemm() -> None:
        for begin in range(0, n_voxels, width):
            stop = min(begin + width, n_voxels)
            for s in range(k):
                np.matmul(perms[s], noise[s][:, begin:stop].astype(np.float64),
                          out=chunk[s, :, :stop - begin])

    def floor(stack: np.ndarray) -> None:
        for begin in range(0, n_voxels - width + 1, width):
            _g_floor(chunk, terms.b, stack[:, :, begin:begin + width], terms.j_factor, terms.base,
                     terms.square, terms.df, terms.sampling, terms.constant)

    gemm()
    t_gemm = _timed(gemm)
    null_psi.null_z(effects[:1, :, :1000], sizes, [e[:, :1000] for e in noise], perms)  # compile
    z = null_psi.null_z(effects, sizes, noise, perms)
    t_tfce = _timed(lambda: tfce_maxima(z, null_psi._neighbours(mask_name)), 2)
    print(f"per permutation, one core: matrix products {_span(t_gemm, BLOCK)} ms, "
          f"TFCE {_span(t_tfce, BLOCK)} ms")
    print("M   NumPy path   fused   bound (GEMM + stream)   fused/bound   exact-g' floor   fused/floor"
          "   (ms per permutation)")
    for n_imp in (10, 50):
        stack = np.ascontiguousarray(np.resize(effects, (n_imp, *effects.shape[1:])))
        _stream(stack[:1, :1])
        _g_floor(chunk[:, :, :_psi_jit.TILE], terms.b, stack[:, :, :_psi_jit.TILE], terms.j_factor,
                 terms.base, terms.square, terms.df, terms.sampling, terms.constant)
        t_fused = _timed(lambda: null_psi.null_z(stack, sizes, noise, perms))  # noqa: B023
        t_stream = _timed(lambda: _stream(stack))  # noqa: B023
        t_floor = _timed(lambda: floor(stack))  # noqa: B023
        two = [p[:2] for p in perms]
        t_numpy = _timed(lambda: null_psi.null_z_reference(stack, sizes, noise, two), 1)  # noqa: B023
        fused = min(t_fused) / BLOCK
        bound = min(t_gemm) / BLOCK + min(t_stream)
        g_floor = min(t_gemm) / BLOCK + min(t_floor) / BLOCK
        print(f"{n_imp:<3} {_span(t_numpy, 2):>10}   {_span(t_fused, BLOCK):>5}   {bound * 1e3:21.0f}   "
              f"{fused / bound:11.1f}   {g_floor * 1e3:14.0f}   {fused / g_floor:11.1f}")
    print("(CPU time of this process; NumPy path timed on blocks of 2 permutations, once; fused "
          f"on blocks of {BLOCK}, 3 times: ranges; imputations cycled to 50 from {effects.shape[0]}; "
          "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ")")


def _watch_memory(dask_worker, interval: float = 0.02) -> int:
    """Start sampling this worker process' RSS (a thread); returns the RSS now."""
    import threading

    import psutil

    process = psutil.Process()
    state = {"peak": process.memory_info().rss, "stop": threading.Event()}

    def sample() -> None:
        while not state["stop"].wait(interval):
            state["peak"] = max(state["peak"], process.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()
    dask_worker._daskmeta_rss = state
    return state["peak"]


def _peak_memory(dask_worker) -> int:
    """Stop :func:`_watch_memory`'s sampling; the peak RSS it saw."""
    state = dask_worker._daskmeta_rss
    state["stop"].set()
    return max(state["peak"], __import__("psutil").Process().memory_info().rss)


def _served(dask_worker) -> int:
    return dask_worker.transfer_outgoing_bytes_total


def memory_run(client, maps, imputations: int, permutations: int, block: int, save: str | None) -> None:
    """One whole ``psi`` run: wall time, per-worker RSS before and peak, bytes served."""
    served = sum(client.run(_served).values())
    before = client.run(_watch_memory)
    started = time.perf_counter()
    result = client.compute(psi(maps, imputations, permutations, seed=1, where=WHERE,
                                block_size=block)).result()
    wall = time.perf_counter() - started
    peaks = client.run(_peak_memory)
    moved = sum(client.run(_served).values()) - served
    print(f"psi, 12 studies x {imputations} imputations x {permutations} permutations (blocks of "
          f"{block}), {len(peaks)} workers: {wall:.1f} s; worker RSS before / peak (GB): "
          + ", ".join(f"{before[w] / 1e9:.2f} / {peaks[w] / 1e9:.2f}" for w in sorted(peaks))
          + f"; {moved / 1e6:.0f} MB served by the workers; load "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    if save:
        np.savez(save, **{key: result[key].values for key in result.data_vars})


def impute_timing(client, maps, counts: list[int]) -> None:
    """Time :func:`impute` at each number of imputations, with its split (docs/methods.md, 14.1).

    The total is the LocalCluster's wall time (persisted maps in, imputed effects out); the
    split repeats the tasks' calls serially in this process: ``_ml_block`` per voxel chunk,
    ``_smooth_rows``, one ``coherent_uniforms`` per study and imputation, and one
    ``truncated_draws_many`` per study.
    """
    from daskmeta.analyses.means import prepare_studies
    from daskmeta.analyses.psi import (
        _design,
        _ml_block,
        _smooth_rows,
        imputation_seed,
        selected_table,
        sizes_of,
    )
    from daskmeta.model.grid import GRID_SHAPE
    from daskmeta.stats.imputation import coherent_uniforms, truncated_draws_many
    from daskmeta.stats.sdm_model import variance_model

    selected = prepare_studies(maps, WHERE, None, "psi", minimum=2)
    table = selected_table(maps, selected)
    a, c = variance_model(*sizes_of(table, "psi"))
    design, _ = _design(table, None, "psi")
    lower = selected.effect_lower.values.astype(np.float64)
    upper = selected.effect_upper.values.astype(np.float64)
    edges = np.cumsum([0, *selected.effect_lower.data.chunks[1]])
    mask_name, fwhm = maps.attrs["mask"], float(maps.attrs.get("fwhm", 20.0))
    ijk = load_mask(mask_name).ijk
    names = [str(s) for s in selected.study.values]
    truncated_draws_many(0.0, 0.0, -1.0, 1.0, 0.1, 0.0, np.full((1, 1), 0.5))  # compile / load
    started = time.perf_counter()
    fit = np.concatenate([_ml_block(lower[:, i:j], upper[:, i:j], a, c, design)
                          for i, j in zip(edges[:-1], edges[1:], strict=True)], axis=1)
    t_ml = time.perf_counter() - started
    started = time.perf_counter()
    smoothed = _smooth_rows(fit, mask_name, fwhm)
    t_smooth = time.perf_counter() - started
    for count in counts:
        started = time.perf_counter()
        imputed = client.persist(impute(maps, count, seed=1, where=WHERE))
        imputed.effect.data.compute()
        total = time.perf_counter() - started
        t_fields = t_draws = 0.0
        for s, study in enumerate(names):
            started = time.perf_counter()
            u = np.stack([coherent_uniforms(np.random.default_rng(imputation_seed(1, study, m)),
                                            GRID_SHAPE, ijk, fwhm) for m in range(count)])
            t_fields += time.perf_counter() - started
            started = time.perf_counter()
            truncated_draws_many(design[s] @ smoothed[:-1], smoothed[-1], lower[s], upper[s],
                                 a[s], c[s], u).astype(np.float32)
            t_draws += time.perf_counter() - started
        serial = t_ml + t_smooth + t_fields + t_draws
        print(f"impute: {len(names)} studies x {count} imputations: {total:.1f} s on "
              f"{len(client.scheduler_info()['workers'])} workers (load "
              f"{os.getloadavg()[0]:.2f}); serial split, one core: ML {t_ml:.1f} s, smoothing "
              f"{t_smooth:.2f} s, fields {t_fields:.1f} s ({1e3 * t_fields / count / len(names):.0f} "
              f"ms each), draws {t_draws:.1f} s; sum {serial:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imputations", type=int, default=10)
    parser.add_argument("--permutations", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--impute-only", action="store_true",
                        help="time only the imputation, with its split (see --impute-counts)")
    parser.add_argument("--impute-counts", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--memory", action="store_true",
                        help="one whole psi run: time, worker RSS before and peak, bytes moved")
    parser.add_argument("--block", type=int, default=BLOCK, help="permutations per task (--memory)")
    parser.add_argument("--save", help="with --memory: keep the result's arrays in this .npz")
    parser.add_argument("--kernel-only", action="store_true",
                        help="impute, then only the in-process costs of the null (step 4)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    with (tempfile.TemporaryDirectory() as logs, log_to_file(logs),
          cluster_client(n_workers=args.workers, quiet=True) as client):
        maps = client.persist(recreate(load_studies(clbp_folder())))
        if args.impute_only:
            impute_timing(client, maps, args.impute_counts)
            return
        if args.memory:
            memory_run(client, maps, args.imputations, args.permutations, args.block, args.save)
            return
        started = time.perf_counter()
        imputed = client.persist(impute(maps, args.imputations, seed=1, where=WHERE))
        imputed.effect.data.compute()
        t_impute = time.perf_counter() - started
        print(f"impute: 12 studies x {args.imputations} imputations: {t_impute:.1f} s")
        if args.kernel_only:
            n1, n2 = sizes_of(selected_table(maps, imputed), "psi")
            sizes = [(int(a), int(b) if np.isfinite(b) else 0) for a, b in zip(n1, n2, strict=True)]
            effects = imputed.effect.data.compute()
            with threadpool_limits(1):
                kernel_costs(effects, sizes, [str(s) for s in imputed.study.values], imputed.attrs["mask"])
            return
        started = time.perf_counter()
        observed = client.compute(psi(maps, args.imputations, 0, seed=1, where=WHERE)).result()
        print(f"observed PSI maps (imputation included): {time.perf_counter() - started:.1f} s")
        aes = client.compute(mean(maps, where=WHERE, permutations=50, seed=1, voxel_p=None)).result()
        r = float(np.corrcoef(observed.z.values, aes.z.values)[0, 1])
        peaks = threshold(aes, mask="gray_matter", atlas=False).table
        ijk = mm_to_ijk(peaks[["x", "y", "z"]].to_numpy(dtype=np.float64))
        voxels = load_mask("gray_matter").lookup[tuple(ijk.T)]
        same = np.mean(np.sign(observed.z.values[voxels]) == np.sign(aes.z.values[voxels]))
        print(f"PSI z vs AES-SDM z (ReHo): r = {r:.3f}; same sign at {same:.0%} of the "
              f"{len(voxels)} AES peaks")
        runs = {}
        for count in (1, 1 + args.permutations):  # the first also loads the compiled kernels
            for _ in range(2 if count == 1 else 1):
                started = time.perf_counter()
                client.compute(psi(maps, args.imputations, count, seed=1, where=WHERE,
                                   block_size=count).null_max_z).result()
                runs[count] = time.perf_counter() - started
        per = (runs[1 + args.permutations] - runs[1]) / args.permutations
        print(f"one task of {1 + args.permutations} permutations: {runs[1 + args.permutations]:.1f} s, "
              f"of 1: {runs[1]:.1f} s (subject images of every study, imputations read): "
              f"{per:.2f} s per further permutation on one core, {args.imputations} imputations")
        default = per * (50 / args.imputations) * 1000 / args.workers
        print(f"extrapolated, 50 imputations x 1000 permutations on {args.workers} workers "
              f"(blocks of 10): {default / 60:.0f} min")


if __name__ == "__main__":
    main()
