"""Extraction at peaks, Egger's test and funnel plots per cluster (docs/methods.md, section 9)."""

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from daskmeta.analyses.recreate import recreate
from daskmeta.inference.bias import EGGER_COLUMNS, extract
from daskmeta.inference.thresholding import empty_table
from daskmeta.model.grid import load_mask
from daskmeta.report.publication_bias import publication_bias
from daskmeta.stats.egger import egger_test
from daskmeta.stats.random_effects import dersimonian_laird

VOXEL_CHUNK = 20_000


@pytest.fixture(scope="module")
def studyset(make_studyset):
    return make_studyset(n_studies=7, peaks_per_study=4, seed=11)


@pytest.fixture(scope="module")
def maps(studyset):
    return recreate(studyset, anisotropy=0.0, voxel_chunk=VOXEL_CHUNK).persist(scheduler="threads")


@pytest.fixture(scope="module")
def mask():
    return load_mask("gray_matter")


@pytest.fixture(scope="module")
def clusters(studyset):
    """Two cluster peaks at two studies' reported peaks (so effects vary), plus a sub-peak."""
    peaks = studyset.peaks
    first, second = peaks.iloc[0], peaks.iloc[5]
    rows = [
        {"cluster": 1, "direction": "positive", "peak_type": "cluster",
         "x": int(first.x), "y": int(first.y), "z": int(first.z), "sdm_z": 3.1},
        {"cluster": 1, "direction": "positive", "peak_type": "sub",
         "x": int(first.x) + 10, "y": int(first.y), "z": int(first.z), "sdm_z": 2.0},
        {"cluster": 2, "direction": "negative", "peak_type": "cluster",
         "x": int(second.x), "y": int(second.y), "z": int(second.z), "sdm_z": -2.7},
    ]
    return pd.DataFrame(rows)


def _brute_nearest(mask, point):
    distance = np.linalg.norm(mask.xyz - np.asarray(point, dtype=np.float64), axis=1)
    return int(distance.argmin()), float(distance.min())


def test_extract_reads_the_maps_at_the_nearest_voxels(maps, mask):
    voxels = np.array([0, 1234, 98_765, mask.n_voxels - 1])
    points = mask.xyz[voxels]
    # the same voxels off their centres, then points outside the mask and off the grid
    shifted = points + np.array([0.6, -0.4, 0.9])
    outside = np.array([[0.0, 0.0, 0.0], [95.0, -20.0, 10.0], [300.0, 300.0, -300.0]])
    values = extract(maps, np.vstack([points, shifted, outside]))

    assert values["effect"].dims == ("point", "study")
    assert values.sizes == {"point": 11, "study": 7}
    assert not isinstance(values["effect"].data, da.Array)
    np.testing.assert_array_equal(values["voxel"].values[:8], np.tile(voxels, 2))
    np.testing.assert_array_equal(values["distance_mm"].values[:4], 0.0)
    np.testing.assert_allclose(values["distance_mm"].values[4:8], np.sqrt(0.36 + 0.16 + 0.81))
    for n, point in enumerate(outside, start=8):
        expected_distance = _brute_nearest(mask, point)[1]
        assert values["distance_mm"].values[n] == pytest.approx(expected_distance, abs=1e-9)
        assert values["distance_mm"].values[n] > 0
    used = values["voxel"].values
    for axis, name in enumerate("xyz"):
        np.testing.assert_array_equal(values[name].values, mask.xyz[used, axis])
    np.testing.assert_array_equal(values["effect"].values, maps.effect.values[:, used].T)
    np.testing.assert_array_equal(values["variance"].values, maps.variance.values[:, used].T)
    assert values["effect"].dtype == maps["effect"].dtype
    np.testing.assert_array_equal(values["study"].values, maps["study"].values)


def test_extract_selects_studies_in_the_order_given(maps, mask):
    points = mask.xyz[[10, 20_000]]
    values = extract(maps, points, studies=["study03", "study01"])
    assert list(values["study"].values) == ["study03", "study01"]
    np.testing.assert_array_equal(values["effect"].values, maps.effect.values[[3, 1]][:, [10, 20_000]].T)
    np.testing.assert_array_equal(values["n1"].values, maps["n1"].values[[3, 1]])
    one = extract(maps, points[0])
    assert one.sizes["point"] == 1


def test_extract_on_numpy_maps_equals_dask(maps, mask):
    points = mask.xyz[[5, 70_000, 150_000]]
    dense = maps.compute()
    xr_dense, xr_lazy = extract(dense, points), extract(maps, points)
    np.testing.assert_array_equal(xr_dense["effect"].values, xr_lazy["effect"].values)
    np.testing.assert_array_equal(xr_dense["variance"].values, xr_lazy["variance"].values)


def test_extract_computes_only_the_chunks_it_needs(counting_scheduler, maps, mask):
    seen = []

    def record(block, block_info=None):
        seen.append(block_info[None]["chunk-location"][1])
        return block

    tracked = maps.assign(
        effect=(("study", "voxel"), maps.effect.data.map_blocks(record, dtype=np.float32)),
        variance=(("study", "voxel"), maps.variance.data.map_blocks(record, dtype=np.float32)),
    )
    voxels = np.array([100, 65_432, 65_433])
    counter = counting_scheduler
    with dask.config.set(scheduler=counter):
        values = extract(tracked, mask.xyz[voxels])
    assert counter.count == 1  # one compute for effect and variance together
    needed = set((voxels // VOXEL_CHUNK).tolist())
    n_chunks = len(maps.effect.data.chunks[1])
    assert len(needed) < n_chunks
    assert set(seen) == needed
    assert len(seen) == 2 * len(needed)  # each needed chunk of effect and variance, once
    np.testing.assert_array_equal(values["effect"].values, maps.effect.values[:, voxels].T)


def test_extract_rejects_bad_input(maps):
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        extract(maps, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="finite"):
        extract(maps, [[np.nan, 0.0, 0.0]])
    with pytest.raises(ValueError, match="study99"):
        extract(maps, [[0.0, 0.0, 0.0]], studies=["study00", "study99"])
    with pytest.raises(ValueError, match="more than once"):
        extract(maps, [[0.0, 0.0, 0.0]], studies=["study00", "study00"])
    with pytest.raises(TypeError, match="list of study names"):
        extract(maps, [[0.0, 0.0, 0.0]], studies="study00")
    with pytest.raises(ValueError, match="attrs\\['mask'\\]"):
        extract(maps.assign_attrs(mask=None), [[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="subset"):
        extract(maps.isel(voxel=slice(0, 100)), [[0.0, 0.0, 0.0]])


@pytest.mark.filterwarnings("ignore:Sending large graph")  # the fixture's in-memory maps
def test_funnel_plots_drawn_on_workers_are_the_same_files(maps, clusters, tmp_path):
    """With a client the funnel plots are rendered on its worker processes and written here:
    the files are those drawn in this process, byte for byte."""
    import distributed

    studies = ["study00", "study01", "study02", "study03", "study04", "study06"]
    here = publication_bias(maps, clusters, studies, tmp_path / "here", analysis="pain")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        there = publication_bias(maps, clusters, studies, tmp_path / "workers", analysis="pain",
                                 client=client)
        ran = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sum(ran.values()) >= 2  # both plots were tasks
    pd.testing.assert_frame_equal(here, there)
    names = sorted(p.name for p in (tmp_path / "here").iterdir())
    assert names == ["egger.tsv", "funnel_cluster1.png", "funnel_cluster2.png"]
    assert sorted(p.name for p in (tmp_path / "workers").iterdir()) == names  # no temporary left
    for name in names:
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "workers" / name).read_bytes()


def test_publication_bias_equals_the_kernels(maps, clusters, tmp_path):
    studies = ["study00", "study01", "study02", "study03", "study04", "study06"]
    table = publication_bias(maps, clusters, studies, tmp_path, analysis="pain")

    assert list(table.columns) == list(EGGER_COLUMNS)
    assert table["cluster"].tolist() == [1, 2]
    assert table["direction"].tolist() == ["positive", "negative"]
    main = clusters[clusters["peak_type"] == "cluster"]
    np.testing.assert_array_equal(table[["x", "y", "z"]].to_numpy(), main[["x", "y", "z"]].to_numpy())
    values = extract(maps, main[["x", "y", "z"]].to_numpy(), studies)
    for n, row in table.iterrows():
        effect, variance = values["effect"].values[n], values["variance"].values[n]
        expected = egger_test(effect, variance)
        assert row["k"] == len(studies)
        assert row["egger_intercept"] == pytest.approx(float(expected.intercept), rel=1e-12)
        assert row["egger_se"] == pytest.approx(float(expected.intercept_se), rel=1e-12)
        assert row["egger_t"] == pytest.approx(float(expected.t), rel=1e-12)
        assert row["egger_df"] == expected.df == len(studies) - 2
        assert row["egger_p"] == pytest.approx(float(expected.p), rel=1e-12)
        assert row["bias_suggested"] == (float(expected.p) < 0.05)
        pooled = float(dersimonian_laird(effect, variance).effect)
        assert row["pooled_effect"] == pytest.approx(pooled, rel=1e-12)
        assert row["funnel"] == f"funnel_cluster{row['cluster']}.png"
        assert "Sterne" in row["note"]  # 6 < 10 studies
        image = imread(tmp_path / row["funnel"])
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    written = pd.read_csv(tmp_path / "egger.tsv", sep="\t", keep_default_na=False)
    assert list(written.columns) == list(EGGER_COLUMNS)
    assert len(written) == 2
    np.testing.assert_allclose(written["egger_p"].to_numpy(float), table["egger_p"].to_numpy(), rtol=1e-5)
    assert written["funnel"].tolist() == ["funnel_cluster1.png", "funnel_cluster2.png"]


def test_fewer_than_three_studies_gives_nan_and_a_note(maps, clusters, tmp_path):
    table = publication_bias(maps, clusters, ["study00", "study03"], tmp_path)
    for name in ("egger_intercept", "egger_se", "egger_t", "egger_p"):
        assert table[name].isna().all()
    assert table["egger_df"].isna().all()
    assert table["bias_suggested"].isna().all()
    assert table["note"].str.contains("at least 3 studies").all()
    assert (table["k"] == 2).all()
    assert np.isfinite(table["pooled_effect"]).all()  # the mean needs only 2
    assert all((tmp_path / name).exists() for name in table["funnel"])

    single = publication_bias(maps, clusters, ["study00"], tmp_path / "one")
    assert single["pooled_effect"].isna().all()
    assert (single["funnel"] == "").all()
    assert single["note"].str.contains("at least 2 studies").all()
    assert not list((tmp_path / "one").glob("*.png"))


def test_equal_variances_skip_egger_with_a_note(maps, clusters, tmp_path):
    equal = maps.compute().assign(variance=lambda ds: ds.variance * 0 + np.float32(0.05))
    table = publication_bias(equal, clusters, ["study00", "study01", "study03", "study04"], tmp_path)
    assert table["egger_p"].isna().all()
    assert table["note"].str.contains("same variance").all()
    assert np.isfinite(table["pooled_effect"]).all()


def test_studies_without_a_value_are_left_out_and_named(maps, clusters, tmp_path):
    dense = maps.compute()
    dense["variance"].values[2, :] = np.nan
    studies = ["study00", "study01", "study02", "study03"]
    table = publication_bias(dense, clusters, studies, tmp_path)
    assert (table["k"] == 3).all()
    assert table["note"].str.contains("left out 1 studies").all()
    assert table["note"].str.contains("study02").all()
    assert np.isfinite(table["egger_p"]).all()
    kept = ["study00", "study01", "study03"]
    values = extract(maps, clusters.loc[clusters["peak_type"] == "cluster", ["x", "y", "z"]], kept)
    expected = egger_test(values["effect"].values, values["variance"].values, axis=1)
    np.testing.assert_allclose(table["egger_p"].to_numpy(), expected.p, rtol=1e-12)


def test_all_zero_effects_give_an_undefined_t_and_a_note(maps, clusters, tmp_path):
    # no peak of these studies is near cluster 2's peak: all their effects there are 0
    studies = ["study00", "study02", "study03"]
    values = extract(maps, clusters[["x", "y", "z"]].to_numpy()[[2]], studies)
    assert np.all(values["effect"].values == 0)
    table = publication_bias(maps, clusters, studies, tmp_path).set_index("cluster")
    assert np.isnan(table.loc[2, "egger_t"])
    assert pd.isna(table.loc[2, "bias_suggested"])
    assert "exactly on Egger's regression line" in table.loc[2, "note"]


def test_empty_clusters_table_writes_an_empty_egger_tsv(maps, tmp_path):
    table = publication_bias(maps, empty_table(), ["study00", "study01", "study02"], tmp_path)
    assert list(table.columns) == list(EGGER_COLUMNS)
    assert len(table) == 0
    written = pd.read_csv(tmp_path / "egger.tsv", sep="\t")
    assert list(written.columns) == list(EGGER_COLUMNS)
    assert len(written) == 0


def test_publication_bias_rejects_bad_tables(maps, clusters, tmp_path):
    with pytest.raises(ValueError, match="peak_type"):
        publication_bias(maps, clusters.drop(columns="peak_type"), ["study00"], tmp_path)
    doubled = pd.concat([clusters, clusters.iloc[[0]]])
    with pytest.raises(ValueError, match=r"cluster\(s\) \[1\]"):
        publication_bias(maps, doubled, ["study00", "study01", "study02"], tmp_path)
    with pytest.raises(TypeError, match="list of study names"):
        publication_bias(maps, clusters, "study00", tmp_path)
