"""Run daskmeta on a Dask Gateway cluster started from the daskmeta image.

Needs ``pip install -c deploy/constraints.txt -r deploy/requirements-cluster.txt`` next to
daskmeta on the client (dask-gateway at the server's release) and a gateway that offers the
options of ``deploy/gateway/config.py``.

    python deploy/gateway/client.py --address https://GATEWAY --workers 8 -- run CONFIG.yaml
        starts a cluster, runs that daskmeta command on it (``--scheduler`` is added), stops it
    python deploy/gateway/client.py --address https://GATEWAY --workers 8 --keep
        starts a cluster, prints its name and dashboard and keeps it until Ctrl-C (with
        --keep, after that too); later: ``--cluster NAME -- run CONFIG.yaml``

Gateway clusters talk TLS with per-cluster credentials through the gateway's proxy
(``gateway://`` addresses), which is why the daskmeta command runs inside this script: it
registers the ``gateway://`` protocol and hands the cluster's credentials to Dask.
"""

from __future__ import annotations

import argparse
import sys

from daskmeta.app.launch import hold_until_interrupted, run_command

IMAGE = "ghcr.io/daskmeta/daskmeta:0.1.0"


def security_config(security) -> dict:
    """Dask settings that make ``Client(address)`` use a gateway cluster's TLS credentials.

    ``security`` is ``GatewayCluster.security``: the cluster's certificate (also its CA) and key,
    in memory; Dask accepts PEM contents in place of file paths.
    """
    return {
        "distributed.comm.require-encryption": True,
        "distributed.comm.tls.ca-file": security.tls_cert,
        "distributed.comm.tls.client.cert": security.tls_cert,
        "distributed.comm.tls.client.key": security.tls_key,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=None,
                        help="gateway URL (default: the gateway.address Dask setting)")
    parser.add_argument("--cluster", default=None, help="connect to this running cluster")
    parser.add_argument("--workers", type=int, default=4, help="number of workers (default 4)")
    parser.add_argument("--image", default=IMAGE, help=f"image (default {IMAGE})")
    parser.add_argument("--worker-cores", type=int, default=1, help="cores per worker (default 1)")
    parser.add_argument("--worker-memory", type=float, default=4,
                        help="GiB per worker (default 4)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running on exit")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="after --: a daskmeta command to run on the cluster, e.g. run CONFIG.yaml")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    import dask
    from dask_gateway import Gateway  # also registers the gateway:// protocol with distributed

    gateway = Gateway(args.address)
    if args.cluster:
        cluster = gateway.connect(args.cluster, shutdown_on_close=not args.keep)
    else:
        cluster = gateway.new_cluster(image=args.image, worker_cores=args.worker_cores,
                                      worker_memory=args.worker_memory,
                                      shutdown_on_close=not args.keep)
    try:
        cluster.scale(args.workers)
        print(f"cluster: {cluster.name}", flush=True)
        print(f"dashboard: {cluster.dashboard_link}", file=sys.stderr, flush=True)
        if command:
            with dask.config.set(security_config(cluster.security)):
                return run_command(command, cluster.scheduler_address)
        hold_until_interrupted()
        return 0
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
