"""Atlases on the grid: known labels, breakdown counts and the on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest

from daskmeta.inference.atlas import (
    ATLAS_VERSION,
    UNDEFINED,
    breakdown,
    format_breakdown,
    load_atlas,
)
from daskmeta.model.grid import GRID_SHAPE, mm_to_ijk


@pytest.fixture(scope="module")
def aal():
    return load_atlas("aal")


@pytest.fixture(scope="module")
def brodmann():
    return load_atlas("brodmann")


def test_atlas_volumes(aal, brodmann):
    for atlas in (aal, brodmann):
        assert atlas.labels.shape == GRID_SHAPE
        assert np.issubdtype(atlas.labels.dtype, np.integer)
        assert set(np.unique(atlas.labels).tolist()) <= set(atlas.names)
        assert atlas.names[0] == UNDEFINED
    assert len(aal.names) == 121  # AAL2: 120 regions + undefined
    assert "Hippocampus_L" in aal.names.values()
    assert "BA 9" in brodmann.names.values()
    assert not any(name.startswith("Brodmann") for name in brodmann.names.values())


def test_known_locations(aal, brodmann):
    assert aal.name_at([-40, -20, 55]) in {"Precentral_L", "Postcentral_L"}
    assert aal.name_at([40, -20, 55]) in {"Precentral_R", "Postcentral_R"}
    assert aal.name_at((-24, -20, -14)) == "Hippocampus_L"
    assert aal.name_at((24, -20, -14)) == "Hippocampus_R"
    assert brodmann.name_at([-38, -22, 56]) == "BA 4"
    assert aal.name_at([[-24, -20, -14], [0, 0, 200]]) == ["Hippocampus_L", UNDEFINED]


def test_label_at(aal):
    ijk = mm_to_ijk([-24, -20, -14])[0]
    label = aal.label_at(ijk)
    assert isinstance(label, int)
    assert aal.names[label] == "Hippocampus_L"
    labels = aal.label_at([ijk, [-1, 0, 0], [0, 0, 0]])
    assert labels.tolist() == [label, 0, 0]
    with pytest.raises(ValueError, match="shape"):
        aal.label_at([1, 2])


def test_breakdown_counts(aal, brodmann):
    volume = np.zeros(GRID_SHAPE, dtype=bool)
    centre = mm_to_ijk([-40, -20, 50])[0]
    volume[tuple(slice(c - 5, c + 5) for c in centre)] = True  # 1000 voxels, several regions
    for atlas in (aal, brodmann):
        everything = breakdown(volume, atlas, min_voxels=0)
        assert sum(count for _, count in everything) == volume.sum()
        labels, counts = np.unique(atlas.labels[volume], return_counts=True)
        assert dict(everything) == {
            atlas.names[int(label)]: int(count) for label, count in zip(labels, counts, strict=True)
        }
        listed = breakdown(volume, atlas)
        assert listed == [row for row in everything if row[1] >= 10]
        assert [count for _, count in listed] == sorted((c for _, c in listed), reverse=True)
        assert breakdown(np.argwhere(volume), atlas) == listed
    assert breakdown(volume, aal)[0][0] in {"Precentral_L", "Postcentral_L", UNDEFINED}


def test_breakdown_min_voxels(aal):
    ijk = np.argwhere(aal.labels == 4101)[:9]  # 9 voxels of Hippocampus_L
    assert breakdown(ijk, aal) == []
    assert breakdown(ijk, aal, min_voxels=9) == [("Hippocampus_L", 9)]
    assert format_breakdown([("A", 12), ("B", 10)]) == "A (12); B (10)"


def test_breakdown_errors(aal):
    with pytest.raises(TypeError, match="boolean"):
        breakdown(np.zeros(GRID_SHAPE), aal)
    with pytest.raises(ValueError, match="shape"):
        breakdown(np.zeros((5, 2), dtype=int), aal)
    with pytest.raises(ValueError, match="grid"):
        breakdown(np.array([[-1, 0, 0]]), aal)


def test_unknown_atlas():
    with pytest.raises(ValueError, match="'aal', 'brodmann'"):
        load_atlas("harvard_oxford")


def test_cache_round_trip(tmp_path, monkeypatch, aal):
    monkeypatch.setenv("DASKMETA_CACHE", str(tmp_path))
    load_atlas.cache_clear()
    try:
        built = load_atlas("aal")
        path = tmp_path / f"atlas_aal_v{ATLAS_VERSION}.npz"
        assert path.exists()
        assert not list(tmp_path.glob("*.tmp*"))
        load_atlas.cache_clear()
        stored = load_atlas("aal")
        assert stored is not built
        assert load_atlas("aal") is stored  # kept in memory
        np.testing.assert_array_equal(stored.labels, built.labels)
        np.testing.assert_array_equal(stored.labels, aal.labels)
        assert stored.names == built.names
    finally:
        load_atlas.cache_clear()
