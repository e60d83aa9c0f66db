# Dask Gateway server configuration for daskmeta clusters: lets users pick the daskmeta image
# and the size of their workers when they call `gateway.new_cluster(image=..., ...)`.
#
# With the dask-gateway Helm chart, add it to the generated server configuration:
#   helm upgrade --install dask-gateway dask-gateway --repo https://helm.dask.org \
#       -n dask-gateway --create-namespace \
#       --set gateway.backend.image.name=ghcr.io/daskmeta/daskmeta \
#       --set gateway.backend.image.tag=0.1.0 \
#       --set-file gateway.extraConfig.daskmeta=deploy/gateway/config.py
# or, for a dask-gateway-server you run yourself, load it as (part of) dask_gateway_config.py.
#
# The image must contain dask-gateway at the server's release: deploy/requirements-cluster.txt
# pins it. Object-store credentials come from the worker pods' service account (IRSA / EKS Pod
# Identity, GKE Workload Identity), never from this file.
from dask_gateway_server.options import Float, Integer, Options, Select

c = get_config()  # noqa: F821 - provided by the traitlets configuration loader

DASKMETA_IMAGE = "ghcr.io/daskmeta/daskmeta:0.1.0"


def daskmeta_options(options):
    """Turn the user's choices into cluster configuration (KubeClusterConfig fields)."""
    return {
        "image": options.image,
        "worker_cores": options.worker_cores,
        "worker_cores_limit": options.worker_cores,
        "worker_memory": int(options.worker_memory * 2**30),
        "worker_memory_limit": int(options.worker_memory * 2**30),
        # daskmeta's kernels are single-threaded NumPy: one thread per core
        "worker_threads": options.worker_cores,
        "environment": {"OMP_NUM_THREADS": "1",
                        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "5"},
    }


c.Backend.cluster_options = Options(
    # only images the administrator lists here can be started
    Select("image", [DASKMETA_IMAGE], default=DASKMETA_IMAGE, label="Image"),
    Integer("worker_cores", default=1, min=1, max=4, label="Worker cores"),
    Float("worker_memory", default=4, min=1, max=32, label="Worker memory (GiB)"),
    handler=daskmeta_options,
)
c.ClusterConfig.idle_timeout = 3600  # seconds: stop clusters left without a client
# the image's Dask commands (it also has the default dask-scheduler / dask-worker names)
c.ClusterConfig.scheduler_cmd = ["dask", "scheduler"]
c.ClusterConfig.worker_cmd = ["dask", "worker"]
