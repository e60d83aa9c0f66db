"""Thresholding planted blobs on the real grey-matter mask."""

from __future__ import annotations

import re

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import ndimage

from daskmeta.inference.atlas import load_atlas
from daskmeta.inference.thresholding import COLUMNS, Thresholded, threshold
from daskmeta.model.grid import load_mask, mm_to_ijk

POSITIVE = (-38, -22, 56)  # left precentral
SUBPEAK = (-50, -22, 46)  # 15.6 mm from POSITIVE, in the same cluster
NEGATIVE = (40, 16, 0)  # right insula
SMALL = (-4, 50, 20)  # 5 voxels, strong
WEAK = (30, -80, -20)  # large but peak |z| < 1


@pytest.fixture(scope="module")
def gray():
    return load_mask("gray_matter")


def _component(gray, centre_mm, radius_mm):
    """Mask voxels within radius of the centre that connect to it (26-connectivity)."""
    centre = gray.xyz[gray.lookup[tuple(mm_to_ijk(centre_mm)[0])]]
    near = np.linalg.norm(gray.xyz - centre, axis=1) <= radius_mm
    labels, _ = ndimage.label(gray.to_volume(near), structure=np.ones((3, 3, 3)))
    vector = gray.from_volume(labels)
    return vector == vector[gray.lookup[tuple(mm_to_ijk(centre_mm)[0])]]


def _bump(gray, centre_mm, amplitude, sigma_mm=6.0):
    distance2 = np.sum((gray.xyz - np.asarray(centre_mm, dtype=float)) ** 2, axis=1)
    return amplitude * np.exp(-distance2 / (2 * sigma_mm**2))


@pytest.fixture(scope="module")
def planted(gray):
    """z, p and p_q over the mask with the blobs above; p small only inside the blobs."""
    z = np.zeros(gray.n_voxels)
    p = np.full(gray.n_voxels, 0.5)
    blobs = {}

    positive = _component(gray, POSITIVE, 12.0) | _component(gray, SUBPEAK, 8.0)
    z[positive] = (_bump(gray, POSITIVE, 6.0) + _bump(gray, SUBPEAK, 4.0))[positive] + 0.5
    blobs["positive"] = positive

    negative = _component(gray, NEGATIVE, 10.0)
    z[negative] = -(_bump(gray, NEGATIVE, 5.0)[negative] + 0.5)
    blobs["negative"] = negative

    centre = gray.lookup[tuple(mm_to_ijk(SMALL)[0])]
    nearest = np.argsort(np.linalg.norm(gray.xyz - gray.xyz[centre], axis=1))[:5]
    small = np.zeros(gray.n_voxels, dtype=bool)
    small[nearest] = True
    z[small] = 8.0
    blobs["small"] = small

    weak = _component(gray, WEAK, 10.0)
    z[weak] = 0.8
    blobs["weak"] = weak

    for blob in blobs.values():
        p[blob] = 1e-4
    p_q = np.full(gray.n_voxels, 0.5)
    p_q[gray.lookup[tuple(mm_to_ijk(POSITIVE)[0])]] = 1e-4
    i2 = np.linspace(0, 100, gray.n_voxels)
    return {"z": z, "p": p, "p_q": p_q, "i2": i2}, blobs


def _dataset(values, mask_name="gray_matter", chunks=None):
    ds = xr.Dataset({name: ("voxel", value) for name, value in values.items()})
    ds.attrs["mask"] = mask_name
    return ds.chunk({"voxel": chunks}) if chunks else ds


@pytest.fixture(scope="module")
def result(planted):
    return threshold(_dataset(planted[0]))


def test_clusters_kept_and_directions(result, planted, gray):
    _, blobs = planted
    table = result.table
    assert isinstance(result, Thresholded)
    assert list(table.columns[: len(COLUMNS)]) == list(COLUMNS)
    clusters = table.drop_duplicates("cluster")
    assert clusters["cluster"].tolist() == [1, 2]
    assert clusters["direction"].tolist() == ["positive", "negative"]
    assert clusters["voxels"].tolist() == [blobs["positive"].sum(), blobs["negative"].sum()]
    np.testing.assert_array_equal(result.labels == 1, blobs["positive"])
    np.testing.assert_array_equal(result.labels == -2, blobs["negative"])
    assert not np.any(result.labels[blobs["small"] | blobs["weak"]])


def test_voxel_counts_against_scipy(result, planted, gray):
    values, _ = planted
    expected = []
    for sign in (1, -1):
        candidates = gray.to_volume((values["p"] < 0.005) & (sign * values["z"] > 0))
        labels, n = ndimage.label(candidates, structure=np.ones((3, 3, 3)))
        z_volume = gray.to_volume(values["z"])
        sizes = ndimage.sum_labels(candidates, labels, np.arange(1, n + 1))
        peaks = ndimage.maximum(sign * z_volume, labels, np.arange(1, n + 1))
        kept = [int(s) for s, h in zip(sizes, peaks, strict=True) if s >= 10 and h >= 1.0]
        expected += sorted(kept, reverse=True)
    assert result.table.drop_duplicates("cluster")["voxels"].tolist() == expected


def test_peaks(result, gray):
    table = result.table
    first = table[table["peak_type"] == "cluster"]
    assert first[["x", "y", "z"]].values.tolist() == [list(POSITIVE), list(NEGATIVE)]
    assert first["sdm_z"].iloc[0] == pytest.approx(6.5 + 4.0 * np.exp(-(12**2 + 10**2) / 72))
    assert first["sdm_z"].iloc[1] < 0
    positive = table[table["cluster"] == 1]
    assert positive["peak_type"].tolist()[0] == "cluster"
    assert (positive["peak_type"].iloc[1:] == "sub").all()
    assert list(SUBPEAK) in positive[["x", "y", "z"]].values.tolist()
    for _, rows in table.groupby("cluster"):
        xyz = rows[["x", "y", "z"]].to_numpy(float)
        distances = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
        assert np.all(distances[np.triu_indices(len(xyz), 1)] >= 8.0)
        assert np.all(np.abs(rows["sdm_z"].iloc[0]) >= np.abs(rows["sdm_z"]))


def test_breakdown_and_region(result):
    aal = load_atlas("aal")
    for _, row in result.table.iterrows():
        aal_text, ba_text = row["breakdown"].split(" | ")
        for part in (aal_text, ba_text):
            counts = [int(c) for c in re.findall(r"\((\d+)\)", part)]
            assert all(c >= 10 for c in counts)
            assert sum(counts) <= row["voxels"]
        assert row["region"] == aal.name_at([row["x"], row["y"], row["z"]])
    assert result.table["region"].iloc[0] == "Precentral_L"
    assert "Precentral_L" in result.table["breakdown"].iloc[0]
    assert "BA " in result.table["breakdown"].iloc[0]


def test_heterogeneity_and_optional_columns(result, planted, gray):
    values, _ = planted
    table = result.table
    assert table["heterogeneity"].dtype == bool
    assert table["heterogeneity"].tolist() == [True] + [False] * (len(table) - 1)
    assert "i2" in table.columns and "p_fwe" not in table.columns
    voxel = gray.lookup[tuple(mm_to_ijk(NEGATIVE)[0])]
    negative = table[(table["direction"] == "negative") & (table["peak_type"] == "cluster")]
    assert negative["i2"].iloc[0] == values["i2"][voxel]
    assert negative["p"].iloc[0] == values["p"][voxel]

    no_q = {k: v for k, v in values.items() if k != "p_q"} | {"p_fwe": values["p"] * 10}
    other = threshold(_dataset(no_q), atlas=False)
    assert not other.table["heterogeneity"].any()
    assert other.table["p_fwe"].tolist() == pytest.approx([1e-3] * len(other.table))
    assert (other.table["breakdown"] == "").all() and (other.table["region"] == "").all()


def test_extent_and_peak_z(planted):
    values, blobs = planted
    kept = threshold(_dataset(values), extent=5, peak_z=0.5, atlas=False).table
    sizes = sorted(kept.drop_duplicates("cluster")["voxels"].tolist())
    assert sizes == sorted(int(blobs[name].sum()) for name in blobs)
    strict = threshold(_dataset(values), peak_z=6.0, atlas=False).table
    assert strict["direction"].unique().tolist() == ["positive"]


def test_dask_backed_computes_once(planted, result):
    values, _ = planted
    ds = _dataset(values, chunks=40_000)
    calls = []

    def counting_get(dsk, keys, **kwargs):
        calls.append(1)
        return dask.get(dsk, keys, **kwargs)

    with dask.config.set(scheduler=counting_get):
        lazy = threshold(ds)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(lazy.table, result.table)
    np.testing.assert_array_equal(lazy.labels, result.labels)


def test_empty_result(gray):
    values = {"z": np.zeros(gray.n_voxels), "p": np.ones(gray.n_voxels)}
    empty = threshold(_dataset(values))
    assert empty.table.empty
    assert list(empty.table.columns) == list(COLUMNS)
    assert not empty.labels.any()
    assert empty.table["voxels"].dtype == np.int64


def test_to_tsv(result, tmp_path):
    path = tmp_path / "clusters.tsv"
    result.to_tsv(path)
    back = pd.read_csv(path, sep="\t", keep_default_na=False)
    assert back.columns.tolist() == result.table.columns.tolist()
    assert back["voxels"].tolist() == result.table["voxels"].tolist()
    np.testing.assert_allclose(back["sdm_z"], result.table["sdm_z"])
    assert result.labels_volume().shape == (91, 109, 91)


def test_errors(planted, gray):
    values, _ = planted
    ds = _dataset(values)
    with pytest.raises(TypeError, match="xarray.Dataset"):
        threshold(values)
    with pytest.raises(ValueError, match="'z' and 'p'"):
        threshold(ds.drop_vars("p"))
    with pytest.raises(ValueError, match="attrs"):
        threshold(xr.Dataset(ds.data_vars))
    with pytest.raises(ValueError, match="voxels"):
        threshold(ds, mask="brain")
    with pytest.raises(ValueError, match="p must be"):
        threshold(ds, p=0.0)
    with pytest.raises(ValueError, match="extent"):
        threshold(ds, extent=2.5)
    with pytest.raises(ValueError, match="peak_z"):
        threshold(ds, peak_z=-1)
    with pytest.raises(ValueError, match="dimension 'voxel'"):
        threshold(ds.expand_dims(contrast=2))
    assert len(threshold(ds, mask=gray, atlas=False).table) > 0


def test_replicated_needs_the_same_sign_and_one_shared_voxel():
    from daskmeta.inference.thresholding import replicated

    reference = np.array([1, 1, 0, -2, -2, 3, 0])
    labels = np.array([0, 5, 0, 4, 0, 0, -1])  # cluster 1 overlapped by a positive one;
    # cluster -2 only by a positive one (wrong sign); cluster 3 not at all
    assert replicated(reference, labels) == {1: True, -2: False, 3: False}
    assert replicated(reference, -labels) == {1: False, -2: True, 3: False}
    assert replicated(np.zeros(4, int), labels) == {}
