"""Parsing shared by the readers: tables with line numbers, numbers, statistics, spaces.

Every reader turns its input into a study table (strings, with the 1-based line of each
row in ``_line``) and a list of raw peaks (coordinates and statistic as reported, with
their file and line), then calls :func:`assemble`, which applies the rules of
docs/methods.md, section 1, once for all formats:

- degrees of freedom ``n1 + n2 - 2`` or ``n1 - 1``; z -> t and one-tailed p -> t;
- missing ``t_thr`` from ``p_thr``, else the smallest ``|t|`` among the study's peaks of
  known value, else the t of p = 0.001 (a :class:`~daskmeta.errors.DaskmetaWarning` each);
- peaks of unknown value (letters ``p`` / ``n``) get ``+/- t_thr`` (a warning each study);
- coordinates converted to SPM-MNI and checked against the MNI152 2 mm grid;
- statistical maps (``map``, ``map_stat``) checked with
  :func:`~daskmeta.io.statmap.inspect_statmap`; a study with a map loses its peaks
  (docs/methods.md, section 3.8).

Readers never write files.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from daskmeta.errors import InputError, plain
from daskmeta.io._notes import note
from daskmeta.io.statmap import inspect_statmap
from daskmeta.model.coordinates import SPACE_TOKENS, to_spm_mni
from daskmeta.model.grid import GRID_AFFINE, GRID_SHAPE, in_grid, mm_to_ijk
from daskmeta.model.studyset import (
    MAP_COLUMNS,
    MAP_STATS,
    PEAK_COLUMNS,
    STUDY_COLUMNS,
    StudySet,
    peak_lines,
    validate,
)
from daskmeta.stats.effect_size import degrees_of_freedom, t_from_p, t_from_z

#: Cell texts read as a missing value (compared case-insensitively).
MISSING = frozenset({"", "na", "nan", "n/a"})
#: Study-table columns with a meaning of their own; every other column is a covariate.
RESERVED = ("study", "n1", "n2", "t_thr", "p_thr", "peak_stat", *MAP_COLUMNS)
#: Kinds of peak statistic: t, z or one-tailed p.
STAT_TYPES = ("t", "z", "p")
#: Uncorrected p of ``t_thr`` without threshold or peaks (chosen here; docs/methods.md, section 1.4).
DEFAULT_P_THR = 0.001
#: Columns of the raw peak records readers hand to :func:`assemble`.
RAW_PEAK_KEYS = (
    "study", "x_orig", "y_orig", "z_orig", "value", "stat_type", "unknown", "space",
    "source", "line", "stat_field",
)

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")
_AXES = ("x", "y", "z")


def is_missing(value: Any) -> bool:
    """Whether a cell (text, number or None) is a missing value."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in MISSING
    return isinstance(value, float) and np.isnan(value)


def is_number(value: Any) -> bool:
    """Whether a cell is a finite number or the text of one (``nan``/``inf`` are not)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float | np.integer | np.floating):
        return bool(np.isfinite(value))
    return isinstance(value, str) and _NUMBER.fullmatch(value.strip()) is not None


def parse_number(
    value: Any, path: str | Path, line: int | None, field: str, expected: str = "a number"
) -> float:
    """A finite number from a cell; :class:`InputError` naming file, line and field."""
    if is_number(value):
        return float(value)
    hint = ""
    if isinstance(value, str) and _DECIMAL_COMMA.fullmatch(value.strip()):
        hint = "; use '.' as the decimal separator"
    raise InputError(f"expected {expected}, got {plain(value)!r}{hint}", path, line, field)


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped).

    Raises
    ------
    InputError
        If the file is not UTF-8 text, naming the file, the line of the first byte that
        cannot be decoded and that byte.
    """
    data = Path(path).read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column} cannot be decoded; "
            "save the file as UTF-8 (plain text)", path, line, None,
        ) from exc


def read_table(path: str | Path) -> pd.DataFrame:
    """A tab-separated table with a header, as strings, plus the 1-based ``_line`` of rows.

    Blank lines are skipped; a row shorter than the header is padded with empty cells
    (editors drop trailing tabs); a row with extra non-empty cells is an error. Reserved
    column names are matched case-insensitively. The header's line is in
    ``table.attrs["header_line"]``.
    """
    path = Path(path)
    lines = read_text(path).splitlines()
    header_at = next((i for i, text in enumerate(lines) if text.strip()), None)
    if header_at is None:
        raise InputError("the table is empty; expected a tab-separated header row "
                         "starting with 'study'", path, 1, "study")
    header = [name.strip() for name in lines[header_at].split("\t")]
    header = [name.lower() if name.lower() in RESERVED else name for name in header]
    if len(header) == 1 and re.search(r"[ ,;]", header[0]):
        raise InputError(f"the header {header[0]!r} is one column; the table must be "
                         "tab-separated", path, header_at + 1, header[0])
    for position, name in enumerate(header):
        if not name:
            raise InputError(f"column {position + 1} of the header has no name",
                             path, header_at + 1, f"column {position + 1}")
        if header.index(name) != position:
            raise InputError(f"column name {plain(name)!r} appears twice in the header",
                             path, header_at + 1, name)
    rows = []
    for index in range(header_at + 1, len(lines)):
        if not lines[index].strip():
            continue
        cells = [cell.strip() for cell in lines[index].split("\t")]
        if len(cells) > len(header):
            if any(cells[len(header):]):
                raise InputError(
                    f"{len(cells)} tab-separated fields but the header has {len(header)}",
                    path, index + 1, header[-1],
                )
            cells = cells[: len(header)]
        rows.append(cells + [""] * (len(header) - len(cells)) + [index + 1])
    table = pd.DataFrame(rows, columns=[*header, "_line"], dtype=object)
    table["_line"] = table["_line"].astype(np.int64)
    table.attrs["header_line"] = header_at + 1
    return table


def require_columns(table: pd.DataFrame, columns: Iterable[str], path: str | Path) -> None:
    """:class:`InputError` on the header line for each required column that is absent."""
    for column in columns:
        if column not in table.columns:
            known = [name for name in table.columns if name != "_line"]
            raise InputError(f"required column {column!r} is missing; columns found: {known}",
                             path, table.attrs.get("header_line", 1), column)


def convert_covariates(table: pd.DataFrame, columns: Iterable[str], path: str | Path) -> None:
    """Numeric-or-missing columns become float in place; textual columns stay strings.

    A column in which at least half of the non-missing cells are numbers but one is not
    (``'3,5'``, ``'abc'``) is taken as a numeric covariate with a typo: :class:`InputError`
    naming the line and field.
    """
    lines = table["_line"] if "_line" in table else pd.Series([None] * len(table))
    for column in columns:
        cells = [(idx, cell) for idx, cell in table[column].items() if not is_missing(cell)]
        numeric = [is_number(cell) for _, cell in cells]
        if all(numeric):
            table[column] = [np.nan if is_missing(c) else float(c) for c in table[column]]
        elif 2 * sum(numeric) >= len(numeric):
            idx, cell = cells[numeric.index(False)]
            parse_number(cell, path, lines[idx], column,
                         expected=f"a number (column {column!r} is a numeric covariate)")
        else:
            table[column] = [None if is_missing(c) else str(c).strip() for c in table[column]]


def check_thresholds(studies: pd.DataFrame, path: str | Path) -> None:
    """:class:`InputError` unless every given ``t_thr > 0`` and ``0 < p_thr < 1``."""
    for column, low, high in (("t_thr", 0.0, np.inf), ("p_thr", 0.0, 1.0)):
        if column not in studies:
            continue
        values = studies[column].astype(np.float64)
        bad = values.notna() & ~((values > low) & (values < high))
        if bad.any():
            idx = bad.idxmax()
            raise InputError(
                f"{column} must lie in ({low:g}, {high:g}), got {plain(values[idx])!r}",
                path, int(studies.at[idx, "_line"]), column,
            )


def parse_study_table(table: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """Study rows with numeric ``n1, n2, t_thr`` (and ``p_thr``), covariates converted.

    ``n2`` absent or empty means a one-sample design; ``t_thr`` absent is filled later by
    :func:`assemble`. A ``map`` cell is a path relative to the table's folder, made absolute;
    ``map_stat`` is ``t`` or ``z`` (empty: ``t`` for a study with a map). Keeps ``_line``.
    """
    require_columns(table, ("study", "n1"), path)
    studies = table.copy()
    for column in ("n2", "t_thr"):
        if column not in studies:
            studies[column] = ""
    for column in ("n1", "n2", "t_thr", "p_thr"):
        if column not in studies:
            continue
        studies[column] = [
            np.nan if is_missing(cell) else parse_number(cell, path, line, column)
            for cell, line in zip(studies[column], studies["_line"], strict=True)
        ]
    check_thresholds(studies, path)
    if "map" in studies:
        studies["map"] = [resolve_path(cell, Path(path).parent) for cell in studies["map"]]
    if "map_stat" in studies:
        studies["map_stat"] = [
            "" if is_missing(cell) else check_choice(cell, MAP_STATS, path, line, "map_stat")
            for cell, line in zip(studies["map_stat"], studies["_line"], strict=True)
        ]
    covariates = [c for c in studies.columns if c not in RESERVED and c != "_line"]
    convert_covariates(studies, covariates, path)
    studies["study"] = [str(name).strip() for name in studies["study"]]
    order = [*STUDY_COLUMNS, *(c for c in studies.columns if c not in STUDY_COLUMNS)]
    return studies[order]


def resolve_path(cell: Any, folder: str | Path) -> str:
    """A path cell made absolute against ``folder`` (``~`` expanded); ``""`` when missing.

    A URL (``scheme://...``) is kept as it is: it is not on disk, which the caller reports.
    """
    if is_missing(cell):
        return ""
    if "://" in str(cell):
        return str(cell).strip()
    return os.path.abspath(Path(folder) / Path(str(cell).strip()).expanduser())


def parse_stat(
    value: Any, stat_type: str, path: str | Path, line: int | None, field: str
) -> tuple[float, int]:
    """A peak statistic as ``(value, unknown)``.

    ``unknown`` is 0 for a number, +1 / -1 for the letters ``p`` / ``n`` (a positive /
    negative peak of unknown value, value NaN). A p-value must lie in (0, 1) in absolute
    value; a leading minus sign marks a negative peak.
    """
    if isinstance(value, str) and value.strip().lower() in ("p", "n"):
        return np.nan, 1 if value.strip().lower() == "p" else -1
    number = parse_number(value, path, line, field,
                          expected=f"a {stat_type} value or the letter p / n")
    if stat_type == "p" and not 0.0 < abs(number) < 1.0:
        raise InputError(f"a p-value must lie in (0, 1) (a minus sign marks a negative "
                         f"peak), got {plain(value)!r}", path, line, field)
    return number, 0


def check_choice(value: str, allowed: tuple[str, ...], path: str | Path, line: int | None,
                 field: str) -> str:
    """``value`` lower-cased if it is one of ``allowed``, else :class:`InputError`."""
    choice = str(value).strip().lower()
    if choice not in allowed:
        raise InputError(f"{field} must be one of {allowed}; {plain(value)!r} was provided",
                         path, line, field)
    return choice


def _grid_limits() -> str:
    corners = np.array([[0, 0, 0], np.array(GRID_SHAPE) - 1]) @ GRID_AFFINE[:3, :3].T
    corners += GRID_AFFINE[:3, 3]
    low, high = corners.min(axis=0), corners.max(axis=0)
    return ", ".join(f"{a} {lo:g}..{hi:g}" for a, lo, hi in zip(_AXES, low, high, strict=True))


def convert_coordinates(peaks: pd.DataFrame) -> pd.DataFrame:
    """Add SPM-MNI ``x, y, z`` from ``*_orig`` and ``space``; off-grid peaks are errors."""
    peaks = peaks.copy()
    xyz = np.full((len(peaks), 3), np.nan)
    orig = peaks[["x_orig", "y_orig", "z_orig"]].to_numpy(dtype=np.float64)
    for token in SPACE_TOKENS:
        rows = (peaks["space"] == token).to_numpy()
        if rows.any():
            xyz[rows] = to_spm_mni(orig[rows], token)
    ijk = mm_to_ijk(xyz) if len(peaks) else np.zeros((0, 3), dtype=np.int64)
    outside = ~in_grid(ijk) if len(peaks) else np.zeros(0, dtype=bool)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        axis = int(np.flatnonzero((ijk[row] < 0) | (ijk[row] >= np.array(GRID_SHAPE)))[0])
        raise InputError(
            f"peak at {tuple(plain(orig[row].round(2)))} mm ({peaks['space'].iloc[row]}; "
            f"{tuple(plain(xyz[row].round(2)))} in SPM-MNI) lies outside the MNI152 2 mm grid "
            f"({_grid_limits()}); check the coordinates and the space",
            peaks["source"].iloc[row], int(peaks["line"].iloc[row]), _AXES[axis],
        )
    peaks["x"], peaks["y"], peaks["z"] = xyz.T
    return peaks


def _fill_thresholds(studies: pd.DataFrame, peaks: pd.DataFrame, log: list[str]) -> None:
    """Fill missing ``t_thr`` in place (docs/methods.md, section 1.4).

    A study given as a statistical map gets the same rule, recorded in the log without a
    warning: its map gives the value of every voxel it covers (docs/methods.md, section 3.8).
    """
    for idx in studies.index[studies["t_thr"].isna()]:
        name, df = studies.at[idx, "study"], studies.at[idx, "_df"]
        known = peaks.loc[(peaks["study"] == name) & (peaks["unknown"] == 0), "t"].abs()
        p_thr = studies.at[idx, "p_thr"] if "p_thr" in studies else np.nan
        if not np.isnan(p_thr):
            t_thr = float(t_from_p(p_thr, df))
            how = f"from its p_thr = {p_thr:g}"
        elif len(known):
            t_thr = float(known.min())
            how = "as the smallest |t| among its peaks"
        else:
            t_thr = float(t_from_p(DEFAULT_P_THR, df))
            how = f"as the t of an uncorrected p = {DEFAULT_P_THR:g} (no threshold, no peaks)"
        studies.at[idx, "t_thr"] = t_thr
        message = f"study {plain(name)!r}: t_thr missing, set to {t_thr:.4f} {how} at df = {df:g}"
        if studies.at[idx, "map"]:
            log.append(message.replace("(no threshold, no peaks)", "(a statistical map)"))
        else:
            note(log, message)


def finish_map_columns(studies: pd.DataFrame) -> pd.DataFrame:
    """``map`` and ``map_stat`` as strings (added empty when absent); ``map_stat`` ``t`` by default."""
    studies = studies.copy()
    for column in MAP_COLUMNS:
        if column not in studies:
            studies[column] = ""
        studies[column] = ["" if is_missing(cell) else str(cell).strip() for cell in studies[column]]
    studies["map_stat"] = [stat or ("t" if path else "")
                           for path, stat in zip(studies["map"], studies["map_stat"], strict=True)]
    return studies


def _where(peaks: pd.DataFrame) -> str:
    """The files (and lines) of a study's peaks, or of the listing it was read from."""
    return peak_lines(peaks) or "its peak listing"


def use_maps(
    studies: pd.DataFrame,
    peaks: pd.DataFrame,
    listed: Mapping[str, str],
    missing: str,
    log: list[str],
    table_path: str | Path | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every study's map; drop the peaks of studies that have one (docs/methods.md, section 3.8).

    Parameters
    ----------
    studies : DataFrame
        With ``map``, ``map_stat`` (see :func:`finish_map_columns`), ``n1``, ``n2`` and
        ``_line``; not changed (a copy is returned).
    peaks : DataFrame
        Raw peak rows (``study``, ``source``, ``line``).
    listed : mapping of str to str
        Studies whose peaks were listed by the input, even with zero peaks (a peak file, a
        ``coords`` object, a non-empty ``points`` list), to where; a study with peak rows
        counts as listed too.
    missing : {'error', 'fallback'}
        A map that is not on disk: an error naming the table's line (``error``; for tables
        a user wrote), or, for a study with listed peaks, its peaks are used and one warning
        lists every such map (``fallback``; JSON files that name images not shipped with
        them). A study with neither listed peaks nor an existing map is always an error.
    log : list of str
        Ingest log.
    table_path : str or Path, optional
        The file naming the maps, for messages.

    Returns
    -------
    studies, peaks : DataFrame
        Maps that are not on disk cleared (fallback), peaks of image studies dropped.
    """
    studies, keep = studies.copy(), np.ones(len(peaks), dtype=bool)
    lines = studies["_line"] if "_line" in studies else pd.Series([None] * len(studies),
                                                                   index=studies.index)
    fallbacks, dropped = [], []
    for idx in studies.index[studies["map"] != ""]:
        name, path = studies.at[idx, "study"], studies.at[idx, "map"]
        line = None if pd.isna(lines[idx]) else int(lines[idx])
        own = (peaks["study"] == name).to_numpy()
        has_peaks = name in listed or bool(own.any())
        if not Path(path).is_file():
            if not has_peaks:
                raise InputError(f"study {plain(name)!r} has no peaks and its statistical map "
                                 f"{path} is not on disk", table_path, line, "map")
            if missing != "fallback":
                raise InputError(f"statistical map {path} of study {plain(name)!r} not found",
                                 table_path, line, "map")
            fallbacks.append(f"study {plain(name)!r}: {path}")
            studies.at[idx, "map"], studies.at[idx, "map_stat"] = "", ""
            continue
        n2 = studies.at[idx, "n2"]
        inspect_statmap(path, float(studies.at[idx, "n1"]), None if pd.isna(n2) else float(n2),
                        studies.at[idx, "map_stat"], log)
        if has_peaks:
            where = _where(peaks[own]) if own.any() else listed[name]
            dropped.append(f"study {plain(name)!r}: map {path} used, peaks of {where} dropped")
            keep &= ~own
    if fallbacks:
        note(log, f"{len(fallbacks)} statistical map(s) named in {table_path} are not on disk; "
                  f"those studies use their peaks instead: {'; '.join(fallbacks)}")
    if dropped:
        note(log, f"{len(dropped)} stud{'y has' if len(dropped) == 1 else 'ies have'} both "
                  f"peaks and a statistical map; the map is used: {'; '.join(dropped)}")
    return studies, peaks[keep]


def assemble(
    studies: pd.DataFrame,
    raw_peaks: list[dict[str, Any]],
    source: str | Path,
    table_path: str | Path | None,
    log: list[str] | None = None,
    listed: Mapping[str, str] | None = None,
    missing_maps: str = "error",
) -> StudySet:
    """Validate, convert statistics and coordinates, fill thresholds; build the StudySet.

    Parameters
    ----------
    studies : DataFrame
        From :func:`parse_study_table` (or built alike), with ``_line``.
    raw_peaks : list of dict
        Records with the keys :data:`RAW_PEAK_KEYS`: ``value`` as reported (NaN when
        ``unknown`` is +/-1), ``stat_type`` in :data:`STAT_TYPES`, ``space`` a token,
        ``stat_field`` the name of the statistic's field in messages.
    source : str or Path
        What the set was read from.
    table_path : str or Path, optional
        The file holding the study rows, for messages.
    log : list of str, optional
        Ingest log to extend.
    listed : mapping of str to str, optional
        Studies whose peaks the input listed, possibly none (see :func:`use_maps`).
    missing_maps : {'error', 'fallback'}
        What a map that is not on disk means (see :func:`use_maps`).
    """
    log = [] if log is None else log
    studies = finish_map_columns(studies)
    peaks = pd.DataFrame(raw_peaks, columns=list(RAW_PEAK_KEYS))
    peaks = peaks.astype({"x_orig": np.float64, "y_orig": np.float64, "z_orig": np.float64,
                          "value": np.float64, "unknown": np.int64, "line": np.int64,
                          "study": str, "space": str, "source": str})
    validate(studies, peaks, str(source), None if table_path is None else str(table_path))
    studies, peaks = use_maps(studies, peaks, listed or {}, missing_maps, log, table_path)
    studies["_df"] = degrees_of_freedom(studies["n1"], studies["n2"])
    peaks = convert_coordinates(peaks)
    df = peaks["study"].map(dict(zip(studies["study"], studies["_df"], strict=True)))
    df = df.to_numpy(dtype=np.float64)
    value = peaks["value"].to_numpy(dtype=np.float64)
    kind = peaks["stat_type"].to_numpy()
    t = np.where(kind == "z", t_from_z(value, df), value)
    t = np.where(kind == "p", t_from_p(np.abs(value), df, np.sign(value)), t)
    t = np.where(peaks["unknown"].to_numpy() != 0, np.nan, t)
    bad = (peaks["unknown"].to_numpy() == 0) & ~np.isfinite(t)
    if bad.any():
        row = peaks.iloc[int(np.flatnonzero(bad)[0])]
        raise InputError(f"the {row['stat_type']} value {plain(row['value'])!r} converts to an "
                         "infinite t; report the peak as t or with the letter p / n",
                         row["source"], int(row["line"]), row["stat_field"])
    converted = int(np.isin(kind, ("z", "p")).sum())
    if converted:
        log.append(f"{converted} peaks converted from z or p to t at each study's df")
    peaks["t"] = t
    _fill_thresholds(studies, peaks, log)
    for name, group in peaks[peaks["unknown"] != 0].groupby("study", sort=False):
        t_thr = float(studies.loc[studies["study"] == name, "t_thr"].iloc[0])
        peaks.loc[group.index, "t"] = group["unknown"] * t_thr
        note(log, f"study {plain(name)!r}: {len(group)} peak(s) of unknown value set to +/- t_thr "
                  f"= {t_thr:.4f} ({peak_lines(group)})")
    studies = studies.drop(columns=["_df", "_line"], errors="ignore")
    order = [*STUDY_COLUMNS, *MAP_COLUMNS]
    studies = studies[[*order, *(c for c in studies.columns if c not in order)]]
    return StudySet(studies, peaks[list(PEAK_COLUMNS)].copy(), str(source), log)
