"""Native reader: studies.tsv + peaks.tsv (docs/methods.md, section 1.2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from daskmeta.errors import DaskmetaWarning, InputError
from daskmeta.io import load_studies, read_tables
from daskmeta.model.coordinates import to_spm_mni
from daskmeta.model.studyset import PEAK_COLUMNS

STUDIES = """\
study\tn1\tn2\tt_thr\tmodality\tmean_age
A\t20\t20\t3.1\tVBM\t30
B\t15\t\t\tfMRI\t
C\t12\t14\t3.4\tVBM\t44.5
Null\t30\tNA\t3.0\tVBM\t52
"""

PEAKS = """\
study\tx\ty\tz\tstat\tstat_type\tspace
A\t10\t12\t14\t4.5\t\t
A\t-20\t30\t-10\t-3.9\tt\tspm_mni
B\t30\t-40\t50\t3.5\tz\tfsl_mni
B\t-30\t-40\t50\tp\tz\tother_mni
C\t0\t0\t0\t0.001\tp\tother_tal
C\t40\t20\t-10\t-0.0002\tp\tFSL_BRETT
"""


def write_pair(folder: Path, studies: str = STUDIES, peaks: str = PEAKS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "studies.tsv").write_text(studies)
    (folder / "peaks.tsv").write_text(peaks)
    return folder


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    return write_pair(tmp_path / "meta")


def read_good(folder: Path):
    with pytest.warns(DaskmetaWarning) as record:
        studyset = read_tables(folder / "studies.tsv")
    return studyset, [str(w.message) for w in record]


def test_studies_and_covariates(pair: Path) -> None:
    studyset, _ = read_good(pair)
    table = studyset.studies
    assert studyset.names == ["A", "B", "C", "Null"]
    assert table["mean_age"].dtype == np.float64 and np.isnan(table.loc[1, "mean_age"])
    assert table["modality"].tolist() == ["VBM", "fMRI", "VBM", "VBM"]
    assert np.isnan(table.loc[1, "n2"]) and np.isnan(table.loc[3, "n2"])
    assert list(studyset.peaks.columns) == list(PEAK_COLUMNS)
    assert len(studyset.peaks_of("Null")) == 0


def test_statistics_against_scipy(pair: Path) -> None:
    studyset, _ = read_good(pair)
    np.testing.assert_array_equal(studyset.peaks_of("A")["t"], [4.5, -3.9])
    b = studyset.peaks_of("B")  # one-sample n = 15: df = 14
    assert b["t"].iloc[0] == pytest.approx(stats.t.isf(stats.norm.sf(3.5), 14), rel=1e-12)
    # t_thr of B: the smallest |t| of its known peaks, and the letter p takes it.
    assert studyset.studies.loc[1, "t_thr"] == pytest.approx(b["t"].iloc[0])
    assert b["t"].iloc[1] == pytest.approx(b["t"].iloc[0])
    c = studyset.peaks_of("C")  # df = 24
    np.testing.assert_allclose(c["t"], [stats.t.isf(0.001, 24), -stats.t.isf(0.0002, 24)],
                               rtol=1e-12)


def test_spaces(pair: Path) -> None:
    studyset, _ = read_good(pair)
    peaks = studyset.peaks
    assert peaks["space"].tolist() == [
        "spm_mni", "spm_mni", "fsl_mni", "other_mni", "other_tal", "fsl_brett"
    ]
    for token, group in peaks.groupby("space"):
        orig = group[["x_orig", "y_orig", "z_orig"]].to_numpy()
        np.testing.assert_allclose(group[["x", "y", "z"]], to_spm_mni(orig, token))
    assert peaks["line"].tolist() == [2, 3, 4, 5, 6, 7]
    assert set(peaks["source"]) == {str(pair / "peaks.tsv")}


def test_warnings_name_the_study(pair: Path) -> None:
    _, messages = read_good(pair)
    assert len(messages) == 2
    assert all("'B'" in m for m in messages)


def test_load_studies_dispatch(pair: Path) -> None:
    with pytest.warns(DaskmetaWarning):
        assert load_studies(pair).names == ["A", "B", "C", "Null"]
    with pytest.warns(DaskmetaWarning):
        assert load_studies(pair / "studies.tsv").names == ["A", "B", "C", "Null"]


def test_load_studies_rejects_unknown_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="neither sdm_table.txt") as info:
        load_studies(tmp_path)
    assert info.value.path == str(tmp_path)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="unrecognised input"):
        load_studies(tmp_path / "data.csv")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(InputError, match="Sleuth"):
        load_studies(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="no such file"):
        load_studies(tmp_path / "missing")


# --- bad input -----------------------------------------------------------------------------

GOOD_STUDIES = "study\tn1\tn2\tt_thr\nA\t20\t20\t3.1\n"
HEADER = "study\tx\ty\tz\tstat\tstat_type\tspace\n"


@pytest.mark.parametrize(
    ("peaks", "line", "field", "match"),
    [
        (HEADER + "A\t0\t0\t0\t4\tF\t\n", 2, "stat_type", "one of"),
        (HEADER + "A\t0\t0\t0\t4\t\tmni\n", 2, "space", "one of"),
        (HEADER + "A\t0\t0\t0\t4\t\t\nA\t0\t1,5\t0\t4\t\t\n", 3, "y", "decimal separator"),
        (HEADER + "A\t0\t0\t0\t\t\t\n", 2, "stat", "missing statistic"),
        (HEADER + "A\t0\t0\t0\t3.2\tp\t\n", 2, "stat", "p-value must lie"),
        (HEADER + "A\t0\t0\t0\t4\t\t\t9\n", 2, "space", "8 tab-separated fields"),
        (HEADER + "A\t0\t0\t-80\t4\t\t\n", 2, "z", "outside the MNI152"),
        (HEADER + "Z\t0\t0\t0\t4\t\t\n", 2, "study", "no row in the study table"),
        ("study\tx\ty\tz\n", 1, "stat", "required column 'stat'"),
    ],
)
def test_bad_peaks(tmp_path: Path, peaks: str, line: int, field: str, match: str) -> None:
    folder = write_pair(tmp_path, GOOD_STUDIES, peaks)
    path = folder / "peaks.tsv"
    with pytest.raises(InputError, match=match) as info:
        read_tables(folder / "studies.tsv")
    assert (info.value.path, info.value.line, info.value.field) == (str(path), line, field)
    assert f"{path}, line {line}, field '{field}'" in str(info.value)


@pytest.mark.parametrize(
    ("studies", "line", "field", "match"),
    [
        ("study\tn1\tn2\nA\t20\t0\n", 2, "n2", "positive"),
        ("study\tn1\tn2\nA\t\t20\n", 2, "n1", "positive"),
        ("study\tn1\tn2\nA\t2\t\n", 2, "n1", "n1 >= 3"),
        ("study\tn1\tn2\nA\t20.5\t20\n", 2, "n1", "whole number"),
        ("study\tn1\tn2\nA\t20\t20\nB\t9\t9\nA\t8\t8\n", 4, "study", "duplicate"),
        ("study\tn1\tn2\tgroup\nA\t20\t20\t1\nB\t9\t9\tx2\n", 3, "group", "numeric covariate"),
        ("study\tn1\tn2\tp_thr\nA\t20\t20\t5\n", 2, "p_thr", "p_thr must lie"),
    ],
)
def test_bad_studies(tmp_path: Path, studies: str, line: int, field: str, match: str) -> None:
    folder = write_pair(tmp_path, studies, HEADER + "A\t0\t0\t0\t4\t\t\n")
    path = folder / "studies.tsv"
    with pytest.raises(InputError, match=match) as info:
        read_tables(path)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), line, field)


def test_textual_column_stays_text(tmp_path: Path) -> None:
    studies = "study\tn1\tn2\tt_thr\tsite\nA\t20\t20\t3\tBarcelona\nB\t9\t9\t3\t2\nC\t9\t9\t3\tLyon\n"
    peaks = HEADER + "A\t0\t0\t0\t4\t\t\n"
    folder = write_pair(tmp_path, studies, peaks)
    assert read_tables(folder / "studies.tsv").studies["site"].tolist() == [
        "Barcelona", "2", "Lyon"
    ]


def test_large_z_stays_finite(tmp_path: Path) -> None:
    folder = write_pair(tmp_path, GOOD_STUDIES, HEADER + "A\t0\t0\t0\t40\tz\t\n")
    assert np.isfinite(read_tables(folder / "studies.tsv").peaks["t"]).all()


def test_missing_peak_table(tmp_path: Path) -> None:
    (tmp_path / "studies.tsv").write_text(GOOD_STUDIES)
    with pytest.raises(InputError, match="peak table") as info:
        read_tables(tmp_path / "studies.tsv")
    assert info.value.path == str(tmp_path / "peaks.tsv")
