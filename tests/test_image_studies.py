"""Studies given as statistical maps: conversion, recreation, pooling, the mixed folder end to end.

docs/methods.md, section 3.8. The readers and header checks have their own tests
(tests/test_io_statmap.py); here the maps are written with
:func:`daskmeta.testing.statmaps.write_statmap` and read back through the study set.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pymare
import pytest
import yaml
from pymare.estimators import DerSimonianLaird
from typer.testing import CliRunner

from daskmeta.analyses.means import mean
from daskmeta.analyses.recreate import recreate
from daskmeta.app.cli import app
from daskmeta.io import load_studies
from daskmeta.io.store import read_group
from daskmeta.model.grid import GRID_SHAPE, load_mask
from daskmeta.model.studyset import PEAK_COLUMNS, StudySet
from daskmeta.stats.effect_size import degrees_of_freedom, g_variance, hedges_g, t_from_z
from daskmeta.stats.recreation import statmap_study
from daskmeta.testing.simulate import TrueEffect
from daskmeta.testing.statmaps import simulate_mixed_studies, simulate_statmap, write_statmap
from daskmeta.testing.synthetic import simulate_table

EFFECT = TrueEffect(-38.0, -26.0, 56.0, sign=1, name="motor")


def test_conversion_of_known_and_unknown_voxels():
    values = np.array([3.0, -2.0, 0.0, np.nan, 5.5])
    maps = statmap_study(values, 20.0, 18.0, 3.1)
    effect, lower, upper, variance = maps
    g = hedges_g(values[[0, 1, 4]], 20.0, 18.0)
    np.testing.assert_allclose(effect[[0, 1, 4]], g, rtol=1e-15)
    np.testing.assert_array_equal(lower[[0, 1, 4]], effect[[0, 1, 4]])
    np.testing.assert_array_equal(upper[[0, 1, 4]], effect[[0, 1, 4]])
    np.testing.assert_allclose(variance, g_variance(effect, 20.0, 18.0), rtol=1e-15)
    g_thr = float(hedges_g(3.1, 20.0, 18.0))
    # exact 0 (background) and NaN are unknown: a voxel no peak reaches
    np.testing.assert_array_equal(effect[[2, 3]], 0.0)
    np.testing.assert_allclose(lower[[2, 3]], -g_thr, rtol=1e-15)
    np.testing.assert_allclose(upper[[2, 3]], g_thr, rtol=1e-15)
    np.testing.assert_allclose(variance[[2, 3]], 1 / 20 + 1 / 18, rtol=1e-15)
    # a z map is converted to t at the study's degrees of freedom first
    z_maps = statmap_study(np.array([2.5, -4.0]), 30.0, np.nan, 3.4, stat="z")
    t = t_from_z(np.array([2.5, -4.0]), degrees_of_freedom(30.0, np.nan))
    np.testing.assert_allclose(z_maps[0], hedges_g(t, 30.0, np.nan), rtol=1e-14)
    with pytest.raises(ValueError, match="'stat' must be 't' or 'z'"):
        statmap_study(values, 20.0, 18.0, 3.1, stat="p")


def _image_studyset(folder, n_studies=4, seed=0, one_sample=False):
    """A study set of ``n_studies`` t-maps written to ``folder``; the t values on the grid."""
    mask = load_mask("gray_matter")
    rng = np.random.default_rng(seed)
    rows, volumes = [], []
    for s in range(n_studies):
        n1 = float(rng.integers(15, 40))
        n2 = np.nan if one_sample else float(rng.integers(15, 40))
        t_map = simulate_statmap(n1, n2, [EFFECT], rng, mask, effect_d=1.0)
        t_map[tuple(mask.ijk[s::7].T)] = 0.0  # holes: voxels the study did not cover
        path = write_statmap(t_map, float(degrees_of_freedom(n1, n2)), folder / f"img{s}.nii.gz")
        rows.append({"study": f"img{s}", "n1": n1, "n2": n2, "t_thr": 3.2, "map": str(path),
                     "map_stat": "t"})
        volumes.append(t_map)
    table = pd.DataFrame(rows)
    peaks = pd.DataFrame({column: pd.Series(dtype=object) for column in PEAK_COLUMNS})
    return StudySet(table, peaks, str(folder)), volumes


def test_image_study_map_is_hedges_g_of_its_t_map(tmp_path):
    studies, volumes = _image_studyset(tmp_path, n_studies=2)
    maps = recreate(studies, voxel_chunk=40_000).compute(scheduler="threads")
    assert maps.is_image.values.tolist() == [True, True]
    ijk = load_mask("gray_matter").ijk
    for s, row in enumerate(studies.studies.itertuples(index=False)):
        t = volumes[s][tuple(ijk.T)].astype(np.float64)
        known = t != 0
        expected = hedges_g(t[known], row.n1, row.n2)
        np.testing.assert_allclose(maps.effect.values[s][known], expected, rtol=2e-7)  # float32 storage
        np.testing.assert_array_equal(maps.effect_lower.values[s][known], maps.effect.values[s][known])
        g_thr = float(hedges_g(3.2, row.n1, row.n2))
        np.testing.assert_allclose(maps.effect_upper.values[s][~known], g_thr, rtol=1e-6)
        assert np.isnan(maps.peak_g.values[s]).all()


def test_image_studies_are_read_chunk_by_chunk(tmp_path):
    """One conversion task per study and chunk of voxels; none holds a whole stack."""
    studies, _ = _image_studyset(tmp_path, n_studies=3)
    maps = recreate(studies, voxel_chunk=50_000)
    graph = dict(maps.effect.data.__dask_graph__())
    tasks = [key for key in graph if "_statmap_task" in str(key)]
    n_chunks = -(-load_mask("gray_matter").n_voxels // 50_000)
    assert len(tasks) == 3 * n_chunks


def test_all_image_mean_equals_pymare(tmp_path):
    studies, _ = _image_studyset(tmp_path, n_studies=5, one_sample=True)
    maps = recreate(studies).persist(scheduler="threads")
    result = mean(maps, permutations=3, seed=1).compute(scheduler="threads")
    assert result.attrs["cluster_null"] is False  # relocating peaks needs peak studies
    effect = maps.effect.values.astype(np.float64)
    variance = maps.variance.values.astype(np.float64)
    voxels = np.random.default_rng(2).choice(effect.shape[1], 300, replace=False)
    summary = DerSimonianLaird(small_sample_correction="wald").fit_dataset(
        pymare.Dataset(y=effect[:, voxels], v=variance[:, voxels])).summary()
    fixed = summary.get_fe_stats()
    np.testing.assert_allclose(result.effect.values[voxels], fixed["est"].ravel(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.z.values[voxels], fixed["z"].ravel(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.tau2.values[voxels], np.ravel(summary.tau2), rtol=1e-8, atol=1e-12)


def _correlation(folder_maps, folder_peaks):
    by_map = recreate(load_studies(folder_maps)).compute(scheduler="threads")
    by_peaks = recreate(load_studies(folder_peaks)).compute(scheduler="threads")
    return float(np.corrcoef(by_map.effect.values[0], by_peaks.effect.values[0])[0, 1])


def test_a_map_and_its_peaks_give_correlated_maps(tmp_path):
    """The same simulated study as its t-map and as that map's peaks (docs/methods.md, 3.8)."""
    table = simulate_table(3, seed=4)
    maps_folder = simulate_mixed_studies(table, [EFFECT], tmp_path / "maps", seed=4, n_maps=1)
    peaks_folder = simulate_mixed_studies(table, [EFFECT], tmp_path / "peaks", seed=4, n_maps=1,
                                          peaks_from_maps=True)
    assert (maps_folder / "study01.nii.gz").is_file()
    assert not list(peaks_folder.glob("study01.nii*"))
    r = _correlation(maps_folder, peaks_folder)
    # control: the peaks of another draw of the same study's map (same planted effect, other
    # noise) correlate less; what is shared beyond the effect is the map's own peaks
    other = simulate_mixed_studies(table, [EFFECT], tmp_path / "other", seed=5, n_maps=1,
                                   peaks_from_maps=True)
    r_other = _correlation(maps_folder, other)
    assert r > 0.15 and r > r_other + 0.05, (r, r_other)


def test_mixed_folder_runs_end_to_end(tmp_path):
    runner = CliRunner()
    written = runner.invoke(app, ["simulate", str(tmp_path / "mixed"), "--studies", "5", "--maps", "2",
                                  "--seed", "5", "--effect", "-38,-26,56"])
    assert written.exit_code == 0, written.output
    config = tmp_path / "analysis.yaml"
    config.write_text(yaml.safe_dump({
        "studies": str(tmp_path / "mixed"), "store": str(tmp_path / "s.zarr"),
        "out": str(tmp_path / "out"), "preprocess": {"fwhm": 20, "anisotropy": 0.0},
        "threshold": {"p": 0.05, "peak_z": 1.0, "extent": 10},
        "analyses": {"all": {"type": "mean", "permutations": 5, "seed": 1, "jackknife": True}},
    }))
    done = runner.invoke(app, ["run", str(config), "--scheduler", "threads"])
    assert done.exit_code == 0, done.output
    stored = read_group(str(tmp_path / "s.zarr"), "studies")
    assert stored.is_image.values.tolist() == [True, True, False, False, False]
    clusters = pd.read_csv(tmp_path / "out" / "all" / "clusters.tsv", sep="\t")
    assert {"sdm_z", "jackknife", "cluster_p_fwe"} <= set(clusters.columns)
    assert clusters["cluster_p_fwe"].isna().all()  # no cluster-extent null with image studies
    assert nib.load(tmp_path / "out" / "all" / "z.nii.gz").shape == GRID_SHAPE
