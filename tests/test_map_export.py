"""Every map-valued DataArray daskmeta returns carries its mask: one variable exports alone."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from daskmeta.analyses.leave_one_out import jackknife
from daskmeta.analyses.linear_models import linear_model
from daskmeta.analyses.means import mean
from daskmeta.analyses.overlap import multimodal
from daskmeta.analyses.recreate import recreate
from daskmeta.analyses.sweep import plan, sweep_maps
from daskmeta.io.nifti import to_nifti
from daskmeta.io.store import read_group, write_group
from daskmeta.model.grid import load_mask


@pytest.fixture(scope="module")
def maps(make_studyset) -> xr.Dataset:
    studies = make_studyset(n_studies=5, peaks_per_study=3, seed=4)
    return recreate(studies, anisotropy=0.0, voxel_chunk=50_000).persist(scheduler="threads")


def _exported(array: xr.DataArray, path) -> np.ndarray:
    """The voxel values of ``array`` written with ``to_nifti`` (no mask=) and read back."""
    image = nib.load(to_nifti(array, path))
    return load_mask(array.attrs["mask"]).from_volume(np.asarray(image.dataobj))


def test_one_study_of_recreated_maps_exports(maps, tmp_path):
    study = maps.effect.sel(study="study01")
    np.testing.assert_array_equal(_exported(study, tmp_path / "S01.nii.gz"),
                                  study.values.astype(np.float32))
    assert all(maps[name].attrs["mask"] == "gray_matter"
               for name in ("effect", "effect_lower", "effect_upper", "variance"))


def test_maps_read_back_from_the_store_export(maps, tmp_path):
    store = tmp_path / "store.zarr"
    write_group(maps, store, "studies", compute=lambda d: d.compute(scheduler="threads"))
    stored = read_group(store, "studies")
    variance = stored.variance.isel(study=2)
    np.testing.assert_array_equal(_exported(variance, tmp_path / "v.nii.gz"),
                                  maps.variance.isel(study=2).values)


def test_group_written_without_variable_masks_gets_them_on_read(maps, tmp_path):
    bare = maps.copy()
    for variable in bare.data_vars.values():
        variable.attrs = {}
    write_group(bare, tmp_path / "s.zarr", "studies", compute=lambda d: d.compute(scheduler="threads"))
    assert read_group(tmp_path / "s.zarr", "studies").effect.attrs["mask"] == "gray_matter"


def test_jackknife_linear_model_and_multimodal_rows_export(maps, tmp_path):
    with_threads = {"scheduler": "threads"}
    runs = jackknife(maps, permutations=2, seed=1).compute(**with_threads)
    row = runs.z.isel(left_out=0)
    np.testing.assert_array_equal(_exported(row, tmp_path / "jk.nii.gz"),
                                  row.values.astype(np.float32))
    model = linear_model(maps, regressor="age", permutations=2, seed=1, check_p=None)
    model = model.compute(**with_threads)
    for name, variable in model.data_vars.items():
        if "voxel" in variable.dims:
            assert variable.attrs["mask"] == "gray_matter", name
    first = mean(maps, permutations=2, seed=1, voxel_p=None, name="a")
    second = mean(maps, permutations=2, seed=2, voxel_p=None, name="b")
    overlap = multimodal(first, second).compute(**with_threads)
    np.testing.assert_array_equal(_exported(overlap.z_opposite, tmp_path / "mm.nii.gz"),
                                  overlap.z_opposite.values.astype(np.float32))


def test_sweep_variables_carry_the_mask(make_studyset):
    studies = make_studyset(n_studies=4, peaks_per_study=2, seed=6)
    preprocess = {"mask": "gray_matter", "fwhm": 20.0, "anisotropy": 0.0, "beta": 1.0}
    sweep = {"name": "s", "analysis": {"permutations": 2, "seed": 1}, "grid": {"fwhm": [20.0]}}
    variants = plan(studies, sweep, preprocess, {"p": 0.005, "peak_z": 1.0, "extent": 10})
    maps = sweep_maps(studies, variants, sweep, preprocess, "s")
    assert all(maps[name].isel(variant=0).attrs["mask"] == "gray_matter" for name in maps.data_vars)
