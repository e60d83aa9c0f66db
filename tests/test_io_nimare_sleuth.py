"""NiMARE dataset JSON and Sleuth text readers (docs/methods.md, section 1.2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from daskmeta.errors import DaskmetaWarning, InputError
from daskmeta.io import load_studies, read_nimare_json, read_sleuth
from daskmeta.model.coordinates import to_spm_mni
from daskmeta.model.studyset import PEAK_COLUMNS


def nimare_dataset() -> dict[str, Any]:
    return {
        "pain_01": {
            "contrasts": {
                "1": {
                    "coords": {"space": "MNI", "x": [10, -20], "y": [12, 30], "z": [14, -10],
                               "t": [4.5, -3.9]},
                    "metadata": {"sample_sizes": [20, 22], "t_thr": 3.1, "modality": "fMRI",
                                 "age": 31.5},
                },
                "2": {
                    "coords": {"space": "TAL", "x": [30], "y": [-40], "z": [50],
                               "z_stat": [3.5]},
                    "metadata": {"sample_sizes": [16], "modality": "fMRI", "age": 40},
                },
            }
        },
        "pain_02": {
            "contrasts": {
                "a": {
                    "coords": {"space": "MNI", "x": [0, 8], "y": [0, -50], "z": [0, 20]},
                    "metadata": {"sample_sizes": [25, 25], "t_thr": 3.0, "modality": "PET"},
                },
                "b": {
                    "coords": {"space": "MNI", "x": [], "y": [], "z": []},
                    "metadata": {"sample_sizes": [12], "t_thr": 3.3, "modality": "PET",
                                 "age": None},
                },
            }
        },
    }


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


@pytest.fixture
def dataset_json(tmp_path: Path) -> Path:
    return write_json(tmp_path / "dataset.json", nimare_dataset())


def test_nimare_studies(dataset_json: Path) -> None:
    with pytest.warns(DaskmetaWarning):
        studyset = read_nimare_json(dataset_json)
    assert studyset.names == ["pain_01-1", "pain_01-2", "pain_02-a", "pain_02-b"]
    table = studyset.studies
    np.testing.assert_array_equal(table["n1"], [20, 16, 25, 12])
    assert table.loc[0, "n2"] == 22 and np.isnan(table.loc[1, "n2"])
    assert table["age"].dtype == np.float64 and np.isnan(table.loc[3, "age"])
    assert table["modality"].tolist() == ["fMRI", "fMRI", "PET", "PET"]
    assert list(studyset.peaks.columns) == list(PEAK_COLUMNS)
    assert len(studyset.peaks_of("pain_02-b")) == 0


def test_nimare_statistics_and_spaces(dataset_json: Path) -> None:
    with pytest.warns(DaskmetaWarning) as record:
        studyset = read_nimare_json(dataset_json)
    messages = [str(w.message) for w in record]
    np.testing.assert_array_equal(studyset.peaks_of("pain_01-1")["t"], [4.5, -3.9])
    tal = studyset.peaks_of("pain_01-2")
    expected_t = stats.t.isf(stats.norm.sf(3.5), 15)  # one-sample, n = 16
    assert tal["t"].iloc[0] == pytest.approx(expected_t, rel=1e-12)
    np.testing.assert_allclose(tal[["x", "y", "z"]], to_spm_mni([[30, -40, 50]], "other_tal"))
    assert tal["space"].iloc[0] == "other_tal"
    # no statistic: positive peaks of unknown value at t_thr, with a warning
    np.testing.assert_array_equal(studyset.peaks_of("pain_02-a")["t"], [3.0, 3.0])
    assert any("'pain_02-a'" in m and "unknown value" in m for m in messages)
    # t_thr of pain_01-2 filled from its single peak, with a warning
    assert studyset.studies.loc[1, "t_thr"] == pytest.approx(expected_t)
    assert any("'pain_01-2'" in m and "t_thr missing" in m for m in messages)


def test_nimare_dispatch(dataset_json: Path) -> None:
    with pytest.warns(DaskmetaWarning):
        assert len(load_studies(dataset_json)) == 4


def error_of(path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        read_nimare_json(path)
    return info.value


def test_nimare_missing_sample_sizes(tmp_path: Path) -> None:
    data = nimare_dataset()
    del data["pain_02"]["contrasts"]["a"]["metadata"]["sample_sizes"]
    path = write_json(tmp_path / "d.json", data)
    error = error_of(path)
    assert "'pain_02-a'" in str(error) and error.field == "sample_sizes"
    assert error.path == str(path)
    # the line of the contrast's key "a" in the indented file
    lines = path.read_text().splitlines()
    assert lines[error.line - 1].strip().startswith('"a":')


def test_nimare_sample_sizes_line(tmp_path: Path) -> None:
    data = nimare_dataset()
    data["pain_01"]["contrasts"]["2"]["metadata"]["sample_sizes"] = [16, 12, 9]
    path = write_json(tmp_path / "d.json", data)
    error = error_of(path)
    assert error.field == "sample_sizes" and "'pain_01-2'" in str(error)
    assert '"sample_sizes"' in path.read_text().splitlines()[error.line - 1]


@pytest.mark.parametrize(
    ("edit", "field", "match"),
    [
        (lambda c: c["coords"].update(space="ICBM"), "space", "unknown coords.space"),
        (lambda c: c["coords"].update(y=[1]), "y", "equal length"),
        (lambda c: c["coords"].update(x=[10, "ten"]), "x", "expected a number"),
        (lambda c: c.pop("coords"), "coords", "no coords"),
        (lambda c: c["metadata"].update(sample_sizes=[0, 22]), "n1", "positive"),
        (lambda c: c["coords"].update(x=[10, 120]), "x", "outside"),
    ],
)
def test_nimare_bad_contrast(tmp_path: Path, edit, field: str, match: str) -> None:
    data = nimare_dataset()
    edit(data["pain_01"]["contrasts"]["1"])
    path = write_json(tmp_path / "d.json", data)
    with pytest.raises(InputError, match=match) as info:
        read_nimare_json(path)
    assert (info.value.path, info.value.field) == (str(path), field)
    assert info.value.line == 4  # "1": { of pain_01


def test_nimare_duplicate_names(tmp_path: Path) -> None:
    data = {"a-b": {"contrasts": {"c": {"coords": {"space": "MNI", "x": [], "y": [], "z": []},
                                        "metadata": {"sample_sizes": [10]}}}},
            "a": {"contrasts": {"b-c": {"coords": {"space": "MNI", "x": [], "y": [], "z": []},
                                        "metadata": {"sample_sizes": [10]}}}}}
    with pytest.raises(InputError, match="duplicate study name 'a-b-c'") as info:
        read_nimare_json(write_json(tmp_path / "d.json", data))
    assert info.value.field == "study"


def test_nimare_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{\n  "s": {\n    "contrasts": \n  }\n}\n')
    error = error_of(path)
    assert error.line == 4 and "not valid JSON" in str(error)


# --- Sleuth --------------------------------------------------------------------------------

SLEUTH = """\
// Reference=MNI
// Smith et al., 2010: patients > controls
// Subjects=24
-38\t22\t-8
42 18 -6

// Jones et al., 2012
// second name line
// Subjects=18
10\t12\t14
// Empty et al., 2015
// Subjects=30

// Reference=Talairach
// Lee et al., 2016
// Subjects=12
0\t0\t0
"""


@pytest.fixture
def sleuth_file(tmp_path: Path) -> Path:
    path = tmp_path / "sleuth.txt"
    path.write_text(SLEUTH)
    return path


def test_sleuth(sleuth_file: Path) -> None:
    with pytest.warns(DaskmetaWarning) as record:
        studyset = load_studies(sleuth_file)
    messages = [str(w.message) for w in record]
    assert studyset.names == [
        "Smith et al., 2010: patients > controls",
        "Jones et al., 2012 second name line",
        "Empty et al., 2015",
        "Lee et al., 2016",
    ]
    table = studyset.studies
    np.testing.assert_array_equal(table["n1"], [24, 18, 30, 12])
    assert table["n2"].isna().all()
    # no statistic anywhere: t_thr is the t of p = 0.001 at N - 1 df, peaks get +t_thr
    np.testing.assert_allclose(table["t_thr"], stats.t.isf(0.001, table["n1"] - 1))
    smith = studyset.peaks_of(studyset.names[0])
    np.testing.assert_allclose(smith["t"], [stats.t.isf(0.001, 23)] * 2)
    assert smith["line"].tolist() == [4, 5]
    assert len(studyset.peaks_of("Empty et al., 2015")) == 0
    lee = studyset.peaks_of("Lee et al., 2016")
    np.testing.assert_allclose(lee[["x", "y", "z"]], to_spm_mni([[0, 0, 0]], "other_tal"))
    assert lee["space"].tolist() == ["other_tal"]
    assert sum("t_thr missing" in m for m in messages) == 4
    assert sum("unknown value" in m for m in messages) == 3


@pytest.mark.parametrize(
    ("text", "line", "field", "match"),
    [
        ("// Reference=ICBM\n// A\n// Subjects=10\n0 0 0\n", 1, "Reference", "unknown Refer"),
        ("// A\n// Subjects=10\n0 0 0\n", 1, "Reference", "no '// Reference"),
        ("// Reference=MNI\n// A\n// Subjects=ten\n0 0 0\n", 3, "Subjects", "number of subj"),
        ("// Reference=MNI\n// A\n// Subjects=10\n0 0\n", 4, "z", "expected 3 fields"),
        ("// Reference=MNI\n// A\n// Subjects=10\n0 0 0 5\n", 4, "z", "got 4"),
        ("// Reference=MNI\n// A\n// Subjects=10\n0 O 0\n", 4, "y", "expected a number"),
        ("// Reference=MNI\n// A\n// Subjects=10\n0 0 0\n\n0 0 0\n", 6, "Subjects", "outside"),
        ("// Reference=MNI\n// A\n0 0 0\n", 3, "Subjects", "outside an experiment"),
        ("// Reference=MNI\n// A\n\n", 3, "Subjects", "no '// Subjects=N'"),
        ("// Reference=MNI\n// A\n// Subjects=2\n0 0 0\n", 2, "n1", "n1 >= 3"),
        ("// Reference=MNI\n// A\n// Subjects=10\n0 0 120\n", 4, "z", "outside the MNI152"),
        ("// Reference=MNI\n// A\n// Subjects=10\n\n// A\n// Subjects=9\n", 5, "study",
         "duplicate"),
    ],
)
def test_sleuth_bad_input(tmp_path: Path, text: str, line: int, field: str,
                          match: str) -> None:
    path = tmp_path / "sleuth.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as info:
        read_sleuth(path)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), line, field)
    assert f"{path}, line {line}, field '{field}'" in str(info.value)
