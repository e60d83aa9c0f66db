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

A study may instead give its whole-brain t-map as ``STUDY.nii.gz`` or ``STUDY.nii`` beside
the peak files (docs/methods.md, section 3.8): such a study needs no peak file; if it has
one, the map is used, its peaks are dropped and a warning names both files. Every map is
checked with :func:`~daskmeta.io.statmap.inspect_statmap` (a t-map by default; a
``map_stat`` column may say ``z``). A ``map`` column in ``sdm_table.txt`` may name a map
elsewhere (relative to the folder) instead. A NIfTI file in the folder whose name is no
study's is an error, as a stray peak file is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

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
from daskmeta.model.studyset import MAP_COLUMNS, StudySet, validate

TABLE_NAME = "sdm_table.txt"
NO_PEAKS = "no_peaks"
#: File name endings of a study's statistical map.
MAP_SUFFIXES = (".nii.gz", ".nii")
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


def _map_files(folder: Path) -> dict[str, Path]:
    """Study name -> statistical map for every ``STUDY.nii.gz`` / ``STUDY.nii`` in ``folder``."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        suffix = next((s for s in MAP_SUFFIXES if path.name.lower().endswith(s)), None)
        if suffix is None or not path.is_file():
            continue
        study = path.name[: -len(suffix)]
        if study in found:
            raise InputError(f"study {plain(study)!r} has two statistical maps, {found[study].name} "
                             f"and {path.name}; keep exactly one", path, None, "map")
        found[study] = path
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
    # maps are checked once found in the folder, by assemble
    validate(studies.drop(columns=list(MAP_COLUMNS), errors="ignore"), studies.iloc[:0][["study"]],
             str(folder), str(table_path))
    if "peak_stat" in studies:
        studies["peak_stat"] = [
            "t" if is_missing(v) else check_choice(v, STAT_TYPES, table_path, line, "peak_stat")
            for v, line in zip(studies["peak_stat"], studies["_line"], strict=True)
        ]
    files = _peak_files(folder)
    maps = _map_files(folder)
    if "map" not in studies:
        studies["map"] = ""
    for idx, name, line in zip(studies.index, studies["study"], studies["_line"], strict=True):
        if name in maps:
            named, found = studies.at[idx, "map"], os.path.abspath(maps[name])
            if named and named != found:
                raise InputError(f"study {plain(name)!r} has the map {maps[name].name} in the folder "
                                 f"and another in the map column, {named}; keep one",
                                 table_path, int(line), "map")
            studies.at[idx, "map"] = found
        if name not in files and not studies.at[idx, "map"]:
            raise InputError(
                f"study {plain(name)!r} has no peak file; expected {name}.SOFTWARE_SPACE.txt (with "
                f"SOFTWARE_SPACE one of {SPACE_TOKENS}), {name}.{NO_PEAKS}.txt or a t-map "
                f"{name}.nii.gz in {folder}", table_path, int(line), "study",
            )
    for name, (path, _) in files.items():
        if name not in set(studies["study"]):
            raise InputError(f"peak file of study {plain(name)!r} has no row in {TABLE_NAME}; add "
                             "the row or remove the file", path, None, "study")
    for name, path in maps.items():
        if name not in set(studies["study"]):
            raise InputError(f"statistical map of study {plain(name)!r} has no row in {TABLE_NAME}; "
                             "add the row or remove the file", path, None, "study")
    raw: list[dict[str, Any]] = []
    stat_types = studies["peak_stat"] if "peak_stat" in studies else ["t"] * len(studies)
    for name, stat_type in zip(studies["study"], stat_types, strict=True):
        if name in files:
            path, token = files[name]
            raw.extend(read_peak_file(path, name, token, stat_type))
    tokens = {token for _, token in files.values()} - {NO_PEAKS}
    log = [f"read {len(studies)} studies from {table_path}; spaces {sorted(tokens)}"]
    nulls = sum(files[name][1] == NO_PEAKS for name, path in zip(studies["study"], studies["map"],
                                                                 strict=True)
                if name in files and not path)
    if nulls:
        log.append(f"{nulls} null studies ({NO_PEAKS} files)")
    n_maps = int((studies["map"] != "").sum())
    if n_maps:
        log.append(f"{n_maps} studies given as statistical maps")
    listed = {name: str(path) for name, (path, _) in files.items()}
    return assemble(studies, raw, folder, table_path, log, listed=listed)
