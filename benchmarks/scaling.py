"""Scaling of the AES-SDM null and the SDM-PSI null over LocalClusters, and a cost model.

Usage (from the repository root)::

    .venv/bin/python benchmarks/scaling.py [--workers 1 2 4] [--randomizations 2000]
        [--imputations 10] [--psi-permutations 20]

On the 12 ReHo studies of the CLBP example (grey-matter mask), for each LocalCluster of W
single-threaded worker processes:

1. the scheduler's overhead per task (2000 no-op tasks);
2. ``mean`` with its voxel null and cluster-extent null (what ``daskmeta run`` computes), P
   and 2P randomizations: marginal cost per randomization and fixed cost. With P at least
   ``uncorrected_permutations`` (default 1000), the voxel null runs U = 1000 randomizations in
   both runs (docs/methods.md, 5.2), so that marginal cost is the cluster-extent null's; the
   voxel null's own is measured from the voxel null alone (``voxel_p=None``), P and 2P;
3. ``psi`` with persisted imputations, B and 2B permutations: marginal cost per permutation
   and fixed cost (the first block of each worker builds the subject noise);
4. each worker's peak resident memory.

Then the cost model, one term per phase (the cluster-extent null's blocks wait for the voxel
null's thresholds)::

    T(W) = t_0 + ceil(n_v / W') b m_v + ceil(n_c / W') b m_c + (n_v + n_c) t_sched

with ``W' = min(W, cores)``, ``n_v = ceil(min(B, U) / b)`` voxel-null and ``n_c = ceil(B / b)``
cluster-null tasks of ``b`` randomizations, ``m_v``, ``m_c`` their marginal costs per
randomization and ``t_0`` the rest, all fitted on one worker (PSI: one phase), is checked against
2 and 4 workers and extrapolated to 10, 100 and 1000 workers with the bytes each task moves.
Nothing here is a test: a measurement, printed with the machine's load.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import resource
import tempfile
import time

import dask

from daskmeta.analyses.means import UNCORRECTED_PERMUTATIONS, mean
from daskmeta.analyses.psi import impute, psi
from daskmeta.analyses.recreate import recreate
from daskmeta.datasets import clbp_folder
from daskmeta.io import load_studies
from daskmeta.io.store import read_group, write_group

WHERE = "modality == 'ReHo'"
#: Network bandwidth assumed between workers for the extrapolation (10 Gbit/s).
BANDWIDTH = 1.25e9


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _noop(x: int) -> int:
    return x


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def scheduler_overhead(client, n: int = 2000) -> float:
    """Seconds per task of a graph of ``n`` independent no-op tasks, submitted and gathered."""
    client.gather(client.map(_noop, range(100), pure=False))  # warm up
    return _timed(lambda: client.gather(client.map(_noop, range(n), pure=False))) / n


#: Randomizations of the voxel null when the cluster-extent null runs (``mean``'s default).
UNCORRECTED = UNCORRECTED_PERMUTATIONS


def aes_run(stored, permutations: int, block_size: int, repeats: int = 2,
            voxel_p: float | None = 0.005) -> float:
    """Best of ``repeats`` computations of a mean with its voxel and cluster-extent nulls
    (``voxel_p=None``: the voxel null alone)."""
    result = mean(stored, permutations=permutations, seed=1, block_size=block_size, voxel_p=voxel_p)
    return min(_timed(lambda: result.compute()) for _ in range(repeats))


def psi_run(stored, imputations: int, permutations: int, block_size: int, repeats: int = 2) -> float:
    """Best of ``repeats`` computations of a PSI null (the imputations are held by the workers)."""
    result = psi(stored, imputations=imputations, permutations=permutations, seed=1, where=WHERE,
                 block_size=block_size)
    return min(_timed(lambda: dask.compute(result.null_max_z, result.z)) for _ in range(repeats))


def measure(stored, workers: int, args) -> dict[str, float]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        out = {"sched": scheduler_overhead(client)}
        stored = stored.persist()  # the study maps read once, held by the workers
        aes_run(stored, args.block_size * 2 * workers, args.block_size, 1)  # warm every worker
        p = args.randomizations
        small, large = aes_run(stored, p, args.block_size), aes_run(stored, 2 * p, args.block_size)
        out.update(aes_total=large)
        if workers == 1:  # the model's fit: each phase's marginal cost, then the rest
            v_small = aes_run(stored, p, args.block_size, voxel_p=None)
            v_large = aes_run(stored, 2 * p, args.block_size, voxel_p=None)
            out["voxel_marginal"] = (v_large - v_small) / p
            if p >= UNCORRECTED:  # both runs hold the same voxel null: the difference is the cluster null's
                out["cluster_marginal"] = (large - small) / p
            else:
                out["cluster_marginal"] = (large - small) / p - out["voxel_marginal"]
            n_voxel = min(2 * p, UNCORRECTED)
            tasks = math.ceil(n_voxel / args.block_size) + math.ceil(2 * p / args.block_size)
            out["aes_fixed"] = (large - 2 * p * out["cluster_marginal"] - n_voxel * out["voxel_marginal"]
                                - tasks * out["sched"])
        imputed = impute(stored, args.imputations, seed=1, where=WHERE, name="psi").persist()
        dask.compute(imputed.effect)  # the imputations stay in the workers' memory
        # warm every worker: kernels and the subject noise each builds once per process
        psi_run(stored, args.imputations, args.psi_block * 2 * workers, args.psi_block, 1)
        b = args.psi_permutations
        small = psi_run(stored, args.imputations, b, args.psi_block)
        large = psi_run(stored, args.imputations, 2 * b, args.psi_block)
        out.update(psi_marginal=(large - small) / b, psi_fixed=small - (large - small), psi_total=large)
        out["rss_mb"] = max(client.run(_peak_rss_mb).values())
        del imputed
    return out


def predict(one: dict[str, float], kind: str, units: int, block: int, workers: int, cores: int) -> float:
    """The module's cost model from the one-worker fit: AES in two phases, PSI in one."""
    parallel = min(workers, cores)
    if kind == "psi":
        phases = [(math.ceil(units / block), one["psi_marginal"])]
    else:
        phases = [(math.ceil(min(units, UNCORRECTED) / block), one["voxel_marginal"]),
                  (math.ceil(units / block), one["cluster_marginal"])]
    return one[f"{kind}_fixed"] + sum(math.ceil(tasks / parallel) * block * marginal + tasks * one["sched"]
                                      for tasks, marginal in phases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--randomizations", type=int, default=2000)
    parser.add_argument("--block-size", type=int, default=100)
    parser.add_argument("--imputations", type=int, default=10)
    parser.add_argument("--psi-permutations", type=int, default=20)
    parser.add_argument("--psi-block", type=int, default=10)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    # re-submitting graphs over persisted imputations makes the in-process scheduler warn about
    # keys it has seen with another spec: expected here, and not part of the measurement
    logging.getLogger("distributed.scheduler").setLevel(logging.ERROR)
    print(f"{cores} cores, load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    studies = load_studies(clbp_folder()).select(WHERE)
    maps = recreate(studies).compute()
    store = tempfile.mkdtemp(suffix=".zarr")
    write_group(maps, store, "studies")
    stored = read_group(store, "studies")
    k, v = maps.sizes["study"], maps.sizes["voxel"]
    results = {w: measure(stored, w, args) for w in args.workers}
    print(f"\n{k} studies x {v:,} voxels; AES: {2 * args.randomizations} randomizations in blocks of "
          f"{args.block_size} (voxel + cluster-extent null); PSI: {args.imputations} imputations, "
          f"{2 * args.psi_permutations} permutations in blocks of {args.psi_block}")
    print("workers | sched/task | AES total | PSI total  marginal   fixed | peak RSS")
    for w, r in results.items():
        print(f"{w:7d} | {r['sched'] * 1e3:7.2f} ms | {r['aes_total']:7.2f} s | {r['psi_total']:7.2f} s "
              f"{r['psi_marginal']:6.3f} s {r['psi_fixed']:6.2f} s | {r['rss_mb']:6.0f} MB")
    if 1 in results:
        one = results[1]
        print(f"AES fit on 1 worker: voxel null {one['voxel_marginal'] * 1e3:.2f} ms and cluster-extent "
              f"null {one['cluster_marginal'] * 1e3:.2f} ms per randomization, the rest "
              f"{one['aes_fixed']:.2f} s (the voxel null runs min(B, {UNCORRECTED}) randomizations)")
        print("\nspeed-up from 1 worker (whole runs): " + ", ".join(
            f"{w} workers: AES {one['aes_total'] / r['aes_total']:.2f}x, "
            f"PSI {one['psi_total'] / r['psi_total']:.2f}x"
            for w, r in results.items() if w != 1))
        print("cost model fitted on 1 worker, checked:")
        for w, r in results.items():
            aes = predict(one, "aes", 2 * args.randomizations, args.block_size, w, cores)
            ps = predict(one, "psi", 2 * args.psi_permutations, args.psi_block, w, cores)
            print(f"  {w} workers: AES predicted {aes:6.2f} s, measured {r['aes_total']:6.2f} s; "
                  f"PSI predicted {ps:6.2f} s, measured {r['psi_total']:6.2f} s")
        aes_bytes = k * v * 4 * 2  # float32 effect stack and its arranged copy, once per worker
        # the imputed stack at 50 imputations: a bound, since the null reads it by voxel chunk
        # (at most 64 MiB each) and a worker fetches only the chunks of the tasks it runs
        psi_bytes = 50 * k * v * 4
        print("extrapolation (one core per worker; stacks fetched once per worker at "
              f"{BANDWIDTH / 1e9:.2f} GB/s, spreading as a tree):")
        for w in (10, 100, 1000):
            aes_block = max(1, min(250, 10_000 // w))
            aes = predict(one, "aes", 10_000, aes_block, w, w) + aes_bytes / BANDWIDTH * math.log2(w)
            psi_block_size = max(1, 1000 // w)
            psi_one = dict(one, psi_marginal=one["psi_marginal"] * 50 / args.imputations)
            ps = predict(psi_one, "psi", 1000, psi_block_size, w, w) + psi_bytes / BANDWIDTH * math.log2(w)
            print(f"  {w:5d} workers: AES 10,000 randomizations in blocks of {aes_block}: {aes:7.1f} s; "
                  f"PSI 50 x 1000 in blocks of {psi_block_size}: {ps:7.1f} s "
                  f"(+ imputation; at most {psi_bytes / 1e6:.0f} MB of imputed stack per worker)")


if __name__ == "__main__":
    main()
