"""The StudySet: one row per study and one row per peak, in SPM-MNI millimetres.

Readers in :mod:`daskmeta.io` build it; every analysis takes it. Validation that is
common to all readers (unique names, positive sample sizes, numeric covariates, peaks
that belong to a study) lives here so each reader reports errors the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath

import numpy as np
import pandas as pd

from daskmeta.errors import InputError, plain

#: Columns of :attr:`StudySet.studies` that every reader fills.
STUDY_COLUMNS = ("study", "n1", "n2", "t_thr")
#: Columns of :attr:`StudySet.studies` naming a study's statistical map: ``map`` (absolute
#: path, ``""`` for a peak study) and ``map_stat`` (``"t"`` or ``"z"``, ``""`` for a peak study).
MAP_COLUMNS = ("map", "map_stat")
#: Kinds of statistic a study's map may hold.
MAP_STATS = ("t", "z")
#: Columns of :attr:`StudySet.peaks` that every reader fills.
PEAK_COLUMNS = ("study", "x", "y", "z", "t", "x_orig", "y_orig", "z_orig", "space", "source", "line")


@dataclass
class StudySet:
    """Studies and their peaks.

    Attributes
    ----------
    studies : pandas.DataFrame
        One row per study: ``study`` (unique name), ``n1``, ``n2`` (NaN for a one-sample
        design), ``t_thr`` (the study's threshold as a positive t), then covariates and
        grouping columns as read. ``map`` and ``map_stat`` (:data:`MAP_COLUMNS`) name a
        study's whole-brain statistical map and its statistic (``t`` or ``z``); both are
        empty strings for a peak study and are added so when absent (docs/methods.md,
        section 3.8).
    peaks : pandas.DataFrame
        One row per peak: ``study, x, y, z`` (SPM-MNI mm), ``t`` (signed),
        ``x_orig, y_orig, z_orig`` and ``space`` as reported, ``source`` file and ``line``.
        A study without rows here is a null study, unless it has a ``map`` (an image study
        has no peaks).
    source : str
        Where the set was read from.
    """

    studies: pd.DataFrame
    peaks: pd.DataFrame
    source: str = ""
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.studies = self.studies.reset_index(drop=True)
        self.peaks = self.peaks.reset_index(drop=True)
        for column in MAP_COLUMNS:
            if column not in self.studies:
                self.studies[column] = ""

    @property
    def image_studies(self) -> list[str]:
        """Names of the studies given as statistical maps, in table order."""
        return self.studies.loc[self.studies["map"].fillna("").astype(str) != "", "study"].tolist()

    def __len__(self) -> int:
        return len(self.studies)

    @property
    def names(self) -> list[str]:
        """Study names in table order."""
        return self.studies["study"].tolist()

    def peaks_of(self, study: str) -> pd.DataFrame:
        """The peaks of one study (empty for a null study)."""
        return self.peaks[self.peaks["study"] == study]

    def select(self, where: str | None = None, studies: list[str] | None = None) -> StudySet:
        """A subset of studies, by a pandas query on study columns or by names.

        Parameters
        ----------
        where : str, optional
            A :meth:`pandas.DataFrame.query` expression, e.g. ``"modality == 'ReHo'"``.
        studies : list of str, optional
            Study names to keep, in that order.
        """
        table = query_studies(self.studies, where)
        if studies is not None:
            missing = sorted(set(studies) - set(table["study"]))
            if missing:
                raise ValueError(f"unknown studies {missing}; known: {self.names}")
            table = table.set_index("study").loc[list(studies)].reset_index()
        keep = set(table["study"])
        return StudySet(
            table, self.peaks[self.peaks["study"].isin(keep)], self.source, list(self.log)
        )

    def __repr__(self) -> str:
        images = self.studies["map"].fillna("").astype(str) != ""
        n_null = int((~self.studies["study"].isin(self.peaks["study"]) & ~images).sum())
        maps = f", {int(images.sum())} statistical maps" if images.any() else ""
        return (
            f"<StudySet {len(self)} studies ({n_null} null), {len(self.peaks)} peaks{maps}"
            f"{' from ' + self.source if self.source else ''}>"
        )

    def _repr_html_(self) -> str:
        counts = self.peaks.groupby("study").size()
        table = self.studies.assign(peaks=self.studies["study"].map(counts).fillna(0).astype(int))
        return f"<p>{repr(self)[1:-1]}</p>" + table.to_html(index=False, max_rows=60)


def query_studies(table: pd.DataFrame, where: str | None, context: str = "") -> pd.DataFrame:
    """Rows of a study table that satisfy a pandas query, with an error that names the columns.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per study.
    where : str or None
        A :meth:`pandas.DataFrame.query` expression, e.g. ``"modality == 'ReHo'"``; None or
        empty keeps every row.
    context : str
        Prefix of the error message, e.g. ``"analysis 'reho': "``.
    """
    if not where:
        return table
    try:
        return table.query(where, engine="python")
    except Exception as exc:  # pandas raises many types for a bad expression
        raise ValueError(
            f"{context}where filter {where!r} could not be evaluated on the study columns "
            f"({', '.join(map(str, table.columns))}): {exc}"
        ) from exc


def peak_lines(peaks: pd.DataFrame, most: int = 20) -> str:
    """Where peaks were read, each file once: ``"a.txt: lines 3, 7, 12; b.txt: line 4"``.

    Parameters
    ----------
    peaks : pandas.DataFrame
        Peak rows with ``source`` and ``line`` columns (other columns are ignored).
    most : int
        Lines listed per file; more are counted (``"... and 8 more"``).

    Returns
    -------
    str
        Files in order of first appearance, their lines sorted and unique; ``""`` without
        ``source``.
    """
    if "source" not in peaks or not len(peaks):
        return ""
    lines = peaks["line"] if "line" in peaks else pd.Series([None] * len(peaks), index=peaks.index)
    parts = []
    for source, group in lines.groupby(peaks["source"].astype(str), sort=False):
        numbers = sorted({int(n) for n in group.dropna()})
        if not numbers:
            parts.append(source)
            continue
        shown = ", ".join(map(str, numbers[:most]))
        more = f" and {len(numbers) - most} more" if len(numbers) > most else ""
        parts.append(f"{source}: line{'s' if len(numbers) > 1 else ''} {shown}{more}")
    return "; ".join(parts)


def validate(studies: pd.DataFrame, peaks: pd.DataFrame, source: str,
             table_path: str | None = None) -> None:
    """Checks shared by all readers; raise :class:`InputError` naming file, line and field.

    ``studies`` must carry a ``_line`` column (1-based line in ``table_path``) when read
    from a file; it is used in messages only.
    """
    lines = studies["_line"] if "_line" in studies else pd.Series(
        [None] * len(studies), index=studies.index
    )
    seen: dict[str, int | None] = {}
    for idx, name in studies["study"].items():
        line = lines[idx]
        if not isinstance(name, str) or not name.strip():
            raise InputError("empty study name", table_path, line, "study")
        if name in seen:
            raise InputError(
                f"duplicate study name {plain(name)!r} (first on line {seen[name]}); names must be unique",
                table_path, line, "study",
            )
        seen[name] = line
    for column in ("n1", "n2"):
        for idx, value in studies[column].items():
            if column == "n2" and pd.isna(value):
                continue
            if pd.isna(value) or not np.isfinite(value) or value <= 0:
                raise InputError(
                    f"sample size must be a positive number, got {plain(value)!r}",
                    table_path, lines[idx], column,
                )
            if column == "n1" and pd.isna(studies.at[idx, "n2"]) and value < 3:
                raise InputError("a one-sample study needs n1 >= 3", table_path, lines[idx], column)
        if (studies[column].dropna() % 1 != 0).any():
            idx = studies[column].dropna()[studies[column].dropna() % 1 != 0].index[0]
            raise InputError("sample size must be a whole number", table_path, lines[idx], column)
    _validate_maps(studies, lines, table_path)
    unknown = sorted(set(peaks["study"]) - set(studies["study"]))
    if unknown:
        row = peaks[peaks["study"] == unknown[0]].iloc[0]
        raise InputError(
            f"peaks of study {plain(unknown[0])!r} have no row in the study table",
            row.get("source", source), row.get("line"), "study",
        )


def _validate_maps(studies: pd.DataFrame, lines: pd.Series, table_path: str | None) -> None:
    """``map`` an absolute path or ``""``; ``map_stat`` ``t``/``z`` with a map, ``""`` without."""
    if "map" not in studies and "map_stat" not in studies:
        return
    maps = studies["map"] if "map" in studies else pd.Series("", index=studies.index)
    stats = studies["map_stat"] if "map_stat" in studies else pd.Series("", index=studies.index)
    for idx in studies.index:
        path, stat = maps[idx], stats[idx]
        path = "" if path is None or (isinstance(path, float) and np.isnan(path)) else path
        stat = "" if stat is None or (isinstance(stat, float) and np.isnan(stat)) else stat
        if not isinstance(path, str):
            raise InputError(f"map must be a path, got {plain(path)!r}", table_path, lines[idx], "map")
        if path and not PurePath(path).is_absolute() and "://" not in path:
            raise InputError(f"map path {path!r} is not absolute; readers resolve it against the "
                             "folder of the file that names it", table_path, lines[idx], "map")
        if path and stat not in MAP_STATS:
            raise InputError(f"map_stat must be one of {MAP_STATS}; {plain(stat)!r} was provided",
                             table_path, lines[idx], "map_stat")
        if not path and stat:
            raise InputError(f"map_stat {plain(stat)!r} given but the study has no map",
                             table_path, lines[idx], "map_stat")
