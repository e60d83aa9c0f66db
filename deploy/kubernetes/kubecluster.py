"""A daskmeta Dask cluster on Kubernetes from Python: dask-kubernetes' operator ``KubeCluster``.

Needs the dask-kubernetes operator in the Kubernetes cluster (see deploy/README.md), a kubeconfig
(or running in a pod), and ``pip install -c deploy/constraints.txt dask-kubernetes`` next to
daskmeta on the client. Same image and resources as ``daskcluster.yaml``.

    python deploy/kubernetes/kubecluster.py --workers 8
        prints the scheduler address (port-forwarded to localhost when the client is outside
        the Kubernetes cluster) and keeps the cluster until Ctrl-C; in another shell:
        daskmeta run CONFIG.yaml --scheduler tcp://localhost:PORT
    python deploy/kubernetes/kubecluster.py --workers 8 -- run CONFIG.yaml
        runs that daskmeta command on the cluster (``--scheduler`` is added), then removes it

With ``--keep`` the cluster outlives the script (remove it with ``kubectl delete daskcluster
daskmeta``); running the script again with the same ``--name`` connects to it.
"""

from __future__ import annotations

import argparse
import sys

from daskmeta.app.launch import hold_until_interrupted, run_command

IMAGE = "ghcr.io/daskmeta/daskmeta:0.1.0"
NAME = "daskmeta"
WORKER_MEMORY = "4GiB"
WORKER_RESOURCES = {"requests": {"cpu": "1", "memory": "4Gi"},
                    "limits": {"cpu": "1", "memory": "4Gi"}}
SCHEDULER_RESOURCES = {"requests": {"cpu": "1", "memory": "4Gi"},
                       "limits": {"cpu": "2", "memory": "8Gi"}}
ENV = {
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "60s",
    "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "5",
    "OMP_NUM_THREADS": "1",
}
#: the default routes plus the HTTP API, which the operator uses to retire workers gracefully
SCHEDULER_ENV = {
    "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": str([
        "distributed.http.scheduler.prometheus", "distributed.http.scheduler.info",
        "distributed.http.scheduler.json", "distributed.http.health", "distributed.http.proxy",
        "distributed.http.statics", "distributed.http.scheduler.api",
    ]),
}


def cluster_spec(name: str = NAME, n_workers: int = 4, image: str = IMAGE) -> dict:
    """The ``DaskCluster`` resource: ``make_cluster_spec`` with daskmeta's commands and resources."""
    from dask_kubernetes.operator import make_cluster_spec

    spec = make_cluster_spec(name=name, image=image, n_workers=n_workers, env=ENV,
                             worker_command="dask worker")
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    scheduler["args"] = ["dask", "scheduler", "--host", "0.0.0.0"]
    scheduler["resources"] = SCHEDULER_RESOURCES
    scheduler["env"] = [*scheduler["env"], *({"name": k, "value": v} for k, v in SCHEDULER_ENV.items())]
    worker = spec["spec"]["worker"]["spec"]["containers"][0]
    worker["args"] = [*worker["args"], "--nthreads", "1", "--memory-limit", WORKER_MEMORY]
    worker["resources"] = WORKER_RESOURCES
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=NAME, help=f"DaskCluster name (default {NAME})")
    parser.add_argument("--namespace", default=None, help="Kubernetes namespace (default: current)")
    parser.add_argument("--workers", type=int, default=4, help="number of worker pods (default 4)")
    parser.add_argument("--image", default=IMAGE, help=f"image (default {IMAGE})")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running on exit")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="after --: a daskmeta command to run on the cluster, e.g. run CONFIG.yaml")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    from dask_kubernetes.operator import KubeCluster

    cluster = KubeCluster(custom_cluster_spec=cluster_spec(args.name, args.workers, args.image),
                          namespace=args.namespace, shutdown_on_close=not args.keep)
    try:
        cluster.scale(args.workers)
        print(f"DASK_SCHEDULER_ADDRESS={cluster.scheduler_address}", flush=True)
        print(f"dashboard: {cluster.dashboard_link}", file=sys.stderr, flush=True)
        if command:
            return run_command(command, cluster.scheduler_address)
        hold_until_interrupted()
        return 0
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
