"""Reader of daskmeta's native pair of tables, ``studies.tsv`` + ``peaks.tsv`` (docs/methods.md, section 1.2).

``studies.tsv`` is tab-separated with a header: ``study``, ``n1``, ``n2`` (empty or ``NA``
for a one-sample design), optional ``t_thr`` / ``p_thr``, then covariates, all as in
``sdm_table.txt`` (see :mod:`daskmeta.io.sdm_folder`). Two optional columns give a study's
whole-brain statistical map (docs/methods.md, section 3.8): ``map``, its path relative to
the table's folder (empty for a peak study), and ``map_stat``, ``t`` (default) or ``z``. A
study with a map needs no rows in ``peaks.tsv``; if it has some, the map is used, its peaks
are dropped and a warning names both files. A map that is not on disk is an error naming
the line.

``peaks.tsv`` is tab-separated with a header and one row per peak:

``study``
    A name from ``studies.tsv``. A study without rows is a null study.
``x``, ``y``, ``z``
    Coordinates in mm, in the space of ``space``.
``stat``
    The peak's statistic; the letters ``p`` / ``n`` mean a positive / negative peak of
    unknown value (given ``+/- t_thr`` with a warning).
``stat_type``
    Optional: ``t`` (default), ``z`` or ``p`` (one-tailed; ``-0.001`` is a negative peak).
``space``
    Optional: one of :data:`~daskmeta.model.coordinates.SPACE_TOKENS`, default ``spm_mni``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daskmeta.errors import InputError
from daskmeta.io._common import (
    STAT_TYPES,
    assemble,
    check_choice,
    is_missing,
    parse_number,
    parse_stat,
    parse_study_table,
    read_table,
    require_columns,
)
from daskmeta.model.coordinates import SPACE_TOKENS
from daskmeta.model.studyset import StudySet

PEAK_TABLE_COLUMNS = ("study", "x", "y", "z", "stat")


def read_peak_table(path: str | Path) -> list[dict[str, Any]]:
    """Raw peak records of a ``peaks.tsv`` (format in the module docstring)."""
    path = Path(path)
    table = read_table(path)
    require_columns(table, PEAK_TABLE_COLUMNS, path)
    records = []
    for _, row in table.iterrows():
        line = int(row["_line"])
        stat_type = row.get("stat_type", "")
        stat_type = "t" if is_missing(stat_type) else check_choice(
            stat_type, STAT_TYPES, path, line, "stat_type")
        space = row.get("space", "")
        space = "spm_mni" if is_missing(space) else check_choice(
            space, SPACE_TOKENS, path, line, "space")
        if is_missing(row["stat"]):
            raise InputError("missing statistic; give a number or the letter p / n",
                             path, line, "stat")
        x, y, z = (parse_number(row[axis], path, line, axis) for axis in "xyz")
        value, unknown = parse_stat(row["stat"], stat_type, path, line, "stat")
        records.append({
            "study": str(row["study"]).strip(), "x_orig": x, "y_orig": y, "z_orig": z,
            "value": value, "stat_type": stat_type, "unknown": unknown, "space": space,
            "source": str(path), "line": line, "stat_field": "stat",
        })
    return records


def read_tables(studies_path: str | Path, peaks_path: str | Path | None = None) -> StudySet:
    """Read ``studies.tsv`` and ``peaks.tsv`` into a :class:`~daskmeta.model.studyset.StudySet`.

    Parameters
    ----------
    studies_path : str or Path
        The study table.
    peaks_path : str or Path, optional
        The peak table; default ``peaks.tsv`` beside ``studies_path``.

    Returns
    -------
    StudySet

    Raises
    ------
    InputError
        For any malformed table, naming the file, line and field; also for peaks of a
        study that has no row in ``studies.tsv``.
    """
    studies_path = Path(studies_path)
    peaks_path = studies_path.with_name("peaks.tsv") if peaks_path is None else Path(peaks_path)
    if not peaks_path.is_file():
        raise InputError(f"peak table {peaks_path} not found; expected it beside the study "
                         "table (columns study, x, y, z, stat)", peaks_path, None, "study")
    studies = parse_study_table(read_table(studies_path), studies_path)
    raw = read_peak_table(peaks_path)
    log = [f"read {len(studies)} studies from {studies_path} and {len(raw)} peaks from "
           f"{peaks_path}"]
    return assemble(studies, raw, studies_path, studies_path, log)
