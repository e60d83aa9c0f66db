"""Reader of an SDM folder: ``sdm_table.txt`` and one peak file per study (docs/methods.md, section 1).

``sdm_table.txt`` is tab-separated with a header. Columns:

``study``
    Unique study name.
``n1``, ``n2``
    Sample sizes; ``n2`` absent, empty or ``NA`` means a one-sample design.
``t_thr``
    Optional whole-brain threshold as a positive t. When missing it is filled from a
    ``p_thr`` column, else the smallest ``|t|`` among the study's peaks, else the t of an
    uncorrected p = 0.001, each with a :class:`~daskmeta.errors.DaskmetaWarning`.
``peak_stat``
    Optional, daskmeta's extension: ``t`` (default), ``z`` or ``p``, what the values in the
    study's peak file are. z becomes t with :func:`~daskmeta.stats.effect_size.t_from_z` and p
    with :func:`~daskmeta.stats.effect_size.t_from_p` at the study's degrees of freedom. A
    p-value carries the sign of its peak: ``-0.001`` is a negative peak.
other columns
    Covariates and filters: numeric-or-missing columns become float, purely textual
    columns (such as ``modality``) stay strings.

Peak files are ``STUDY.TOKEN.txt``: the study name is everything before the last dot-part
and ``TOKEN`` is one of :data:`~daskmeta.model.coordinates.SPACE_TOKENS` (coordinates converted
to SPM-MNI) or ``no_peaks`` (a null study, valid input). Each line holds ``x y z t``
separated by commas, tabs or spaces; blank lines and lines starting with ``#`` are
ignored. ``t`` may be the letter ``p`` / ``n``: a positive / negative peak of unknown
value, given ``+/- t_thr`` with a warning. Every study needs exactly one peak file and
every peak file a row. ``.txt`` files whose name has no dot-part besides ``.txt`` (such as
``notes.txt``) are not peak files and are ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from daskmeta.errors import InputError, plain
from daskmeta.io._common import (
    STAT_TYPES,
    assemble,
    check_choice,
    is_missing,
    parse_number,
    parse_stat,
    parse_study_table,
    read_table,
    read_text,
)
from daskmeta.model.coordinates import SPACE_TOKENS
from daskmeta.model.studyset import StudySet, validate

TABLE_NAME = "sdm_table.txt"
NO_PEAKS = "no_peaks"
_SEPARATORS = re.compile(r"\s*,\s*|\s+")
_PEAK_FIELDS = ("x", "y", "z", "t")


def _peak_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Study name -> (peak file, token) for every ``STUDY.TOKEN.txt`` in ``folder``."""
    found: dict[str, tuple[Path, str]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not path.name.lower().endswith(".txt"):
            continue
        stem = path.name[: -len(".txt")]
        if path.name == TABLE_NAME or "." not in stem:
            continue
        study, token = stem.rsplit(".", 1)
        token = token.lower()
        if token not in (*SPACE_TOKENS, NO_PEAKS):
            raise InputError(
                f"unknown software/space token {token!r} in the peak file name; expected "
                f"STUDY.TOKEN.txt with TOKEN one of {(*SPACE_TOKENS, NO_PEAKS)}",
                path, None, "space",
            )
        if study in found:
            raise InputError(
                f"study {plain(study)!r} has two peak files, {found[study][0].name} and {path.name}; "
                "keep exactly one", path, None, "study",
            )
        found[study] = (path, token)
    return found


def read_peak_file(path: str | Path, study: str, token: str,
                   stat_type: str = "t") -> list[dict[str, Any]]:
    """Raw peak records of one SDM peak file (lines ``x y z t``).

    Parameters
    ----------
    path : str or Path
        The peak file.
    study : str
        The study it belongs to.
    token : str
        Its space token, or ``no_peaks`` (then the file must hold no peak line).
    stat_type : {'t', 'z', 'p'}
        What the fourth field holds.

    Returns
    -------
    list of dict
        Records with the keys of :data:`daskmeta.io._common.RAW_PEAK_KEYS`.
    """
    path = Path(path)
    records = []
    for number, text in enumerate(read_text(path).splitlines(), 1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        if token == NO_PEAKS:
            raise InputError(f"a {NO_PEAKS} file must hold no peaks; found {text!r}. Rename "
                             "it STUDY.SOFTWARE_SPACE.txt if the study reported peaks",
                             path, number, "x")
        fields = _SEPARATORS.split(text)
        if len(fields) != 4 or not all(fields):
            missing = _PEAK_FIELDS[min(len(fields), 3)] if len(fields) < 4 else "t"
            raise InputError(f"expected 4 fields 'x y z t' separated by commas, tabs or "
                             f"spaces; got {len(fields)} in {text!r}", path, number, missing)
        x, y, z = (parse_number(v, path, number, axis) for v, axis in zip(fields[:3], "xyz", strict=True))
        value, unknown = parse_stat(fields[3], stat_type, path, number, "t")
        records.append({
            "study": study, "x_orig": x, "y_orig": y, "z_orig": z, "value": value,
            "stat_type": stat_type, "unknown": unknown, "space": token,
            "source": str(path), "line": number, "stat_field": "t",
        })
    return records


def read_sdm_folder(folder: str | Path) -> StudySet:
    """Read an SDM folder into a :class:`~daskmeta.model.studyset.StudySet`.

    Parameters
    ----------
    folder : str or Path
        Folder holding ``sdm_table.txt`` and the peak files (format in the module
        docstring; docs/methods.md, section 1).

    Returns
    -------
    StudySet
        Coordinates in SPM-MNI mm, signed t per peak, one row per study.

    Raises
    ------
    InputError
        For any malformed table or peak file, naming the file, line and field.
    """
    folder = Path(folder)
    table_path = folder / TABLE_NAME
    if not table_path.is_file():
        raise InputError(f"no {TABLE_NAME} in the folder", folder, None, "study")
    studies = parse_study_table(read_table(table_path), table_path)
    validate(studies, studies.iloc[:0][["study"]], str(folder), str(table_path))
    if "peak_stat" in studies:
        studies["peak_stat"] = [
            "t" if is_missing(v) else check_choice(v, STAT_TYPES, table_path, line, "peak_stat")
            for v, line in zip(studies["peak_stat"], studies["_line"], strict=True)
        ]
    files = _peak_files(folder)
    for name, line in zip(studies["study"], studies["_line"], strict=True):
        if name not in files:
            raise InputError(
                f"study {plain(name)!r} has no peak file; expected {name}.SOFTWARE_SPACE.txt (with "
                f"SOFTWARE_SPACE one of {SPACE_TOKENS}) or {name}.{NO_PEAKS}.txt in {folder}",
                table_path, int(line), "study",
            )
    for name, (path, _) in files.items():
        if name not in set(studies["study"]):
            raise InputError(f"peak file of study {plain(name)!r} has no row in {TABLE_NAME}; add "
                             "the row or remove the file", path, None, "study")
    raw: list[dict[str, Any]] = []
    stat_types = studies["peak_stat"] if "peak_stat" in studies else ["t"] * len(studies)
    for name, stat_type in zip(studies["study"], stat_types, strict=True):
        path, token = files[name]
        raw.extend(read_peak_file(path, name, token, stat_type))
    tokens = {token for _, token in files.values()} - {NO_PEAKS}
    log = [f"read {len(studies)} studies from {table_path}; spaces {sorted(tokens)}"]
    nulls = int(np.sum([files[name][1] == NO_PEAKS for name in studies["study"]]))
    if nulls:
        log.append(f"{nulls} null studies ({NO_PEAKS} files)")
    return assemble(studies, raw, folder, table_path, log)
