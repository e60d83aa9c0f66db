"""Statistical maps as study inputs: header checks, sampling, and the readers that find maps.

docs/methods.md, section 3.8 (maps) and section 1.2 (readers). Maps are built here with
nibabel: t-maps on the MNI152 2 mm grid and on 3 mm grids, intent ``t test`` with its dof.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import map_coordinates
from typer.testing import CliRunner

from daskmeta.app.cli import app
from daskmeta.errors import DaskmetaWarning, InputError
from daskmeta.io import load_studies, read_nimare_json, read_sdm_folder, read_tables
from daskmeta.io.statmap import StatMapHeader, inspect_statmap, sample_statmap
from daskmeta.model.grid import GRID_AFFINE, GRID_SHAPE, ijk_to_mm
from daskmeta.model.studyset import StudySet

runner = CliRunner()

#: A 3 mm MNI grid covering the whole 2 mm grid, and a cropped one (x -72..72, y -108..72,
#: z -54..90) that still covers the brain's core box.
AFFINE_3MM = np.array([[-3.0, 0, 0, 90], [0, 3.0, 0, -126], [0, 0, 3.0, -72], [0, 0, 0, 1]])
SHAPE_3MM = (61, 73, 61)
AFFINE_3MM_CROP = np.array([[-3.0, 0, 0, 72], [0, 3.0, 0, -108], [0, 0, 3.0, -54], [0, 0, 0, 1]])
SHAPE_3MM_CROP = (49, 61, 49)


def blob(shape=GRID_SHAPE, value: float = 3.5) -> np.ndarray:
    """A volume with a positive and a negative block, zero elsewhere."""
    data = np.zeros(shape, dtype=np.float32)
    centre = [n // 2 for n in shape]
    data[centre[0] - 4:centre[0] + 4, centre[1] - 4:centre[1] + 4, centre[2] - 4:centre[2] + 4] = value
    data[centre[0] - 12:centre[0] - 8, centre[1]:centre[1] + 4, centre[2]:centre[2] + 4] = -value
    return data


def write_map(path: Path, data: np.ndarray | None = None, affine: np.ndarray = GRID_AFFINE,
              dof: float | None = 38.0, code: int = 4, qform_code: int = 0,
              intent: str | None = None) -> Path:
    """Save a map: sform ``code`` (MNI by default), intent ``t test`` with ``dof`` unless None."""
    data = blob() if data is None else data
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code)
    img.set_qform(affine, qform_code)
    if intent is not None:
        img.header.set_intent(intent, ())
    elif dof is not None:
        img.header.set_intent("t test", (dof,))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def linear(mm: np.ndarray) -> np.ndarray:
    """A linear function of position, which trilinear interpolation reproduces exactly."""
    return 1.5 + 0.11 * mm[:, 0] - 0.07 * mm[:, 1] + 0.03 * mm[:, 2]


def linear_volume(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    ijk = np.indices(shape).reshape(3, -1).T
    return linear(ijk @ affine[:3, :3].T + affine[:3, 3]).reshape(shape)


# --------------------------------------------------------------------------- inspect


def test_inspect_a_good_t_map(tmp_path):
    path = write_map(tmp_path / "a.nii.gz", dof=38)
    header = inspect_statmap(path, 20, 20)
    assert isinstance(header, StatMapHeader)
    assert header.path == str(path.absolute()) and header.stat == "t" and header.dof == 38.0
    assert header.shape == GRID_SHAPE
    np.testing.assert_array_equal(header.affine, GRID_AFFINE)
    one_sample = write_map(tmp_path / "b.nii", dof=24)
    assert inspect_statmap(one_sample, 25, np.nan).dof == 24.0
    # a 3 mm grid, a 1 mm grid, a 4-D image of one volume, scanner and aligned codes,
    # an MNI qform without sform: all accepted
    three_mm = write_map(tmp_path / "c.nii", blob(SHAPE_3MM), AFFINE_3MM)
    assert inspect_statmap(three_mm, 20, 20).shape == SHAPE_3MM
    one_mm = np.diag([-1.0, 1, 1, 1])
    one_mm[:3, 3] = [90, -126, -72]
    assert inspect_statmap(write_map(tmp_path / "d.nii", blob((181, 217, 181)), one_mm), 20, 20).dof == 38
    assert inspect_statmap(write_map(tmp_path / "e.nii", blob()[..., None]), 20, 20).shape == GRID_SHAPE
    for code in (1, 2):
        assert inspect_statmap(write_map(tmp_path / f"f{code}.nii", code=code), 20, 20).dof == 38
    assert inspect_statmap(write_map(tmp_path / "g.nii", code=0, qform_code=4), 20, 20).dof == 38


def test_a_dof_from_the_sample_sizes_warns(tmp_path):
    no_intent = write_map(tmp_path / "a.nii", dof=None)
    with pytest.warns(DaskmetaWarning, match=r"a\.nii: the t-map's header has no intent 't test'; "
                      r"degrees of freedom 36 taken from the study table \(n1 \+ n2 - 2 with "
                      r"n1 = 20, n2 = 18\)"):
        assert inspect_statmap(no_intent, 20, 18).dof == 36.0
    no_dof = write_map(tmp_path / "b.nii", dof=0)
    log: list[str] = []
    with pytest.warns(DaskmetaWarning, match="no degrees of freedom"):
        assert inspect_statmap(no_dof, 30, None, log=log).dof == 29.0
    assert len(log) == 1 and "n1 - 1 with n1 = 30" in log[0]


def test_z_maps(tmp_path):
    plain = write_map(tmp_path / "z.nii", dof=None)
    assert inspect_statmap(plain, 20, 18, stat="z").dof == 36.0
    scored = write_map(tmp_path / "zz.nii", intent="z score")
    assert inspect_statmap(scored, 20, np.nan, stat="z").dof == 19.0


# Each case: (what the file is, keyword arguments of inspect_statmap, field, message).
def _not_nifti(path: Path) -> Path:
    path.write_bytes(b"this is not an image\n" * 40)
    return path


BAD = {
    "not NIfTI": (_not_nifti, {}, "map", "does not parse as a NIfTI image"),
    "4-D": (lambda p: write_map(p, np.stack([blob(), blob()], axis=-1)), {}, "map",
            r"4-D image of shape \(91, 109, 91, 2\) \(2 volumes\)"),
    "complex": (lambda p: write_map(p, blob().astype(np.complex64)), {}, "map", "not real-valued"),
    "talairach": (lambda p: write_map(p, code=3), {}, "map", r"sform code 3 \(talairach\) is not MNI"),
    "template": (lambda p: write_map(p, code=5), {}, "map", r"sform code 5 \(template\) is not MNI"),
    "no code": (lambda p: write_map(p, code=0), {}, "map", "neither sform nor qform code"),
    "rotated": (lambda p: write_map(p, affine=np.array([[-1.9, 0.6, 0, 90], [0.6, 1.9, 0, -126],
                                                        [0, 0, 2.0, -72], [0, 0, 0, 1]])),
                {}, "map", "rotated or sheared"),
    "8 mm voxels": (lambda p: write_map(p, blob((23, 28, 23)),
                                        np.array([[-8.0, 0, 0, 90], [0, 8.0, 0, -126],
                                                  [0, 0, 8.0, -72], [0, 0, 0, 1]])),
                    {}, "map", r"voxel size \[8.0, 8.0, 8.0\] mm is not that of an MNI grid"),
    "origin at a corner": (lambda p: write_map(p, affine=np.diag([2.0, 2, 2, 1])), {}, "map",
                           r"its voxels span x 0..180, y 0..216, z 0..180 mm, which does not cover"),
    "cropped": (lambda p: write_map(p, blob((91, 109, 40))), {}, "map", "not in MNI space or is cropped"),
    "all NaN": (lambda p: write_map(p, np.full(GRID_SHAPE, np.nan, np.float32)), {}, "map",
                r"no finite non-zero value \(all NaN or all zero\)"),
    "all zero": (lambda p: write_map(p, np.zeros(GRID_SHAPE, np.float32)), {}, "map",
                 "all NaN or all zero"),
    "infinite": (lambda p: write_map(p, np.where(blob() > 0, np.inf, 0).astype(np.float32)), {},
                 "map", "infinite values"),
    "no dof, no sizes": (lambda p: write_map(p, dof=None), {"n1": None}, "intent_p1",
                         "no intent 't test' and the study has no sample sizes"),
    "dof disagrees": (lambda p: write_map(p, dof=40), {}, "intent_p1",
                      r"the header's degrees of freedom \(40, intent_p1\) disagree with the study "
                      r"table's \(38 = n1 \+ n2 - 2 with n1 = 20, n2 = 20\)"),
    "dof disagrees, one sample": (lambda p: write_map(p, dof=38), {"n2": None}, "intent_p1",
                                  r"\(38, intent_p1\) disagree .* \(19 = n1 - 1 with n1 = 20\)"),
    "z intent on a t-map": (lambda p: write_map(p, intent="z score"), {}, "intent_code",
                            "the header's intent is 'z score', not 't test'.*map_stat z"),
    "F intent": (lambda p: write_map(p, intent="f test"), {}, "intent_code",
                 "the header's intent is 'f test', not 't test'"),
    "t intent on a z-map": (lambda p: write_map(p), {"stat": "z"}, "intent_code",
                            "the header's intent is 't test', not 'z score'"),
    "z-map without sizes": (lambda p: write_map(p, dof=None), {"stat": "z", "n1": None}, "n1",
                            "a z-map needs the study's sample sizes"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_maps_are_refused_naming_the_file(case, tmp_path):
    make, kwargs, field, message = BAD[case]
    path = make(tmp_path / "bad study.nii.gz")
    arguments = {"n1": 20, "n2": 20, "stat": "t", **kwargs}
    with pytest.raises(InputError, match=message) as caught:
        inspect_statmap(path, **arguments)
    assert caught.value.path == str(path.absolute()) and caught.value.field == field
    assert str(path.absolute()) in str(caught.value)


def test_a_missing_map_and_a_bad_stat(tmp_path):
    with pytest.raises(InputError, match="statistical map not found") as caught:
        inspect_statmap(tmp_path / "nowhere.nii.gz", 20, 20)
    assert caught.value.path.endswith("nowhere.nii.gz")
    with pytest.raises(InputError, match="map_stat must be one of"):
        inspect_statmap(write_map(tmp_path / "a.nii"), 20, 20, stat="p")


@pytest.mark.parametrize("case", sorted(c for c in BAD if BAD[c][1].get("n1", 20) is not None))
def test_bad_maps_stop_preprocess_and_write_nothing(case, tmp_path):
    """(The table readers require n1, so the cases without sample sizes are the function's.)"""
    make, kwargs, _, message = BAD[case]
    folder = tmp_path / "studies"
    folder.mkdir()
    n2 = "" if "n2" in kwargs else "20"
    (folder / "sdm_table.txt").write_text(
        f"study\tn1\tn2\tt_thr\tmap_stat\nimg\t20\t{n2}\t3.2\t{kwargs.get('stat', '')}\n"
        "peaks\t20\t20\t3.2\t\n")
    (folder / "peaks.spm_mni.txt").write_text("10 12 14 4.5\n")
    path = make(folder / "img.nii.gz")
    store = tmp_path / "out" / "s.zarr"
    result = runner.invoke(app, ["preprocess", str(folder), "--store", str(store),
                                 "--scheduler", "synchronous"])
    assert result.exit_code == 2, result.output
    assert str(path.absolute()) in result.output
    assert not store.exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- sampling


def test_sampling_on_the_grid_is_direct_indexing(tmp_path, rng):
    volume = rng.normal(size=GRID_SHAPE).astype(np.float32)
    volume[10, 20, 30] = np.nan
    path = write_map(tmp_path / "a.nii.gz", volume)
    ijk = np.column_stack([rng.integers(0, n, 500) for n in GRID_SHAPE])
    ijk = np.vstack([ijk, [[10, 20, 30], [-1, 0, 0], [0, 109, 0], [90, 108, 90]]])
    values = sample_statmap(path, ijk)
    assert values.dtype == np.float64 and values.shape == (len(ijk),)
    np.testing.assert_array_equal(values[:500], volume[tuple(ijk[:500].T)].astype(np.float64))
    assert np.isnan(values[500:503]).all() and values[503] == volume[90, 108, 90]
    assert sample_statmap(path, np.zeros((0, 3), int)).shape == (0,)


@pytest.mark.parametrize(("affine", "shape"), [(AFFINE_3MM, SHAPE_3MM),
                                               (AFFINE_3MM_CROP, SHAPE_3MM_CROP)])
def test_sampling_off_the_grid_is_trilinear(tmp_path, rng, affine, shape):
    volume = linear_volume(affine, shape)
    path = write_map(tmp_path / "m.nii", volume.astype(np.float64), affine)
    ijk = np.column_stack([rng.integers(0, n, 3000) for n in GRID_SHAPE])
    values = sample_statmap(path, ijk)
    mm = ijk_to_mm(ijk)
    position = (mm - affine[:3, 3]) / np.diag(affine)[:3]
    inside = np.all((position >= 0) & (position <= np.array(shape) - 1), axis=1)
    assert inside.sum() > 1000
    # a linear function is reproduced exactly; so is scipy's trilinear interpolation
    np.testing.assert_allclose(values[inside], linear(mm[inside]), rtol=0, atol=1e-9)
    expected = map_coordinates(volume, position[inside].T, order=1, prefilter=False)
    np.testing.assert_allclose(values[inside], expected, rtol=0, atol=1e-12)
    assert np.isnan(values[~inside]).all()
    if shape == SHAPE_3MM_CROP:
        assert (~inside).sum() > 100


def test_nan_neighbours_make_the_interpolated_value_nan(tmp_path):
    volume = linear_volume(AFFINE_3MM_CROP, SHAPE_3MM_CROP)
    volume[10, 10, 10] = np.nan  # mm (42, -78, -24)
    path = write_map(tmp_path / "m.nii", volume, AFFINE_3MM_CROP)
    # 2 mm voxels: (42, -78, -24) exactly on the NaN voxel; (42, -76, -24) between it and the
    # next; (48, -78, -24) exactly on the voxel next to it (weight 0 for the NaN one)
    ijk = np.array([[24, 24, 24], [24, 25, 24], [21, 24, 24], [21, 25, 24]])
    mm = ijk_to_mm(ijk)
    np.testing.assert_array_equal(mm[:3], [[42, -78, -24], [42, -76, -24], [48, -78, -24]])
    values = sample_statmap(path, ijk)
    assert np.isnan(values[0]) and np.isnan(values[1])
    np.testing.assert_allclose(values[2:], linear(mm[2:]), atol=1e-9)


# --------------------------------------------------------------------------- readers


TABLE = ("study\tn1\tn2\tt_thr\tage\nA\t20\t18\t3.2\t30\nB\t25\t\t\t40\nC\t15\t15\t3.1\t50\n"
         "D\t22\t20\t3.3\t35\n")


def mixed_folder(folder: Path) -> Path:
    """A: peaks; B: a one-sample t-map on the 2 mm grid; C: peaks and a 3 mm map; D: null."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sdm_table.txt").write_text(TABLE)
    (folder / "A.spm_mni.txt").write_text("10 12 14 4.5\n-20 30 -10 -3.8\n")
    write_map(folder / "B.nii.gz", dof=24)
    (folder / "C.other_tal.txt").write_text("30 -40 50 3.3\n")
    write_map(folder / "C.nii", blob(SHAPE_3MM), AFFINE_3MM, dof=28)
    (folder / "D.no_peaks.txt").write_text("")
    return folder


def test_the_mixed_sdm_folder(tmp_path):
    folder = mixed_folder(tmp_path / "meta")
    with pytest.warns(DaskmetaWarning) as record:
        studies = load_studies(folder)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1, messages
    assert messages[0].startswith("1 study has both peaks and a statistical map; the map is used: "
                                  f"study 'C': map {(folder / 'C.nii').absolute()} used, peaks of "
                                  f"{folder / 'C.other_tal.txt'}: line 1 dropped")
    assert studies.studies["map"].tolist() == ["", str((folder / "B.nii.gz").absolute()),
                                               str((folder / "C.nii").absolute()), ""]
    assert studies.studies["map_stat"].tolist() == ["", "t", "t", ""]
    assert list(studies.studies.columns[:6]) == ["study", "n1", "n2", "t_thr", "map", "map_stat"]
    assert studies.image_studies == ["B", "C"]
    assert sorted(set(studies.peaks["study"])) == ["A"] and len(studies.peaks) == 2
    # B's missing t_thr is filled as for a study without peaks, in the log only
    assert studies.studies.loc[1, "t_thr"] > 3 and any("(a statistical map)" in m for m in studies.log)
    assert "2 statistical maps" in repr(studies) and "(1 null)" in repr(studies)


def test_sdm_folder_maps_need_a_row_and_no_twin(tmp_path):
    folder = mixed_folder(tmp_path / "meta")
    write_map(folder / "E.nii")
    with pytest.raises(InputError, match="statistical map of study 'E' has no row") as caught:
        read_sdm_folder(folder)
    assert caught.value.path == str(folder / "E.nii")
    (folder / "E.nii").unlink()
    write_map(folder / "B.nii")
    with pytest.raises(InputError, match="study 'B' has two statistical maps, B.nii and B.nii.gz"):
        read_sdm_folder(folder)
    (folder / "B.nii").unlink()
    (folder / "B.nii.gz").unlink()
    with pytest.raises(InputError, match=r"study 'B' has no peak file; .* or a t-map B.nii.gz"):
        read_sdm_folder(folder)


def test_tables_with_a_map_column(tmp_path):
    folder = tmp_path / "tables"
    write_map(folder / "maps" / "b.nii.gz", dof=None, intent="z score")
    write_map(folder / "c.nii", dof=30)
    (folder / "studies.tsv").write_text(
        "study\tn1\tn2\tt_thr\tmap\tmap_stat\na\t20\t18\t3.2\t\t\nb\t21\t19\t3.2\tmaps/b.nii.gz\tZ\n"
        "c\t16\t16\t3.0\tc.nii\t\n")
    (folder / "peaks.tsv").write_text("study\tx\ty\tz\tstat\na\t10\t12\t14\t4.5\n")
    studies = read_tables(folder / "studies.tsv")
    assert studies.studies["map"].tolist() == ["", str((folder / "maps/b.nii.gz").absolute()),
                                               str((folder / "c.nii").absolute())]
    assert studies.studies["map_stat"].tolist() == ["", "z", "t"]
    # a map that is not on disk is an error naming the table's line, peaks or not
    (folder / "c.nii").unlink()
    with pytest.raises(InputError, match=r"study 'c' has no peaks and its statistical map "
                       r".*c\.nii is not on disk") as caught:
        read_tables(folder / "studies.tsv")
    assert (caught.value.path, caught.value.line, caught.value.field) == (
        str(folder / "studies.tsv"), 4, "map")
    (folder / "studies.tsv").write_text("study\tn1\tn2\tt_thr\tmap\na\t20\t18\t3.2\tc.nii\n")
    with pytest.raises(InputError, match=r"statistical map .*c\.nii of study 'a' not found") as caught:
        read_tables(folder / "studies.tsv")
    assert (caught.value.line, caught.value.field) == (2, "map")


def test_tables_map_stat_rules(tmp_path):
    folder = tmp_path / "tables"
    write_map(folder / "b.nii", dof=36)
    (folder / "peaks.tsv").write_text("study\tx\ty\tz\tstat\na\t10\t12\t14\t4.5\n")
    (folder / "studies.tsv").write_text("study\tn1\tn2\tmap\tmap_stat\na\t20\t18\t\tt\nb\t20\t18\tb.nii\t\n")
    with pytest.raises(InputError, match="map_stat 't' given but the study has no map") as caught:
        read_tables(folder / "studies.tsv")
    assert (caught.value.line, caught.value.field) == (2, "map_stat")
    (folder / "studies.tsv").write_text("study\tn1\tn2\tmap\tmap_stat\nb\t20\t18\tb.nii\tbeta\n")
    with pytest.raises(InputError, match=r"map_stat must be one of \('t', 'z'\)"):
        read_tables(folder / "studies.tsv")
    # a study with rows in peaks.tsv and a map: the map is used, one warning names both files
    (folder / "studies.tsv").write_text("study\tn1\tn2\tt_thr\tmap\na\t20\t18\t3\tb.nii\n")
    with pytest.warns(DaskmetaWarning, match=r"study 'a': map .*b\.nii used, peaks of .*peaks\.tsv: "
                      "line 2 dropped"):
        studies = read_tables(folder / "studies.tsv")
    assert len(studies.peaks) == 0 and studies.image_studies == ["a"]


def _dataset(folder: Path, images: dict) -> Path:
    data = {
        "s1": {"contrasts": {"1": {"metadata": {"sample_sizes": [20, 18], "t_thr": 3.1},
                                   "coords": {"space": "MNI", "x": [10], "y": [12], "z": [14],
                                              "t": [4.5]}}}},
        "s2": {"contrasts": {"1": {"metadata": {"sample_sizes": [25]}, **images}}},
        "s3": {"contrasts": {"a": {"metadata": {"sample_sizes": [22, 20], "t_thr": 3.2},
                                   "coords": {"space": "MNI", "x": [0], "y": [-50], "z": [20],
                                              "t": [3.9]},
                                   "images": {"z": "maps/s3.nii", "beta": "maps/beta.nii"}}}},
    }
    path = folder / "dataset.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def test_nimare_dataset_images(tmp_path):
    write_map(tmp_path / "maps" / "s2.nii.gz", dof=24)
    write_map(tmp_path / "maps" / "s3.nii", dof=None)
    path = _dataset(tmp_path, {"images": {"t": "maps/s2.nii.gz", "z": "maps/s3.nii"}})
    with pytest.warns(DaskmetaWarning, match=r"study 's3-a': map .*s3\.nii used, peaks of .*dataset"
                      r"\.json: line \d+ dropped"):
        studies = read_nimare_json(path)
    assert studies.studies["map"].tolist() == ["", str(tmp_path / "maps" / "s2.nii.gz"),
                                               str(tmp_path / "maps" / "s3.nii")]
    assert studies.studies["map_stat"].tolist() == ["", "t", "z"]
    assert set(studies.peaks["study"]) == {"s1-1"}


def test_nimare_dataset_missing_images(tmp_path):
    write_map(tmp_path / "maps" / "s2.nii.gz", dof=24)
    path = _dataset(tmp_path, {"images": {"t": "maps/s2.nii.gz"}})
    # s3's z-map is not on disk: it falls back to its peaks, with one warning
    with pytest.warns(DaskmetaWarning) as record:
        studies = read_nimare_json(path)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and messages[0] == (
        f"1 statistical map(s) named in {path} are not on disk; those studies use their peaks "
        f"instead: study 's3-a': {tmp_path / 'maps' / 's3.nii'}")
    assert studies.image_studies == ["s2-1"] and set(studies.peaks["study"]) == {"s1-1", "s3-a"}
    # an image-only contrast whose image is missing is an error naming it
    (tmp_path / "maps" / "s2.nii.gz").unlink()
    with pytest.raises(InputError, match=r"study 's2-1' has no peaks and its statistical map "
                       r".*s2\.nii\.gz is not on disk") as caught:
        read_nimare_json(path)
    assert caught.value.field == "map" and caught.value.line > 1
    # a contrast without coords or a t/z image: the error of old
    path = _dataset(tmp_path, {"images": {"beta": "maps/beta.nii"}})
    with pytest.raises(InputError, match="has no coords and no images.t or images.z"):
        read_nimare_json(path)


def test_no_map_columns_are_empty_strings(tmp_path):
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "studies.tsv").write_text("study\tn1\tn2\tt_thr\na\t20\t18\t3.2\n")
    (folder / "peaks.tsv").write_text("study\tx\ty\tz\tstat\na\t10\t12\t14\t4.5\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        studies = read_tables(folder / "studies.tsv")
    assert studies.studies["map"].tolist() == [""] and studies.studies["map_stat"].tolist() == [""]
    assert studies.image_studies == []
    # a StudySet built in memory gains them too
    memory = StudySet(studies.studies.drop(columns=["map", "map_stat"]), studies.peaks)
    assert memory.studies["map"].tolist() == [""] and memory.studies["map_stat"].tolist() == [""]
