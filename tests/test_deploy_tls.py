"""deploy/tls: the certificates and Dask configuration secure a real cluster on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import dask
import dask.array as da
import pytest
import yaml
from distributed import Client
from test_deploy import DEPLOY, dotted, load_module, load_yaml


def test_tls_config_sets_every_role():
    config = load_yaml("tls/distributed.yaml")
    comm = config["distributed"]["comm"]
    assert comm["require-encryption"] is True and comm["default-scheme"] == "tls"
    tls = comm["tls"]
    assert tls["ca-file"] == "/etc/daskmeta/tls/ca.pem"
    for role in ("scheduler", "worker", "client"):
        assert tls[role] == {"cert": f"/etc/daskmeta/tls/{role}.pem",
                             "key": f"/etc/daskmeta/tls/{role}-key.pem"}
    from distributed.security import Security

    with dask.config.set(dotted(config)):
        security = Security()
    assert security.require_encryption is True
    assert security.tls_ca_file == tls["ca-file"]
    assert security.tls_worker_key == tls["worker"]["key"]


def make_certificates(how: str, directory: Path) -> Path:
    """Certificates and config from deploy/tls/make_certs.{py,sh}; returns the config file."""
    if how == "python":
        make_certs = load_module("tls/make_certs.py")
        make_certs.make_certs(directory)
    else:
        if shutil.which("openssl") is None:
            pytest.skip("no openssl command")
        subprocess.run(["bash", str(DEPLOY / "tls/make_certs.sh"), str(directory)], check=True,
                       capture_output=True, timeout=120)
    config = directory / "distributed.yaml"
    for name in ("ca", "scheduler", "worker", "client"):
        assert (directory / f"{name}.pem").is_file()
        assert (directory / f"{name}-key.pem").stat().st_mode & 0o077 == 0, "key readable by others"
    return config


def tls_cluster(config_file: Path):
    """A one-worker cluster on 127.0.0.1 secured by the TLS settings of ``config_file``."""
    from distributed import LocalCluster
    from distributed.security import Security

    with dask.config.set(dotted(yaml.safe_load(config_file.read_text()))):
        security = Security()
    return LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls",
                        host="127.0.0.1", security=security, dashboard_address="127.0.0.1:0")


@pytest.mark.parametrize("how", ["python", "openssl"])
def test_made_certificates_secure_a_cluster_through_the_dask_config(how, tmp_path):
    """What DASK_CONFIG=DIR/distributed.yaml gives: scheduler, worker and client talk TLS."""
    from daskmeta.app.dask_client import cluster_client

    config_file = make_certificates(how, tmp_path / "tls")
    config = yaml.safe_load(config_file.read_text())
    assert config["distributed"]["comm"]["tls"]["client"]["cert"] == str(tmp_path / "tls/client.pem")
    with tls_cluster(config_file) as cluster:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        with dask.config.set(dotted(config)), cluster_client(cluster.scheduler_address, quiet=True) as client:
            workers = client.scheduler_info()["workers"]
            assert workers and all(address.startswith("tls://") for address in workers)
            assert client.compute(da.arange(10, chunks=5).sum()).result() == 45


DASK_CONFIG_ONLY = """
import asyncio
from distributed import Client, Scheduler, Worker

async def main():
    # no protocol, no security arguments: all from the DASK_CONFIG file
    async with Scheduler(host="127.0.0.1", dashboard_address="127.0.0.1:0") as scheduler:
        async with Worker(scheduler.address, nthreads=1) as worker:
            async with Client(scheduler.address, asynchronous=True) as client:
                total = await client.submit(sum, [1, 2, 3])
                print(scheduler.address, worker.address, total)

asyncio.run(main())
"""


def test_dask_config_file_alone_makes_everything_tls(tmp_path):
    """``export DASK_CONFIG=DIR/distributed.yaml`` and nothing else: tls:// everywhere."""
    config_file = make_certificates("python", tmp_path / "tls")
    env = {**os.environ, "DASK_CONFIG": str(config_file)}
    result = subprocess.run([sys.executable, "-c", DASK_CONFIG_ONLY], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    scheduler, worker, total = result.stdout.split()
    assert scheduler.startswith("tls://127.0.0.1:") and worker.startswith("tls://127.0.0.1:")
    assert total == "6"


def test_certificates_of_another_ca_are_refused(tmp_path):

    ours = make_certificates("python", tmp_path / "ours")
    theirs = make_certificates("python", tmp_path / "theirs")
    with tls_cluster(ours) as cluster:
        with dask.config.set(dotted(yaml.safe_load(theirs.read_text()))):
            with pytest.raises((OSError, TimeoutError), match="(?i)tls|ssl|certificate|timed out"):
                Client(cluster.scheduler_address, timeout=3)


def test_gateway_credentials_reach_the_client_through_the_dask_config(monkeypatch):
    """deploy/gateway/client.py hands a gateway cluster's in-memory certificate to Dask."""
    from distributed import LocalCluster
    from distributed.security import Security

    from daskmeta.app.dask_client import cluster_client

    gateway_client = load_module("gateway/client.py", monkeypatch)
    temporary = Security.temporary()  # like a gateway cluster: one self-signed cert and key
    credentials = SimpleNamespace(tls_cert=temporary.tls_client_cert, tls_key=temporary.tls_client_key)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls",
                      host="127.0.0.1", security=temporary, dashboard_address="127.0.0.1:0") as cluster:
        with dask.config.set(gateway_client.security_config(credentials)):
            with cluster_client(cluster.scheduler_address, quiet=True) as client:
                assert client.compute(da.ones(6, chunks=3).sum()).result() == 6
