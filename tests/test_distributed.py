"""Real Dask clusters: scheduler and worker processes on loopback, a killed worker, TLS.

Every result must be bit-identical to the synchronous scheduler's: each randomization draws
from its own seed, whatever the workers, the transport or the retries after a lost worker.
"""

from __future__ import annotations

import os

import dask
import distributed
import numpy as np
import pytest
import yaml
from cluster_helpers import (
    KillOnTask,
    dask_processes,
    flatten,
    make_certificates,
    tls_config,
    wait_for_workers,
)
from typer.testing import CliRunner

from daskmeta.analyses.means import mean
from daskmeta.analyses.recreate import recreate
from daskmeta.app.cli import app
from daskmeta.app.dask_client import cluster_client, compute
from daskmeta.app.workflow import run_config
from daskmeta.io.store import is_complete, read_group
from daskmeta.testing.simulate import TrueEffect, simulate_studies
from daskmeta.testing.synthetic import simulate_table

#: Several randomization tasks (block_size 2), both passes (voxel and cluster-extent null).
PARAMS = {"permutations": 8, "seed": 5, "name": "loopback", "block_size": 2}
#: LocalCluster dashboards on a free port (8787 may be taken; the tests never open them).
NO_DASHBOARD = "127.0.0.1:0"
COMPARED = ("z", "p", "p_fwe", "null_hist", "null_max_z", "null_min_z",
            "null_max_cluster_pos", "null_max_cluster_neg")


def assert_same(result, reference, names=COMPARED):
    for name in names:
        np.testing.assert_array_equal(result[name].values, reference[name].values, err_msg=name)


@pytest.fixture(scope="module")
def maps(make_studyset):
    studies = make_studyset(n_studies=5, peaks_per_study=3, seed=11)
    return recreate(studies, anisotropy=0.0).persist(scheduler="threads")


@pytest.fixture(scope="module")
def reference(maps):
    return mean(maps, **PARAMS).compute(scheduler="synchronous")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    table = simulate_table(6, seed=4, n_peaks_range=(2, 5), modalities=["A", "B"])
    effect = TrueEffect(-38.0, -26.0, 56.0, sign=1, probability=0.9, name="s1")
    return simulate_studies(table, [effect], tmp_path_factory.mktemp("in") / "studies", seed=4)


def _config(directory, folder):
    directory.mkdir()
    config = {
        "studies": str(folder), "store": str(directory / "s.zarr"), "out": str(directory / "out"),
        "preprocess": {"mask": "gray_matter", "fwhm": 20, "anisotropy": 0.0},
        "threshold": {"p": 0.005, "peak_z": 1.0, "extent": 10},
        "analyses": {"all": {"type": "mean", "permutations": 6, "seed": 1, "block_size": 2}},
    }
    path = directory / "analysis.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, directory / "s.zarr"


@pytest.fixture(scope="class")
def loopback(tmp_path_factory):
    """A ``dask scheduler`` and two ``dask worker`` processes over TCP on 127.0.0.1."""
    with dask_processes(tmp_path_factory.mktemp("loopback"), n_workers=2) as cluster:
        with distributed.Client(cluster.address, timeout=60) as client:
            wait_for_workers(client, 2, cluster)
        yield cluster
    assert not cluster.alive()


class TestLoopbackProcesses:
    """``dask scheduler`` and ``dask worker`` processes, ended once this class is done."""

    def test_same_numbers_as_a_local_cluster_and_one_thread(self, loopback, maps, reference):
        assert loopback.address.startswith("tcp://127.0.0.1:")
        with cluster_client(loopback.address, quiet=True) as client:
            wait_for_workers(client, 2, loopback)
            pids = client.run(os.getpid)
            assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
            before = client.run(lambda dask_worker: dask_worker.state.executed_count)
            remote = compute(mean(maps, **PARAMS), client, progress=False)
            after = client.run(lambda dask_worker: dask_worker.state.executed_count)
        # both worker processes computed part of the graph
        assert all(after[worker] > before[worker] for worker in after), (before, after)
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=NO_DASHBOARD, host="127.0.0.1") as cluster, \
                distributed.Client(cluster) as client:
            local = compute(mean(maps, **PARAMS), client, progress=False)
        assert_same(remote, reference)
        assert_same(local, reference)
        assert remote.attrs == local.attrs == reference.attrs

    def test_cli_run_there_writes_the_store_of_a_local_run(self, loopback, folder, tmp_path):
        remote_config, remote_store = _config(tmp_path / "remote", folder)
        with distributed.Client(loopback.address, timeout=60) as client:
            before = client.run(lambda dask_worker: dask_worker.state.executed_count)
            result = CliRunner().invoke(app, ["run", str(remote_config), "--scheduler", loopback.address])
            after = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert result.exit_code == 0, result.output
        # the recreation and the analysis ran on the worker processes
        assert sum(after.values()) > sum(before.values()) + 10, (before, after)
        local_config, local_store = _config(tmp_path / "local", folder)
        run_config(local_config, scheduler="synchronous")
        for group in ("studies", "analyses/all"):
            assert is_complete(remote_store, group) and is_complete(local_store, group)
            remote = read_group(remote_store, group).compute()
            local = read_group(local_store, group).compute()
            assert sorted(remote.data_vars) == sorted(local.data_vars)
            for name in remote.data_vars:
                np.testing.assert_array_equal(remote[name].values, local[name].values, err_msg=name)
        assert (tmp_path / "remote" / "out" / "all" / "z.nii.gz").exists()


#: Eight blocks per pass: each worker runs several, the kill falls on the second.
KILL_PARAMS = {"permutations": 16, "seed": 7, "name": "kill", "block_size": 2}


@pytest.fixture(scope="module")
def expected_after_kill(maps):
    return mean(maps, **KILL_PARAMS).compute(scheduler="synchronous")


@pytest.mark.parametrize("prefix", ["randomization-", "cluster-null-"])
def test_a_worker_killed_mid_run_changes_no_number(maps, expected_after_kill, tmp_path, prefix):
    """SIGKILL a worker process as it starts its second block of a pass (voxel null, then
    cluster null); the nanny restarts it, the scheduler recomputes what the dead worker
    held, and the numbers are those of one thread."""
    sentinel = tmp_path / "killed"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=NO_DASHBOARD, host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        before = client.run(os.getpid)
        client.register_plugin(KillOnTask(prefix, after=2, sentinel=str(sentinel)))
        result = compute(mean(maps, **KILL_PARAMS), client, progress=False)
        assert sentinel.exists(), "no worker was killed"
        killed_pid, key = sentinel.read_text().split()
        assert key.startswith(prefix) and int(killed_pid) in before.values()
        wait_for_workers(client, 2)
        after = client.run(os.getpid)
    # the killed worker is gone and a fresh process took its place; the other one lived on
    assert int(killed_pid) not in after.values()
    assert len(set(before.values()) & set(after.values())) == 1
    assert_same(result, expected_after_kill)


def _tls_result_checks(client, maps, reference):
    assert client.scheduler.address.startswith("tls://127.0.0.1:")
    wait_for_workers(client, 1)
    assert all(worker.startswith("tls://") for worker in client.scheduler_info()["workers"])
    assert_same(compute(mean(maps, **PARAMS), client, progress=False), reference)


def test_tls_processes_with_self_signed_certificates_from_the_config(maps, reference, tmp_path):
    """Scheduler and worker processes read TLS settings from a Dask YAML file (DASK_CONFIG);
    the client from the same file (dask.config) or from a ``distributed.Security``."""
    certificates = make_certificates(tmp_path / "certs")
    config_dir = tmp_path / "dask-config"
    config_dir.mkdir()
    config_file = config_dir / "distributed-tls.yaml"
    config_file.write_text(yaml.safe_dump(tls_config(certificates)))
    with dask_processes(tmp_path / "cluster", n_workers=1, tls=True,
                        config_dir=config_dir) as cluster:
        assert cluster.address.startswith("tls://127.0.0.1:")
        # the user's way: the configuration file, then daskmeta's connection by address
        with dask.config.set(flatten(yaml.safe_load(config_file.read_text()))), \
                cluster_client(cluster.address, quiet=True) as client:
            _tls_result_checks(client, maps, reference)
        # or an explicit Security object
        security = distributed.Security(
            tls_ca_file=certificates["ca"], tls_client_cert=certificates["cert"],
            tls_client_key=certificates["key"], require_encryption=True)
        with distributed.Client(cluster.address, security=security, timeout=60) as client:
            _tls_result_checks(client, maps, reference)
        # a client that does not speak TLS is not let in
        with pytest.raises((OSError, TimeoutError)):
            distributed.Client(cluster.address.replace("tls://", "tcp://"), timeout=3)
    assert not cluster.alive()


def test_tls_local_cluster_with_temporary_credentials(maps, reference):
    security = distributed.Security.temporary()
    assert security.require_encryption
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  protocol="tls", security=security, host="127.0.0.1",
                                  dashboard_address=NO_DASHBOARD) as cluster, \
            distributed.Client(cluster, security=security) as client:
        assert cluster.scheduler_address.startswith("tls://")
        _tls_result_checks(client, maps, reference)
