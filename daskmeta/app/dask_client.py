"""Connecting to a Dask cluster: a LocalCluster by default, any scheduler by address.

``scheduler`` may be ``None`` (``$DASK_SCHEDULER_ADDRESS`` if set, else a new
``distributed.LocalCluster`` sized to the machine, dashboard link printed), an address such
as ``tcp://host:8786`` or ``tls://...`` (security from the Dask configuration), or one of
Dask's local schedulers ``"synchronous"`` / ``"threads"`` (no distributed cluster).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import dask

LOCAL_SCHEDULERS = ("synchronous", "threads", "processes")
#: Where a new LocalCluster's scheduler listens: this machine only.
LOCAL_HOST = "127.0.0.1"
#: Where a new LocalCluster serves its dashboard unless told otherwise: this machine only
#: (reach it from elsewhere through an SSH tunnel, see README.md).
DASHBOARD_ADDRESS = f"{LOCAL_HOST}:8787"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def cluster_client(
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = None,
    dashboard_address: str | None = None,
    quiet: bool = False,
    security: Any = None,
) -> Iterator[Any]:
    """Yield a ``distributed.Client`` (or None for a local Dask scheduler).

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler, a local scheduler name, or None.
    n_workers : int, optional
        Workers of a new LocalCluster (default: one per core).
    threads_per_worker : int
        Threads per LocalCluster worker (1: the kernels are single-threaded NumPy).
    memory_limit : optional
        Per-worker memory limit of a new LocalCluster (default: machine memory / workers).
    dashboard_address : str, optional
        Where a new LocalCluster serves its dashboard, ``HOST:PORT`` (another port is
        taken if busy); default :data:`DASHBOARD_ADDRESS`, this machine only.
        ``0.0.0.0:8787`` serves it on every interface.
    security : distributed.Security, optional
        TLS credentials for a ``tls://`` scheduler; default: from the Dask configuration
        (``distributed.comm.tls.*``, e.g. via ``DASK_CONFIG``), see ``deploy/README.md``.
    """
    scheduler = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if scheduler in LOCAL_SCHEDULERS:
        with dask.config.set(scheduler=scheduler):
            yield None
        return
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler, security=security)
        if not quiet:
            say(f"daskmeta: connected to {scheduler}; dashboard: {client.dashboard_link}")
        try:
            yield client
        finally:
            client.close()
        return
    workers = n_workers or max(1, os.cpu_count() or 1)
    with warnings.catch_warnings():
        # a busy dashboard port moves to a free one; the link printed below names it
        warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
            memory_limit=memory_limit or "auto", host=LOCAL_HOST,
            dashboard_address=dashboard_address or DASHBOARD_ADDRESS,
        )
    client = Client(cluster)
    if not quiet:
        say(f"daskmeta: LocalCluster with {workers} worker(s); dashboard: {client.dashboard_link}")
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _interactive() -> bool:
    return sys.stderr.isatty() or os.environ.get("DASKMETA_PROGRESS") == "1"


def compute(obj: Any, client: Any = None, label: str = "", progress: bool = True) -> Any:
    """Compute a Dask collection with a progress bar (on the cluster when ``client`` is set).

    The bar is drawn on a terminal (or with ``DASKMETA_PROGRESS=1``); in logs a start and an
    end line with the elapsed time are printed instead.
    """
    import time

    if label:
        say(label)
    started = time.perf_counter()
    if client is None:
        if progress and _interactive():
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr):
                value = dask.compute(obj)[0]
        else:
            value = dask.compute(obj)[0]
    else:
        future = client.compute(obj)
        if progress and _interactive():
            from distributed import progress as show_progress

            show_progress(future, multi=False)
            print(file=sys.stderr)
        value = future.result()
    if label:
        say(f"    done in {time.perf_counter() - started:.1f} s")
    return value


