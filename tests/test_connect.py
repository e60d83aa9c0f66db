"""Cluster connection: a LocalCluster with a serving dashboard, or any scheduler by address."""

import urllib.request

import dask
import dask.array as da
import pytest

from daskmeta.app.dask_client import cluster_client, compute


def test_local_cluster_prints_a_dashboard_that_serves(capsys):
    with cluster_client(n_workers=1, dashboard_address="127.0.0.1:0") as client:
        link = client.dashboard_link
        assert link in capsys.readouterr().err
        with urllib.request.urlopen(link, timeout=30) as response:
            page = response.read().decode()
        assert response.status == 200 and "Dask" in page
        assert compute(da.ones(10, chunks=5).sum(), client) == 10


def test_existing_scheduler_by_address_and_environment(monkeypatch):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        with cluster_client(cluster.scheduler_address, quiet=True) as client:
            assert client.scheduler.address == cluster.scheduler_address
            assert compute(da.arange(4, chunks=2).sum(), client, progress=False) == 6
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        with cluster_client(quiet=True) as client:
            assert client.scheduler.address == cluster.scheduler_address


@pytest.mark.parametrize("name", ["synchronous", "threads"])
def test_local_schedulers_need_no_cluster(name):
    with cluster_client(name) as client:
        assert client is None
        assert dask.config.get("scheduler") == name
