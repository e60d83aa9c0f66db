import numpy as np
import pytest
import xarray as xr
import zarr

from daskmeta.analyses.recreate import recreate
from daskmeta.errors import StoreError
from daskmeta.io.store import COMPLETE, FORMAT, is_complete, list_groups, read_group, write_group


def test_zarr_round_trip_is_lazy_and_exact(small_studies, tmp_path):
    maps = recreate(small_studies).compute(scheduler="sync")
    store = tmp_path / "s.zarr"
    write_group(maps, store, "studies")
    back = read_group(store, "studies")
    assert back.effect.chunks is not None  # lazily read (dask-backed)
    for name in ("effect", "effect_lower", "effect_upper", "variance"):
        np.testing.assert_array_equal(back[name].values, maps[name].values)
    assert list(back.study.values) == list(maps.study.values)
    assert list(back.modality.values) == list(maps.modality.values)
    np.testing.assert_array_equal(back.n2.values, maps.n2.values)  # NaN for one-sample rows
    assert back.attrs["fwhm"] == 20.0 and back.attrs[COMPLETE] is True
    assert is_complete(store, "studies") and list_groups(store, "analyses") == []


def test_interrupted_write_leaves_nothing_that_looks_complete(tmp_path):
    ds = xr.Dataset({"z": ("voxel", np.arange(10.0))}, attrs={"mask": "brain"})
    store = tmp_path / "s.zarr"
    write_group(ds, store, "analyses/a")

    def interrupted(delayed):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_group(ds, store, "analyses/b", compute=interrupted)
    assert not is_complete(store, "analyses/b")
    assert list_groups(store, "analyses") == ["a"]
    # a group whose completion flag was never set is refused
    ds.to_zarr(store, group="analyses/c", mode="w", consolidated=False)
    zarr.open_group(store, path="analyses/c", mode="r+").attrs.update({FORMAT: 1, COMPLETE: False})
    with pytest.raises(StoreError, match="incomplete"):
        read_group(store, "analyses/c")


def test_incompatible_store_version_is_refused(tmp_path):
    store = tmp_path / "s.zarr"
    write_group(xr.Dataset({"z": ("voxel", np.zeros(3))}), store, "studies")
    zarr.open_group(store, path="studies", mode="r+").attrs[FORMAT] = 999
    with pytest.raises(StoreError, match="store format 999"):
        read_group(store, "studies")
    with pytest.raises(StoreError, match="no group 'analyses/x'"):
        read_group(store, "analyses/x")


def test_rewrite_replaces_the_group(tmp_path):
    store = tmp_path / "s.zarr"
    write_group(xr.Dataset({"z": ("voxel", np.zeros(3))}), store, "studies")
    write_group(xr.Dataset({"w": ("voxel", np.ones(5))}), store, "studies")
    back = read_group(store, "studies")
    assert list(back.data_vars) == ["w"] and back.sizes["voxel"] == 5
