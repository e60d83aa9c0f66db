"""Sensitivity sweeps: variant plan, shared work, equality with single analyses, resume."""

import dask
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from daskmeta.analyses.means import mean
from daskmeta.analyses.recreate import recreate
from daskmeta.analyses.sweep import plan, run_sweep_to_store, study_subsets, sweep_key, sweep_maps
from daskmeta.app.cli import app
from daskmeta.inference.replication import stability
from daskmeta.io.store import group_attrs, is_complete, read_group, region_write, start_group, update_attrs

PREPROCESS = {"mask": "gray_matter", "fwhm": 20.0, "anisotropy": 0.0, "beta": 1.0}
THRESHOLD = {"p": 0.005, "peak_z": 1.0, "extent": 10}
SWEEP = {"name": "s", "analysis": {"permutations": 3, "seed": 1, "block_size": 2},
         "grid": {"fwhm": [15.0, 20.0], "p": [0.005, 0.01]}, "subsets": {"leave_out": 1}}


@pytest.fixture(scope="module")
def studies(make_studyset):
    return make_studyset(n_studies=5, peaks_per_study=4, seed=8)


def test_plan_shares_kernels_and_analyses(studies):
    variants = plan(studies, SWEEP, PREPROCESS, THRESHOLD)
    assert variants.loc[0, "reference"] and variants.loc[0, "fwhm"] == 20.0
    assert len(variants) == 1 + 2 * 2 * (1 + 5)  # reference + fwhm x p x (all + leave-one-out)
    assert variants["kernel_key"].nunique() == 2
    # threshold variants share the pooled analysis; the reference equals a grid variant
    assert variants["analysis_key"].nunique() == 2 * (1 + 5)
    left = variants[variants["subset"] == "without study00"]
    assert (left["n_studies"] == 4).all() and not left["studies"].str.contains("study00").any()


def test_subsets_where_and_random(studies):
    spec = {"where": ["modality == 'A'"], "random": {"n": 3, "fraction": 0.6}}
    subsets = study_subsets(studies, None, spec)
    labels = [label for label, _ in subsets]
    assert labels[0] == "all" and "where modality == 'A'" in labels and labels[-1] == "random 3"
    assert all(len(names) == 3 for label, names in subsets if label.startswith("random"))
    with pytest.raises(ValueError, match="at least 2"):
        study_subsets(studies, None, {"where": ["age > 1000"]})


def test_one_graph_without_repeated_work_equals_single_analyses(studies):
    variants = plan(studies, SWEEP, PREPROCESS, THRESHOLD)
    maps = sweep_maps(studies, variants, SWEEP, PREPROCESS, "s")
    graph = dict(maps.p.data.__dask_graph__())
    # one recreation per kernel and study
    assert sum("_recreate_task" in str(key) for key in graph) == 2 * len(studies)
    blocks = [key for key in graph if str(key).startswith("randomization-")]
    assert len(blocks) == 12 * 2  # 12 pooled analyses x 2 blocks of randomizations
    with dask.config.set(scheduler="threads"):
        computed = maps.compute()
    row = variants[(variants.fwhm == 15.0) & (variants.subset == "without study02")].iloc[0]
    single = mean(recreate(studies, fwhm=15.0, anisotropy=0.0), studies=row.studies.split(";"),
                  permutations=3, seed=1, name="sweeps/s", block_size=2, voxel_p=None)
    single = single.compute(scheduler="threads")
    np.testing.assert_array_equal(computed.p.values[row.variant], single.p.values)
    np.testing.assert_allclose(computed.z.values[row.variant], single.z.values.astype(np.float32))
    twin = variants[(variants.analysis_key == row.analysis_key) & (variants.variant != row.variant)]
    np.testing.assert_array_equal(computed.p.values[twin.variant.iloc[0]], computed.p.values[row.variant])


def test_resume_writes_only_missing_variants(studies, tmp_path):
    variants = plan(studies, SWEEP, PREPROCESS, THRESHOLD)
    maps = sweep_maps(studies, variants, SWEEP, PREPROCESS, "s")
    key, store, group = sweep_key(variants, SWEEP, PREPROCESS, "h"), tmp_path / "s.zarr", "sweeps/s"
    # an interrupted run: the group exists, 5 variants were written and recorded
    start_group(maps.assign_attrs(sweep_key=key, variants_complete=[]), store, group)
    with dask.config.set(scheduler="threads"):
        dask.compute(*[region_write(maps, store, group, "variant", v) for v in range(5)])
    update_attrs(store, group, variants_complete=list(range(5)))
    assert not is_complete(store, group)
    with dask.config.set(scheduler="threads"):
        written = run_sweep_to_store(maps, store, group, key)
    assert written == list(range(5, len(variants)))
    assert is_complete(store, group) and group_attrs(store, group)["variants_complete"] == list(
        range(len(variants)))
    assert run_sweep_to_store(maps, store, group, key) == []  # complete: nothing recomputed
    stored = read_group(store, group).compute()
    with dask.config.set(scheduler="threads"):
        fresh = maps.compute()
    np.testing.assert_array_equal(stored.p.values, fresh.p.values)
    summary, detail, reference = stability(stored)
    assert (summary["variants"] == len(variants)).all()
    assert detail.shape == (len(summary), 1 + len(variants))
    assert detail.iloc[:, 1].all()  # every reference cluster survives in the reference


def test_sweep_command(studies, tmp_path):
    from daskmeta.io.sdm_writer import write_studyset

    folder = write_studyset(studies, tmp_path / "studies")
    config = {"studies": str(folder), "store": str(tmp_path / "s.zarr"), "out": str(tmp_path / "out"),
              "preprocess": {"fwhm": 20, "anisotropy": 0.0}, "threshold": THRESHOLD, "sweep": SWEEP}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["sweep", str(path), "--scheduler", "threads"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "sweeps" / "s"
    for name in ("variants.tsv", "stability.tsv", "stability_detail.tsv", "stability.png",
                 "significant_fraction.nii.gz"):
        assert (out / name).exists()
    again = CliRunner().invoke(app, ["sweep", str(path), "--scheduler", "threads"])
    assert again.exit_code == 0 and "not recomputed" in again.output
    bad = dict(config, sweep={**SWEEP, "grid": {"kernel": [1]}})
    path.write_text(yaml.safe_dump(bad))
    failed = CliRunner().invoke(app, ["sweep", str(path), "--scheduler", "threads"])
    assert failed.exit_code == 2 and "sweep.grid.kernel" in failed.output
