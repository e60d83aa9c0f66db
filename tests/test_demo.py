"""``daskmeta demo`` runs the packaged example from any working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from daskmeta.app.config import load_config
from daskmeta.datasets import clbp_config, clbp_folder, clbp_table_path
from daskmeta.io import load_studies


def test_the_example_ships_with_the_package():
    folder = clbp_folder()
    assert (folder / "sdm_table.txt").is_file() and clbp_table_path().is_file()
    studies = load_studies(folder)
    assert len(studies.studies) == 24 and set(studies.studies["modality"]) == {"ReHo", "ALFF"}
    config = load_config(clbp_config())
    assert set(config.analyses) == {"reho", "alff", "functional", "reho_vs_alff", "overlap", "reho_psi"}
    # the repository's examples/clbp is the packaged folder, not a copy
    repository = Path(__file__).resolve().parents[1] / "examples" / "clbp"
    assert repository.resolve() == folder.resolve()


@pytest.mark.slow
def test_demo_runs_outside_the_repository(tmp_path):
    env = {**os.environ, "DASKMETA_PROGRESS": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "daskmeta", "demo", "--permutations", "4", "--scheduler", "threads"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for analysis in ("reho", "alff", "functional", "reho_vs_alff", "overlap", "reho_psi"):
        assert (tmp_path / "results" / "clbp" / analysis / "clusters.tsv").is_file(), analysis
    clusters = pd.read_csv(tmp_path / "results" / "clbp" / "reho" / "clusters.tsv", sep="\t")
    assert len(clusters) > 0 and {"sdm_z", "p", "voxels", "jackknife"} <= set(clusters.columns)
    assert (tmp_path / "zarr_store" / "clbp.zarr" / "studies").is_dir()
