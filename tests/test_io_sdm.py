"""SDM folder reader: sdm_table.txt + STUDY.SOFTWARE_SPACE.txt peak files (docs/methods.md, section 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from daskmeta.errors import DaskmetaWarning, InputError
from daskmeta.io import load_studies, read_sdm_folder
from daskmeta.model.coordinates import to_spm_mni
from daskmeta.model.studyset import PEAK_COLUMNS

TABLE = """\
study\tn1\tn2\tt_thr\tpeak_stat\tage\tmodality\tinclude
Smith.2010\t20\t22\t3.2\t\t34.5\tVBM\t1
Jones\t16\t\tNA\tz\t41\tfMRI\t0
Lee\t12\t14\t3.5\tp\tNA\tVBM\t1
Null\t25\tNA\t\t\t29\tVBM\t1
Brett\t18\t18\t2.9\tt\t38\tVBM\t1
"""

PEAKS = {
    "Smith.2010.spm_mni.txt": "# x y z t\n10 12 14 4.5\n\n-20,30,-10,-3.8\n",
    "Jones.fsl_mni.txt": "30\t-40\t50\t3.3\n-30\t-40\t50\t-4.2\n",
    "Lee.other_tal.txt": "0 0 0 0.001\n40 20 -10 -0.0005\n",
    "Null.no_peaks.txt": "",
    "Brett.spm_brett.txt": "12, 14, 16, p\n-12 14 -16 N\n",
}


def write_folder(folder: Path, table: str = TABLE, peaks: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sdm_table.txt").write_text(table)
    for name, text in (PEAKS if peaks is None else peaks).items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def sdm_folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "meta")


def read_good(folder: Path):
    with pytest.warns(DaskmetaWarning) as record:
        studyset = read_sdm_folder(folder)
    return studyset, [str(w.message) for w in record]


def test_studies_table(sdm_folder: Path) -> None:
    studyset, _ = read_good(sdm_folder)
    table = studyset.studies
    assert list(table.columns[:4]) == ["study", "n1", "n2", "t_thr"]
    assert studyset.names == ["Smith.2010", "Jones", "Lee", "Null", "Brett"]
    np.testing.assert_array_equal(table["n1"], [20, 16, 12, 25, 18])
    assert np.isnan(table.loc[1, "n2"]) and np.isnan(table.loc[3, "n2"])
    assert table["age"].dtype == np.float64 and np.isnan(table.loc[2, "age"])
    assert table["include"].dtype == np.float64
    assert table["modality"].tolist() == ["VBM", "fMRI", "VBM", "VBM", "VBM"]
    assert "_line" not in table
    assert list(studyset.peaks.columns) == list(PEAK_COLUMNS)
    assert len(studyset.peaks_of("Null")) == 0
    assert "1 null" in repr(studyset)


def test_t_and_coordinates(sdm_folder: Path) -> None:
    studyset, _ = read_good(sdm_folder)
    smith = studyset.peaks_of("Smith.2010")
    np.testing.assert_array_equal(smith["t"], [4.5, -3.8])
    np.testing.assert_array_equal(smith[["x", "y", "z"]], [[10, 12, 14], [-20, 30, -10]])
    assert smith["line"].tolist() == [2, 4]
    assert smith["source"].iloc[0] == str(sdm_folder / "Smith.2010.spm_mni.txt")
    lee = studyset.peaks_of("Lee")
    np.testing.assert_allclose(
        lee[["x", "y", "z"]], to_spm_mni([[0, 0, 0], [40, 20, -10]], "other_tal")
    )
    np.testing.assert_array_equal(lee[["x_orig", "y_orig", "z_orig"]], [[0, 0, 0], [40, 20, -10]])
    assert set(lee["space"]) == {"other_tal"}


def test_z_and_p_peaks_against_scipy(sdm_folder: Path) -> None:
    studyset, _ = read_good(sdm_folder)
    jones = studyset.peaks_of("Jones")  # one-sample, n = 16: df = 15
    expected = [stats.t.isf(stats.norm.sf(3.3), 15), -stats.t.isf(stats.norm.sf(4.2), 15)]
    np.testing.assert_allclose(jones["t"], expected, rtol=1e-12)
    np.testing.assert_allclose(
        jones[["x", "y", "z"]], to_spm_mni([[30, -40, 50], [-30, -40, 50]], "fsl_mni")
    )
    lee = studyset.peaks_of("Lee")  # 12 + 14 - 2 = 24 df; -0.0005 is a negative peak
    np.testing.assert_allclose(lee["t"], [stats.t.isf(0.001, 24), -stats.t.isf(0.0005, 24)],
                               rtol=1e-12)


def test_threshold_fill_ins_warn(sdm_folder: Path) -> None:
    studyset, messages = read_good(sdm_folder)
    t_thr = studyset.studies.set_index("study")["t_thr"]
    jones_t = studyset.peaks_of("Jones")["t"].abs()
    assert t_thr["Jones"] == pytest.approx(jones_t.min())  # smallest |t| of its peaks
    assert t_thr["Null"] == pytest.approx(stats.t.isf(0.001, 24))  # one-sample, n = 25
    assert t_thr["Smith.2010"] == 3.2
    assert any("'Jones'" in m and "smallest |t|" in m for m in messages)
    assert any("'Null'" in m and "p = 0.001" in m for m in messages)
    assert not any("'Smith.2010'" in m for m in messages)
    assert any("t_thr missing" in m for m in studyset.log)


def test_letters_p_and_n(sdm_folder: Path) -> None:
    studyset, messages = read_good(sdm_folder)
    brett = studyset.peaks_of("Brett")
    np.testing.assert_array_equal(brett["t"], [2.9, -2.9])
    np.testing.assert_allclose(
        brett[["x", "y", "z"]], to_spm_mni([[12, 14, 16], [-12, 14, -16]], "spm_brett")
    )
    assert any("'Brett'" in m and "unknown value" in m for m in messages)


def test_p_thr_column(tmp_path: Path) -> None:
    table = "study\tn1\tn2\tp_thr\nA\t10\t12\t0.005\n"
    folder = write_folder(tmp_path, table, {"A.spm_mni.txt": "0 0 0 n\n"})
    with pytest.warns(DaskmetaWarning, match="'A'.*p_thr"):
        studyset = read_sdm_folder(folder)
    assert studyset.studies.loc[0, "t_thr"] == pytest.approx(stats.t.isf(0.005, 20))
    assert studyset.peaks.loc[0, "t"] == pytest.approx(-stats.t.isf(0.005, 20))


def test_load_studies_dispatch(sdm_folder: Path) -> None:
    with pytest.warns(DaskmetaWarning):
        by_folder = load_studies(sdm_folder)
    with pytest.warns(DaskmetaWarning):
        by_table = load_studies(str(sdm_folder / "sdm_table.txt"))
    assert by_folder.names == by_table.names
    assert by_folder.source == str(sdm_folder)


def test_other_txt_files_are_ignored(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, "study\tn1\tn2\tt_thr\nA\t10\t12\t3\n",
                          {"A.spm_mni.txt": "0 0 0 4\n", "notes.txt": "hello", "x.csv": "1"})
    assert read_sdm_folder(folder).names == ["A"]


# --- bad input: every error names file, line and field -------------------------------------

GOOD_ROW = "study\tn1\tn2\tt_thr\nA\t10\t12\t3\n"


def expect_error(folder: Path, path: Path, line: int | None, field: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        read_sdm_folder(folder)
    error = info.value
    assert (error.path, error.line, error.field) == (str(path), line, field)
    assert str(path) in str(error) and f"'{field}'" in str(error)
    if line is not None:
        assert f"line {line}" in str(error)


@pytest.mark.parametrize(
    ("peak_text", "line", "field", "match"),
    [
        ("0 0 0 4\n\n1 2 3\n", 3, "t", "expected 4 fields"),
        ("0 0 0 4 5\n", 1, "t", "got 5"),
        ("# header\n0 zero 0 4\n", 2, "y", "expected a number"),
        ("0 0 0 4,5\n", 1, "t", "expected 4 fields"),
        ("0 0 0 four\n", 1, "t", "t value or the letter p / n"),
        ("0 0 0 4\n95 0 0 4\n", 2, "x", "outside the MNI152 2 mm grid"),
        ("0 0 200 4\n", 1, "z", "outside the MNI152 2 mm grid"),
    ],
)
def test_bad_peak_lines(tmp_path: Path, peak_text: str, line: int, field: str,
                        match: str) -> None:
    folder = write_folder(tmp_path, GOOD_ROW, {"A.spm_mni.txt": peak_text})
    expect_error(folder, folder / "A.spm_mni.txt", line, field, match)


def test_grid_check_uses_converted_coordinates(tmp_path: Path) -> None:
    # x = -89 lies on the grid as SPM-MNI, but as Talairach inv(icbm_spm) maps it to about
    # (-89 + 1.02) / 0.925 = -95 mm, beyond the grid's -90 mm edge.
    folder = write_folder(tmp_path, GOOD_ROW, {"A.other_tal.txt": "-89 0 0 4\n"})
    expect_error(folder, folder / "A.other_tal.txt", 1, "x", "outside")


@pytest.mark.parametrize(
    ("table", "line", "field", "match"),
    [
        ("study\tn1\tn2\tt_thr\nA\t\t12\t3\n", 2, "n1", "positive"),
        ("study\tn1\tn2\tt_thr\nA\t0\t12\t3\n", 2, "n1", "positive"),
        ("study\tn1\tn2\tt_thr\nA\t10\t-4\t3\n", 2, "n2", "positive"),
        ("study\tn1\tn2\tt_thr\nA\tten\t12\t3\n", 2, "n1", "expected a number"),
        ("study\tn2\tt_thr\nA\t12\t3\n", 1, "n1", "required column 'n1'"),
        ("study\tn1\tn2\tt_thr\nA\t10\t12\t3\n\nA\t11\t12\t3\n", 4, "study", "duplicate"),
        ("study\tn1\tn2\tt_thr\nA\t10\t12\t-3\n", 2, "t_thr", "t_thr must lie"),
        ("study\tn1\tn2\tt_thr\tpeak_stat\nA\t10\t12\t3\tF\n", 2, "peak_stat", "one of"),
        ("study\tn1\tn2\tt_thr\nA\t10\t12\t3\t7\n", 2, "t_thr", "5 tab-separated fields"),
        ("study n1 n2 t_thr\nA 10 12 3\n", 1, "study n1 n2 t_thr", "tab-separated"),
    ],
)
def test_bad_table(tmp_path: Path, table: str, line: int, field: str, match: str) -> None:
    folder = write_folder(tmp_path, table, {"A.spm_mni.txt": "0 0 0 4\n"})
    expect_error(folder, folder / "sdm_table.txt", line, field, match)


@pytest.mark.parametrize("cell", ["3,5", "abc"])
def test_non_numeric_covariate(tmp_path: Path, cell: str) -> None:
    table = f"study\tn1\tn2\tt_thr\tage\nA\t10\t12\t3\t30\nB\t10\t12\t3\t{cell}\nC\t9\t9\t3\t41\n"
    peaks = {f"{s}.spm_mni.txt": "0 0 0 4\n" for s in "ABC"}
    folder = write_folder(tmp_path, table, peaks)
    expect_error(folder, folder / "sdm_table.txt", 3, "age", "numeric covariate")


def test_row_without_peak_file(tmp_path: Path) -> None:
    table = GOOD_ROW + "B\t10\t10\t3\n"
    folder = write_folder(tmp_path, table, {"A.spm_mni.txt": "0 0 0 4\n"})
    expect_error(folder, folder / "sdm_table.txt", 3, "study", "'B' has no peak file")


def test_peak_file_without_row(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, GOOD_ROW,
                          {"A.spm_mni.txt": "0 0 0 4\n", "B.no_peaks.txt": ""})
    expect_error(folder, folder / "B.no_peaks.txt", None, "study", "no row in sdm_table.txt")


def test_unknown_token(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, GOOD_ROW, {"A.spm_tal.txt": "0 0 0 4\n"})
    expect_error(folder, folder / "A.spm_tal.txt", None, "space", "unknown software/space")


def test_two_peak_files_for_one_study(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, GOOD_ROW,
                          {"A.spm_mni.txt": "0 0 0 4\n", "A.no_peaks.txt": ""})
    with pytest.raises(InputError, match="two peak files") as info:
        read_sdm_folder(folder)
    assert info.value.field == "study"


def test_no_peaks_file_with_peaks(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, GOOD_ROW, {"A.no_peaks.txt": "# none\n0 0 0 4\n"})
    expect_error(folder, folder / "A.no_peaks.txt", 2, "x", "must hold no peaks")


@pytest.mark.parametrize("value", ["1.5", "0", "-1"])
def test_p_value_out_of_range(tmp_path: Path, value: str) -> None:
    table = "study\tn1\tn2\tt_thr\tpeak_stat\nA\t10\t12\t3\tp\n"
    folder = write_folder(tmp_path, table, {"A.spm_mni.txt": f"0 0 0 0.01\n0 0 0 {value}\n"})
    expect_error(folder, folder / "A.spm_mni.txt", 2, "t", "p-value must lie")


def test_reader_writes_nothing(sdm_folder: Path) -> None:
    before = sorted((p.name, p.stat().st_mtime_ns) for p in sdm_folder.iterdir())
    read_good(sdm_folder)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in sdm_folder.iterdir()) == before
