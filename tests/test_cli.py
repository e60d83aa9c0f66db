"""The command line: preprocess, run (with resume), info, export, and clear failures."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from daskmeta.app.cli import app
from daskmeta.io.store import is_complete, read_group
from daskmeta.model.grid import GRID_AFFINE
from daskmeta.testing.simulate import TrueEffect, simulate_studies
from daskmeta.testing.synthetic import simulate_table

runner = CliRunner()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    table = simulate_table(8, seed=4, n_peaks_range=(2, 6), modalities=["A", "B"],
                           covariates={"age": (20, 60)})
    effect = TrueEffect(-38.0, -26.0, 56.0, sign=1, probability=0.9, name="s1")
    return simulate_studies(table, [effect], tmp_path_factory.mktemp("in") / "studies", seed=4)


def _config(tmp_path, folder, **analyses):
    config = {
        "studies": str(folder), "store": str(tmp_path / "s.zarr"), "out": str(tmp_path / "out"),
        "preprocess": {"mask": "gray_matter", "fwhm": 20, "anisotropy": 0.0},
        "threshold": {"p": 0.005, "peak_z": 1.0, "extent": 10},
        "analyses": analyses or {"all": {"type": "mean", "permutations": 4, "seed": 1},
                                 "a": {"type": "mean", "where": "modality == 'A'",
                                       "permutations": 4, "seed": 2}},
    }
    path = tmp_path / "analysis.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_preprocess_writes_a_complete_store(folder, tmp_path):
    store = tmp_path / "s.zarr"
    result = runner.invoke(app, ["preprocess", str(folder), "--store", str(store),
                                 "--anisotropy", "0", "--scheduler", "synchronous"])
    assert result.exit_code == 0, result.output
    assert is_complete(store, "studies")
    maps = read_group(store, "studies")
    assert maps.sizes["study"] == 8 and maps.attrs["anisotropy"] == 0.0
    info = runner.invoke(app, ["info", str(store)])
    assert info.exit_code == 0 and "8 studies" in info.output


def test_bad_input_fails_clearly_and_writes_nothing(folder, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for path in Path(folder).iterdir():
        (bad / path.name).write_text(path.read_text())
    peak_file = sorted(bad.glob("*.spm_mni.txt"))[0]
    lines = peak_file.read_text().splitlines()
    lines.insert(1, "12 abc 30 4.1")
    peak_file.write_text("\n".join(lines) + "\n")
    store = tmp_path / "s.zarr"
    result = runner.invoke(app, ["preprocess", str(bad), "--store", str(store),
                                 "--scheduler", "synchronous"])
    assert result.exit_code == 2
    assert peak_file.name in result.output and "line 2" in result.output
    assert not store.exists()


def test_run_exports_maps_tables_reports_and_resumes(folder, tmp_path):
    config = _config(tmp_path, folder)
    result = runner.invoke(app, ["run", str(config), "--scheduler", "threads"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    for name in ("all", "a"):
        for variable in ("z", "p", "effect", "i2", "tau2"):
            image = nib.load(out / name / f"{variable}.nii.gz")
            np.testing.assert_allclose(image.affine, GRID_AFFINE)
        table = pd.read_csv(out / name / "clusters.tsv", sep="\t")
        for column in ("direction", "x", "y", "z", "sdm_z", "p", "voxels", "breakdown",
                       "heterogeneity", "cluster_p_fwe"):
            assert column in table.columns
        assert (out / name / "summary.md").read_text().count("Methods") >= 1
        assert (out / name / "glass_brain.png").stat().st_size > 10_000
    stored = read_group(tmp_path / "s.zarr", "analyses/a")
    assert stored.attrs["n_studies"] == 4 and stored.attrs["where"] == "modality == 'A'"
    z = np.asarray(nib.load(out / "a" / "z.nii.gz").dataobj)
    from daskmeta.model.grid import load_mask

    np.testing.assert_allclose(load_mask("gray_matter").from_volume(z), stored.z.values, rtol=1e-6)
    again = runner.invoke(app, ["run", str(config), "--scheduler", "threads"])
    assert again.exit_code == 0
    assert "up to date" in again.output and "not recomputed" in again.output
    exported = runner.invoke(app, ["export", str(tmp_path / "s.zarr"), "a", "--out",
                                   str(tmp_path / "exp")])
    assert exported.exit_code == 0 and (tmp_path / "exp" / "a" / "p_fwe.nii.gz").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"analyses": {"x": {"type": "mean", "where": "modality == 'nothing'"}}}, "selects 0 studies"),
    ({"analyses": {"x": {"type": "median"}}}, "analyses.x.type"),
    ({"analyses": {"x": {"permutations": "many"}}}, "analyses.x.permutations"),
    ({"analyses": {"x": {"engine": "cuda"}}}, "'analyses.x.engine' must be one of"),
])
def test_config_errors_name_the_key(folder, tmp_path, change, message):
    path = _config(tmp_path, folder)
    config = yaml.safe_load(path.read_text())
    config.update(change)
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(path), "--scheduler", "synchronous"])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "s.zarr").exists()


def test_run_every_analysis_type(folder, tmp_path):
    config = _config(
        tmp_path, folder,
        a={"type": "mean", "where": "modality == 'A'", "permutations": 5, "seed": 1,
           "uncorrected_permutations": 3, "jackknife": True, "regressors": ["age"]},
        b={"type": "mean", "where": "modality == 'B'", "permutations": 3, "seed": 2},
        a_vs_b={"type": "compare", "groups": ["modality == 'A'", "modality == 'B'"],
                "permutations": 5, "seed": 3},
        overlap={"type": "multimodal", "of": ["a", "b"]},
    )
    result = runner.invoke(app, ["run", str(config), "--scheduler", "threads"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    table = pd.read_csv(out / "a" / "clusters.tsv", sep="\t")
    assert {"jackknife", "egger_p", "cluster_p_fwe"} <= set(table.columns)
    assert table["jackknife"].dropna().str.endswith("/4").all()
    jackknife = pd.read_csv(out / "a" / "jackknife.tsv", sep="\t")
    assert len(jackknife) == table["cluster"].nunique()
    egger = pd.read_csv(out / "a" / "egger.tsv", sep="\t")
    assert len(egger) == table["cluster"].nunique()
    for row in egger.itertuples():
        assert (out / "a" / row.funnel).exists()
    regression = pd.read_csv(out / "a" / "regression_age" / "clusters.tsv", sep="\t")
    assert {"overlaps_mean", "overlaps_heterogeneity", "scatter"} <= set(regression.columns)
    assert (out / "a" / "regression_age" / "slope.nii.gz").exists()
    assert (out / "a_vs_b" / "z.nii.gz").exists()
    for name in ("clusters.tsv", "clusters_opposite.tsv", "z.nii.gz", "p.nii.gz"):
        assert (out / "overlap" / name).exists()
    store = tmp_path / "s.zarr"
    assert is_complete(store, "analyses/a/jackknife") and is_complete(store, "analyses/a/regression_age")
    assert read_group(store, "analyses/overlap").attrs["of"] == ["a", "b"]
    # the nulls that give uncorrected p only stop at uncorrected_permutations (docs/methods.md, 5.2);
    # the cluster-extent null and a comparison run all their randomizations
    mean_a = read_group(store, "analyses/a")
    assert (mean_a.attrs["permutations"], mean_a.attrs["uncorrected_permutations"]) == (5, 3)
    assert int(mean_a.null_hist.sum()) == 3 * mean_a.sizes["voxel"]
    assert read_group(store, "analyses/a/jackknife").attrs["permutations"] == 3
    assert read_group(store, "analyses/a/regression_age").attrs["permutations"] == 3
    assert read_group(store, "analyses/a_vs_b").attrs["permutations"] == 5
    assert "Jackknife" in (out / "a" / "summary.md").read_text()


def test_multimodal_must_name_mean_analyses(folder, tmp_path):
    config = _config(tmp_path, folder, m={"type": "multimodal", "of": ["x", "y"]})
    result = runner.invoke(app, ["run", str(config), "--scheduler", "synchronous"])
    assert result.exit_code == 2 and "analyses.m.of" in result.output
