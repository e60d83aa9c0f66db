"""Interrupting the command line and running it again resumes from what was completely written."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from daskmeta.io.sdm_writer import write_studyset
from daskmeta.io.store import group_attrs, is_complete

pytestmark = pytest.mark.slow


def _start(config: Path, command: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "daskmeta.app.cli", command, str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended early:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.2)


def _finish(process: subprocess.Popen, timeout: float = 120.0) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, output


@pytest.fixture
def folder(make_studyset, tmp_path):
    return write_studyset(make_studyset(n_studies=6, peaks_per_study=4, seed=12), tmp_path / "studies")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_resumes_without_recomputing_finished_analyses(folder, tmp_path, stop):
    store = tmp_path / "s.zarr"
    config = tmp_path / "analysis.yaml"
    config.write_text(yaml.safe_dump({
        "studies": str(folder), "store": str(store), "out": str(tmp_path / "out"),
        "preprocess": {"anisotropy": 0.0},
        "analyses": {"first": {"type": "mean", "permutations": 3, "seed": 1},
                     "second": {"type": "mean", "permutations": 600, "seed": 2, "block_size": 2}},
    }))
    process = _start(config, "run", "--scheduler", "threads")
    _wait_for(lambda: is_complete(store, "analyses/first"), process)
    _wait_for(lambda: group_attrs(store, "analyses/second") is not None, process)
    time.sleep(1.0)
    process.send_signal(stop)
    code, output = _finish(process)
    assert code != 0, output
    assert "interrupted" in output
    assert is_complete(store, "analyses/first")
    assert group_attrs(store, "analyses/second") is None  # nothing that looks complete, nothing half
    first_written = (store / "analyses" / "first" / "zarr.json").stat().st_mtime_ns

    config.write_text(config.read_text().replace("permutations: 600", "permutations: 6"))
    code, output = _finish(_start(config, "run", "--scheduler", "threads"), timeout=240)
    assert code == 0, output
    assert "analyses/first: complete" in output and "not recomputed" in output
    assert (store / "analyses" / "first" / "zarr.json").stat().st_mtime_ns == first_written
    assert is_complete(store, "analyses/second")


def test_interrupted_sweep_resumes_with_the_missing_variants(folder, tmp_path):
    store = tmp_path / "s.zarr"
    config = tmp_path / "sweep.yaml"
    sweep = {"name": "k", "analysis": {"permutations": 30, "seed": 1, "block_size": 5},
             "grid": {"fwhm": [10, 15, 20, 25, 30], "p": [0.005, 0.01]}}
    config.write_text(yaml.safe_dump({
        "studies": str(folder), "store": str(store), "out": str(tmp_path / "out"),
        "preprocess": {"anisotropy": 0.0}, "sweep": sweep}))
    group = "sweeps/k"
    process = _start(config, "sweep")  # a LocalCluster: variants are recorded as they finish
    _wait_for(lambda: len((group_attrs(store, group) or {}).get("variants_complete", [])) >= 2, process)
    process.send_signal(signal.SIGINT)
    code, output = _finish(process)
    assert code != 0, output
    done = group_attrs(store, group)["variants_complete"]
    assert not is_complete(store, group) and 2 <= len(done) < 11
    kept = read_group_values(store, group, done)

    code, output = _finish(_start(config, "sweep"), timeout=300)
    assert code == 0, output
    assert f"resuming, {len(done)} of 11 variants already complete" in output
    assert is_complete(store, group)
    np.testing.assert_array_equal(read_group_values(store, group, done), kept)


def read_group_values(store: Path, group: str, variants: list[int]) -> np.ndarray:
    """The stored p maps of some variants, read whether or not the group is complete."""
    import xarray as xr

    # read_group refuses incomplete groups; an interrupted sweep is read directly
    return xr.open_zarr(store, group=group, consolidated=False)["p"].isel(variant=variants).values
