"""Messages about input: undecodable files name themselves, numbers print plainly, and a
warning lists each file once with its lines."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_io_nimare_sleuth import SLEUTH, nimare_dataset
from test_io_sdm import write_folder
from test_io_tables import PEAKS, STUDIES
from typer.testing import CliRunner

from daskmeta.analyses.recreate import recreate
from daskmeta.app.cli import app
from daskmeta.errors import DaskmetaWarning, InputError, plain
from daskmeta.io import load_studies
from daskmeta.io._common import check_thresholds
from daskmeta.model.studyset import StudySet, peak_lines, validate
from daskmeta.stats.peak_kernel import peak_kernels

BAD_BYTE = b"\xff"


def _spoil(path: Path, line: int) -> None:
    """Put a 0xff byte at the start of ``line`` (1-based) of a text file."""
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = BAD_BYTE + lines[line - 1]
    path.write_bytes(b"\n".join(lines))


def _assert_names_file(error: InputError, path: Path, line: int) -> None:
    assert error.path == str(path) and error.line == line
    message = str(error)
    assert str(path) in message and f"line {line}" in message
    assert "not UTF-8 text" in message and "0xff" in message and "codec" not in message


def test_undecodable_peak_file_names_file_and_line(tmp_path):
    folder = write_folder(tmp_path / "meta")
    peak_file = folder / "Jones.fsl_mni.txt"
    _spoil(peak_file, 2)
    with pytest.raises(InputError) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore", DaskmetaWarning)
        load_studies(folder)
    _assert_names_file(caught.value, peak_file, 2)


@pytest.mark.parametrize("name", ["studies.tsv", "peaks.tsv"])
def test_undecodable_study_or_peak_table(tmp_path, name):
    (tmp_path / "studies.tsv").write_text(STUDIES)
    (tmp_path / "peaks.tsv").write_text(PEAKS)
    _spoil(tmp_path / name, 3)
    with pytest.raises(InputError) as caught:
        load_studies(tmp_path)
    _assert_names_file(caught.value, tmp_path / name, 3)


def test_undecodable_nimare_json_and_sleuth_file(tmp_path):
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps(nimare_dataset(), indent=2))
    _spoil(dataset, 4)
    with pytest.raises(InputError) as caught:
        load_studies(dataset)
    _assert_names_file(caught.value, dataset, 4)
    sleuth = tmp_path / "sleuth.txt"
    sleuth.write_bytes(b"\xef\xbb\xbf" + SLEUTH.encode())  # a byte-order mark is fine ...
    _spoil(sleuth, 2)  # ... the line is counted after it
    with pytest.raises(InputError) as caught:
        load_studies(sleuth)
    _assert_names_file(caught.value, sleuth, 2)


def test_cli_preprocess_of_undecodable_file_exits_2_and_writes_nothing(tmp_path):
    folder = write_folder(tmp_path / "meta")
    _spoil(folder / "Lee.other_tal.txt", 1)
    store = tmp_path / "s.zarr"
    result = CliRunner().invoke(app, ["preprocess", str(folder), "--store", str(store),
                                      "--scheduler", "synchronous"])
    assert result.exit_code == 2
    assert "Lee.other_tal.txt, line 1" in result.output and "not UTF-8 text" in result.output
    assert not store.exists()


def test_plain_turns_numpy_values_into_python_ones():
    assert repr(plain(np.float64(-3.2))) == "-3.2"
    assert repr(plain(np.float32(0.1))) == "0.1"
    assert repr(plain([np.int64(3), np.str_("a")])) == "[3, 'a']"
    assert repr(plain(np.array([[1.5, 2.0]]))) == "[[1.5, 2.0]]"
    assert plain("text") == "text"


def _message(function, *args, **kwargs) -> str:
    with pytest.raises((ValueError, TypeError)) as caught:
        function(*args, **kwargs)
    return str(caught.value)


def test_messages_print_plain_numbers(tmp_path):
    studies = pd.DataFrame({"study": ["A"], "n1": [np.float64(-3.2)], "n2": [np.nan],
                            "_line": [np.int64(2)]})
    message = _message(validate, studies, studies.iloc[:0][["study"]], "x", "table.tsv")
    assert "got -3.2" in message
    thresholds = pd.DataFrame({"study": ["A"], "t_thr": [np.float64(-3.2)], "_line": [2]})
    assert "got -3.2" in (message := _message(check_thresholds, thresholds, "t.tsv"))
    ijk = np.zeros((1, 3), dtype=np.int64)
    messages = [message, _message(peak_kernels, ijk, ijk, fwhm=np.float64(-20.0)),
                _message(peak_kernels, ijk, ijk, anisotropy=np.float32(1.5))]
    assert "-20.0 was provided" in messages[1] and "1.5 was provided" in messages[2]
    (tmp_path / "studies.tsv").write_text(STUDIES)
    (tmp_path / "peaks.tsv").write_text(PEAKS.replace("A\t10\t12\t14", "A\t300\t12\t14"))
    messages.append(_message(load_studies, tmp_path))
    assert "(300.0, 12.0, 14.0)" in messages[-1]
    for message in messages:
        assert "np." not in message, message


def test_peak_lines_lists_each_file_once():
    peaks = pd.DataFrame({"source": ["a.txt", "a.txt", "b.txt", "a.txt", "a.txt"],
                          "line": [12, 3, 4, 7, 3]})
    assert peak_lines(peaks) == "a.txt: lines 3, 7, 12; b.txt: line 4"
    assert peak_lines(peaks, most=2) == "a.txt: lines 3, 7 and 1 more; b.txt: line 4"


def test_unknown_value_warning_lists_the_file_once(tmp_path):
    dataset = nimare_dataset()
    contrast = dataset["pain_02"]["contrasts"]["a"]["coords"]
    contrast.update(x=[0, 8, 10, 12], y=[0, -50, 10, 10], z=[0, 20, 10, 12])
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(dataset, indent=2))
    with pytest.warns(DaskmetaWarning) as record:
        load_studies(path)
    [message] = [str(w.message) for w in record if "'pain_02-a'" in str(w.message)]
    assert message.count(str(path)) == 1 and "4 peak(s) of unknown value" in message
    assert f"{path}: line " in message


def test_peaks_outside_the_mask_warning_names_their_lines():
    studies = pd.DataFrame({"study": ["A", "B"], "n1": [20.0, 20.0], "n2": [20.0, 20.0],
                            "t_thr": [3.0, 3.0]})
    # (0, 0, 0) and (0, -20, 10) lie in the ventricles / white matter, outside grey matter
    peaks = pd.DataFrame({
        "study": ["A"] * 3 + ["B"], "x": [0.0, 0.0, 0.0, 40.0], "y": [0.0, 0.0, -20.0, 20.0],
        "z": [0.0, 0.0, 10.0, 0.0], "t": [4.0, 4.5, 5.0, 4.0], "source": ["a.txt"] * 3 + ["b.txt"],
        "line": [2, 5, 9, 1],
    })
    for axis in "xyz":
        peaks[f"{axis}_orig"] = peaks[axis]
    peaks["space"] = "spm_mni"
    with pytest.warns(DaskmetaWarning, match="outside the gray_matter mask") as record:
        recreate(StudySet(studies, peaks), anisotropy=0.0)
    [message] = [str(w.message) for w in record if "'A'" in str(w.message)]
    assert "a.txt: lines" in message and message.count("a.txt") == 1
