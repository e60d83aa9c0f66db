"""Terminal and log file of a run, and where a LocalCluster's dashboard listens."""

from __future__ import annotations

import functools
import logging
import socket
import subprocess
import sys
import warnings

import pytest
import yaml
from typer.testing import CliRunner

from daskmeta.app import workflow
from daskmeta.app.cli import app
from daskmeta.app.dask_client import cluster_client
from daskmeta.app.logs import LOG_NAME, WORKER_ENV, log_to_file
from daskmeta.model import grid
from daskmeta.testing.simulate import TrueEffect, simulate_studies
from daskmeta.testing.synthetic import simulate_table

#: What the scheduler's shuffle plugin logs on the terminal without the log file.
SHUFFLE = "Shuffle test-shuffle initialized by task"
WORKER_SAYS = "a warning logged in a worker process"


def _dashboard_hosts(client) -> set[str]:
    """The hosts the scheduler's dashboard (HTTP) server listens on."""
    sockets = client.cluster.scheduler.http_server._sockets.values()
    return {sock.getsockname()[0] for sock in sockets if sock.family == socket.AF_INET}


def test_local_dashboard_listens_on_this_machine_only_unless_told():
    with cluster_client(n_workers=1, quiet=True) as client:
        assert _dashboard_hosts(client) == {"127.0.0.1"}
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
    with cluster_client(n_workers=1, quiet=True, dashboard_address="0.0.0.0:0") as client:
        assert _dashboard_hosts(client) == {"0.0.0.0"}


def test_dashboard_address_option_reaches_the_cluster(monkeypatch, tmp_path):
    seen = {}

    def fake_run(config, **kwargs):
        seen.update(kwargs)
        return {}

    monkeypatch.setattr(workflow, "run_config", fake_run)
    for command in (["run", str(tmp_path / "a.yaml")], ["demo"]):
        result = CliRunner().invoke(app, [*command, "--dashboard-address", "0.0.0.0:8787"])
        if command == ["demo"] and "not found" in result.output:
            continue  # demo runs from the repository root only
        assert result.exit_code == 0, result.output
        assert seen.pop("dashboard_address") == "0.0.0.0:8787"
    for command in ("preprocess", "sweep"):
        help_text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        assert "--dashboard-address" in help_text


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    table = simulate_table(4, seed=3, n_peaks_range=(2, 4))
    effect = TrueEffect(-38.0, -26.0, 56.0, sign=1, probability=0.9, name="s1")
    folder = simulate_studies(table, [effect], directory / "studies", seed=3)
    path = directory / "analysis.yaml"
    path.write_text(yaml.safe_dump({
        "studies": str(folder), "store": str(directory / "s.zarr"), "out": str(directory / "out"),
        "preprocess": {"mask": "gray_matter", "fwhm": 20, "anisotropy": 0.0},
        "threshold": {"p": 0.005, "peak_z": 1.0, "extent": 10},
        "analyses": {"all": {"type": "mean", "permutations": 2, "seed": 1}},
    }))
    return path, directory / "out"


def test_run_logs_dask_to_the_output_folder_not_the_terminal(config, monkeypatch, capfd):
    path, out = config
    preprocess = workflow.preprocess_to_store

    def noisy_preprocess(*args, client=None, **kwargs):
        # what distributed logs during real runs, in the scheduler and in a worker process
        logging.getLogger("distributed.shuffle._scheduler_plugin").warning(SHUFFLE)
        client.run(logging.getLogger("distributed.worker").warning, WORKER_SAYS)
        return preprocess(*args, client=client, **kwargs)

    monkeypatch.setattr(workflow, "preprocess_to_store", noisy_preprocess)
    monkeypatch.setattr(workflow, "cluster_client", functools.partial(cluster_client, n_workers=1))
    result = CliRunner().invoke(app, ["run", str(path), "--dashboard-address", "127.0.0.1:0"])
    terminal = result.output + "".join(capfd.readouterr())
    assert result.exit_code == 0, terminal
    assert "distributed." not in terminal and SHUFFLE not in terminal
    assert "dashboard: http://127.0.0.1:" in terminal and "daskmeta: all:" in terminal
    log = (out / LOG_NAME).read_text()
    assert SHUFFLE in log and WORKER_SAYS in log
    # the process' logging is as it was: distributed's own terminal handler is back
    assert not any(getattr(h, "baseFilename", "").endswith(LOG_NAME)
                   for h in logging.getLogger("distributed").handlers)


def test_log_to_file_restores_logging_and_environment(tmp_path):
    logger = logging.getLogger("distributed")
    before = (list(logger.handlers), logger.propagate, logger.level)
    with log_to_file(tmp_path / "out") as path:
        assert WORKER_ENV in __import__("os").environ
        logging.getLogger("tornado.application").error("websocket closed")
    assert (list(logger.handlers), logger.propagate, logger.level) == before
    assert WORKER_ENV not in __import__("os").environ
    assert "websocket closed" in path.read_text()


def test_importing_daskmeta_configures_no_logging():
    code = ("import logging, daskmeta; daskmeta.load_studies; "
            "print(len(logging.getLogger().handlers), 'distributed' in __import__('sys').modules)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert output == ["0", "False"]


def test_resampling_the_brain_mask_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maps = grid._resample_templates()
    assert maps["brain"].dtype == bool


def test_libraries_imported_inside_the_context_log_to_the_file_only(tmp_path):
    """A fresh process (dask imported, distributed not yet) keeps the terminal clean too."""
    code = (
        "import logging, sys\n"
        "import dask  # reads the Dask configuration before the context sets it for workers\n"
        "from daskmeta.app.logs import log_to_file\n"
        f"with log_to_file({str(tmp_path)!r}):\n"
        "    import distributed\n"
        "    logging.getLogger('distributed.shuffle._scheduler_plugin').warning('shuffle notice')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "shuffle notice" not in done.stderr + done.stdout
    assert "shuffle notice" in (tmp_path / "daskmeta.log").read_text()
