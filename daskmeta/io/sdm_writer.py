"""Writer of a simulated :class:`~daskmeta.model.studyset.StudySet` as an SDM folder.

:func:`write_studyset` writes ``sdm_table.txt`` and one peak file per study (docs/methods.md, section 1)
from the ``*_orig`` and ``source`` columns that :func:`~daskmeta.testing.simulate.simulate_studyset`
fills, atomically, with the number formats that make the same seed give byte-identical files.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from daskmeta.model.studyset import MAP_COLUMNS, StudySet


def _format_cell(value: Any, missing: str = "NA") -> str:
    if isinstance(value, str):
        return value
    if value is None or pd.isna(value):
        return missing
    value = float(value)
    return str(int(value)) if value.is_integer() else format(value, ".10g")


def _format_coordinate(value: float) -> str:
    value = float(value) + 0.0  # no "-0"
    return f"{value:.0f}" if value.is_integer() else f"{value:.2f}"


def _write_folder(studyset: StudySet, folder: Path) -> None:
    # an SDM folder names a study's map by its file (STUDY.nii.gz), not by a table column
    studies = studyset.studies.drop(columns=list(MAP_COLUMNS), errors="ignore")
    lines = ["\t".join(map(str, studies.columns))]
    for _, row in studies.iterrows():
        cells = [_format_cell(row[c], missing="" if c == "n2" else "NA") for c in studies.columns]
        lines.append("\t".join(cells))
    (folder / "sdm_table.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in studies["study"]:
        peaks = studyset.peaks_of(name)
        if peaks.empty:
            (folder / f"{name}.no_peaks.txt").write_text("", encoding="utf-8")
            continue
        text = "".join(
            "\t".join([*(_format_coordinate(v) for v in (p.x_orig, p.y_orig, p.z_orig)),
                       f"{p.t:.2f}"]) + "\n"
            for p in peaks.itertuples()
        )
        space = peaks["space"].iloc[0] if "space" in peaks else "spm_mni"
        (folder / f"{name}.{space}.txt").write_text(text, encoding="utf-8")


def write_studyset(studyset: StudySet, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a simulated :class:`StudySet` as an SDM folder, atomically.

    The folder is built under a temporary sibling name and renamed into place, so an
    interrupted run leaves no half-written folder.

    Parameters
    ----------
    studyset : StudySet
        As returned by :func:`~daskmeta.testing.simulate.simulate_studyset` (uses the ``*_orig`` and
        ``source`` columns).
    out_dir : path
        The folder to write; it must not exist or be empty unless ``overwrite``.
    overwrite : bool, default False
        Replace an existing non-empty folder, all its files included.

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder; choose another out_dir")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir} exists and is not empty; pass overwrite=True to replace it "
            "or choose another out_dir"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # a sibling, so the final rename stays on one file system; mkdir honours the umask
    building = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(6)}.tmp"
    building.mkdir()
    try:
        _write_folder(studyset, building)
        if out_dir.is_dir() and any(out_dir.iterdir()):
            retired = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(6)}.old"
            os.replace(out_dir, retired)
            os.replace(building, out_dir)
            shutil.rmtree(retired)
        else:
            os.replace(building, out_dir)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return out_dir
