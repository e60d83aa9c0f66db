import dask
import numpy as np
import pandas as pd
import pytest

from daskmeta.analyses.recreate import _lattice, recreate
from daskmeta.model.grid import load_mask
from daskmeta.model.studyset import StudySet
from daskmeta.stats.effect_size import g_variance, hedges_g
from daskmeta.stats.recreation import recreate_study


def _one_peak_study(xyz, t, n1=20.0, n2=22.0, t_thr=3.0):
    peaks = pd.DataFrame([{"study": "a", "x": xyz[0], "y": xyz[1], "z": xyz[2], "t": t,
                           "x_orig": xyz[0], "y_orig": xyz[1], "z_orig": xyz[2],
                           "space": "spm_mni", "source": "m", "line": 1}])
    table = pd.DataFrame([{"study": "a", "n1": n1, "n2": n2, "t_thr": t_thr}])
    return StudySet(table, peaks)


@pytest.mark.parametrize("anisotropy", [0.0, 1.0])
def test_single_peak_map_peaks_at_the_study_g(anisotropy):
    mask = load_mask("gray_matter")
    xyz = mask.xyz[mask.n_voxels // 2]
    maps = recreate(_one_peak_study(xyz, 4.5), anisotropy=anisotropy).compute(scheduler="sync")
    effect = maps.effect.values[0]
    at_peak = int(np.argmax(effect))
    np.testing.assert_allclose(mask.xyz[at_peak], xyz)
    assert effect[at_peak] == pytest.approx(float(hedges_g(4.5, 20, 22)), rel=1e-6)
    # at the peak the bounds collapse onto the effect; far away they are +/- g_thr
    g_thr = float(hedges_g(3.0, 20, 22))
    assert maps.effect_upper.values[0, at_peak] == pytest.approx(effect[at_peak], rel=1e-6)
    far = np.flatnonzero(effect == 0)
    np.testing.assert_allclose(maps.effect_upper.values[0, far], g_thr, rtol=1e-6)
    np.testing.assert_allclose(maps.effect_lower.values[0, far], -g_thr, rtol=1e-6)
    np.testing.assert_allclose(maps.variance.values[0], g_variance(effect, 20, 22), rtol=1e-5)


def test_measured_fwhm_is_20mm_along_each_axis_when_isotropic():
    mask = load_mask("brain")
    xyz = np.array([0.0, -18.0, 20.0])
    maps = recreate(_one_peak_study(xyz, 5.0), anisotropy=0.0, mask="brain").compute(scheduler="sync")
    volume = mask.to_volume(maps.effect.values[0])
    i, j, k = np.argwhere(volume == volume.max())[0]
    for profile in (volume[:, j, k], volume[i, :, k], volume[i, j, :]):
        half = profile.max() / 2
        above = np.flatnonzero(profile >= half)
        lo, hi = above[0], above[-1]
        left = lo - 1 + (half - profile[lo - 1]) / (profile[lo] - profile[lo - 1])
        right = hi + (profile[hi] - half) / (profile[hi] - profile[hi + 1])
        assert 2.0 * (right - left) == pytest.approx(20.0, rel=0.02)


def test_null_study_is_all_zero_with_threshold_bounds():
    table = pd.DataFrame([{"study": "null", "n1": 20.0, "n2": np.nan, "t_thr": 3.5}])
    peaks = pd.DataFrame(columns=["study", "x", "y", "z", "t", "x_orig", "y_orig", "z_orig",
                                  "space", "source", "line"])
    maps = recreate(StudySet(table, peaks)).compute(scheduler="sync")
    assert not maps.effect.values.any()
    g_thr = float(hedges_g(3.5, 20))
    np.testing.assert_allclose(maps.effect_upper.values, g_thr, rtol=1e-6)
    np.testing.assert_allclose(maps.effect_lower.values, -g_thr, rtol=1e-6)
    np.testing.assert_allclose(maps.variance.values, 1 / 20, rtol=1e-6)


def test_dask_graph_equals_the_numpy_kernel(small_studies):
    maps = recreate(small_studies, voxel_chunk=10_000)
    assert maps.effect.data.chunks[1][0] == 10_000
    with dask.config.set(scheduler="threads"):
        computed = maps.compute()
    mask = load_mask("gray_matter")
    graph, node_of = _lattice(1.0)
    from daskmeta.model.grid import mm_to_ijk

    for n, row in enumerate(small_studies.studies.itertuples()):
        peaks = small_studies.peaks_of(row.study)
        expected = recreate_study(mm_to_ijk(peaks[["x", "y", "z"]].to_numpy()).reshape(-1, 3),
                                  peaks["t"].to_numpy(), row.n1, row.n2, row.t_thr, mask.ijk,
                                  20.0, 1.0, graph, node_of)
        np.testing.assert_allclose(computed.effect.values[n], expected[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(computed.variance.values[n], expected[3], rtol=1e-6)
    assert computed.attrs["mask"] == "gray_matter" and computed.attrs["fwhm"] == 20.0
    assert list(computed.modality.values) == list(small_studies.studies.modality)


def test_recreate_is_lazy(small_studies):
    maps = recreate(small_studies)
    assert isinstance(maps.effect.data, dask.array.Array)
    graph = dict(maps.effect.data.__dask_graph__())
    assert sum("recreate" in str(key) for key in graph) == len(small_studies)


def test_recreate_rejects_bad_parameters(small_studies):
    with pytest.raises(ValueError, match="anisotropy"):
        recreate(small_studies, anisotropy=1.5)
    with pytest.raises(ValueError, match="fwhm"):
        recreate(small_studies, fwhm=0)
    with pytest.raises(ValueError, match="mask must be one of"):
        recreate(small_studies, mask="grey")
