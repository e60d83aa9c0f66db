import nibabel as nib
import numpy as np
import xarray as xr

from daskmeta.io.nifti import to_nifti
from daskmeta.model.grid import GRID_AFFINE, GRID_SHAPE, load_mask


def test_nifti_round_trip_values_and_affine(tmp_path, rng):
    mask = load_mask("gray_matter")
    values = rng.normal(size=mask.n_voxels).astype(np.float32)
    path = to_nifti(xr.DataArray(values, dims="voxel", attrs={"mask": "gray_matter"}),
                    tmp_path / "z.nii.gz")
    image = nib.load(path)
    assert image.shape == GRID_SHAPE
    np.testing.assert_allclose(image.affine, GRID_AFFINE)
    assert image.header.get_sform(coded=True)[1] == 4  # MNI
    data = np.asarray(image.dataobj)
    np.testing.assert_array_equal(mask.from_volume(data), values)
    assert not data[~mask.volume].any()
    # a known voxel lands at its MNI coordinate through the affine
    n = 1234
    ijk = np.linalg.inv(image.affine) @ np.append(mask.xyz[n], 1.0)
    assert data[tuple(np.rint(ijk[:3]).astype(int))] == values[n]


def test_stack_becomes_4d(tmp_path):
    mask = load_mask("brain")
    stack = np.stack([np.ones(mask.n_voxels), 2 * np.ones(mask.n_voxels)])
    image = nib.load(to_nifti(stack, tmp_path / "s.nii", mask="brain"))
    assert image.shape == GRID_SHAPE + (2,)
    assert np.asarray(image.dataobj)[..., 1][mask.volume].min() == 2
