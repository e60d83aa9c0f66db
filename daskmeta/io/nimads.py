"""NiMARE Studyset (NIMADS) JSON: reader, writer, and the study set of a store (docs/methods.md, section 1.2).

A Studyset is ``{"id", "name", "studies": [...]}``; each study holds ``analyses``, and each
analysis becomes one daskmeta study named ``f"{study_id}-{analysis_id}"`` (NiMARE's own key
of an analysis; a missing id is ``study-N`` / ``analysis-N`` by position, as NiMARE does).
Of an analysis daskmeta reads:

``points``
    ``coordinates`` ``[x, y, z]`` in the point's ``space``: a daskmeta space token as is,
    else any name containing ``tal`` -> ``other_tal``, containing ``mni`` or ``ale`` ->
    ``spm_mni`` (NiMARE's rule); no space is read as MNI with one warning. ``values`` is a
    list of ``{"kind", "value"}``: kind ``T`` (``t``, ``t_stat``) gives the peak's t, kind
    ``Z`` (``z``, ``z_stat``) its z; a point without either is a positive peak of unknown
    value, like the letter ``p`` of an SDM peak file. An analysis without points and
    without a statistical map is a null study.
``metadata``
    ``sample_sizes`` (one entry: one-sample design; two: ``n1, n2``) or ``sample_size``,
    looked up in the analysis' metadata, then in its study's (NiMARE's order; required).
    ``t_thr`` / ``p_thr`` if present; other scalar entries of the study's and the
    analysis' metadata (the analysis' win) become covariates.
``images``
    The first image whose ``value_type`` is a t statistic (``t``, ``T``, ``T map``), else the
    first z statistic (``z``, ``Z map``), is the study's whole-brain map (docs/methods.md,
    section 3.8); its location is ``url`` if that names a NIfTI file, else ``filename``,
    relative to the JSON's folder. A map not on disk (NiMARE's shipped pain studyset names
    images it does not ship) makes the study fall back to its points, with one warning
    listing every missing map; an analysis with no points and a missing map is an error.

:func:`write_studyset_json` writes a StudySet in this format (peaks in MNI with their t,
sample sizes, thresholds and covariates in the analysis' metadata, maps as images), and
:func:`read_nimads` reads it back to the same study table and peaks. Each analysis' metadata
also records the daskmeta study name as ``daskmeta_study``, which the reader prefers to the
``study_id-analysis_id`` key, so that every name survives the round trip.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from daskmeta.errors import InputError, StoreError, plain
from daskmeta.io._common import (
    RESERVED,
    assemble,
    check_thresholds,
    convert_covariates,
    is_missing,
    note,
    parse_number,
    read_text,
    resolve_path,
)
from daskmeta.model.coordinates import SPACE_TOKENS
from daskmeta.model.studyset import MAP_COLUMNS, PEAK_COLUMNS, STUDY_COLUMNS, StudySet

#: Point-value kinds (lower-cased, spaces and hyphens as ``_``) and the statistic they give.
VALUE_KINDS = {"t": "t", "t_stat": "t", "tstat": "t", "z": "z", "z_stat": "z", "zstat": "z"}
#: Image ``value_type`` names (lower-cased, a trailing `` map`` dropped) and the statistic.
IMAGE_KINDS = {"t": "t", "t_stat": "t", "z": "z", "z_stat": "z"}
#: Analysis-metadata key that records the daskmeta study name.
NAME_KEY = "daskmeta_study"
_SIZE_KEYS = ("sample_sizes", "sample_size")
#: Metadata keys that never become study columns.
_NOT_COVARIATES = frozenset({*_SIZE_KEYS, NAME_KEY, *MAP_COLUMNS, "study", "n1", "n2"})
#: Coordinates along ``study`` of a store's studies group that are not study-table columns.
DERIVED_COORDS = ("is_image",)
_IMAGE_SUFFIXES = (".nii", ".nii.gz")


def is_nimads(path: str | Path) -> bool:
    """Whether a JSON file is a NIMADS Studyset: an object whose ``studies`` is a list."""
    try:
        data = json.loads(read_text(path))
    except (InputError, json.JSONDecodeError, OSError):
        return False
    return isinstance(data, dict) and isinstance(data.get("studies"), list)


class _Lines:
    """Best-effort 1-based line of an ``"id": value`` pair in the JSON text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def find(self, value: Any, start: int = 0) -> tuple[int, int]:
        """``(line, offset)`` of ``"id": value`` at or after ``start``; ``(1, start)`` if absent."""
        pattern = r'"id"\s*:\s*' + re.escape(json.dumps(value, ensure_ascii=False))
        match = re.compile(pattern).search(self.text, start)
        if match is None:
            match = re.compile(r'"id"\s*:\s*' + re.escape(json.dumps(value))).search(self.text, start)
        if match is None:
            return 1, start
        return self.text.count("\n", 0, match.start()) + 1, match.end()


def _space(value: Any) -> str | None:
    """The daskmeta token of a NIMADS space name; None for no space; ``"?"`` if unknown."""
    if is_missing(value):
        return None
    name = str(value).strip().lower()
    if name in SPACE_TOKENS:
        return name
    if "tal" in name:
        return "other_tal"
    if "mni" in name or "ale" in name:
        return "spm_mni"
    return "?"


def _sample_sizes(metas: list[dict[str, Any]], name: str, path: Path, line: int) -> list[float]:
    for meta in metas:
        for key in _SIZE_KEYS:
            sizes = meta.get(key)
            if sizes is None or sizes == []:
                continue
            if isinstance(sizes, int | float | str) and not isinstance(sizes, bool):
                sizes = [sizes]
            if not isinstance(sizes, list) or len(sizes) not in (1, 2):
                raise InputError(f"study {plain(name)!r}: metadata.{key} must be one (one-sample) or "
                                 f"two (n1, n2) sample sizes, got {plain(sizes)!r}", path, line, key)
            return [parse_number(n, path, line, key) for n in sizes]
    raise InputError(f"study {plain(name)!r} has no sample sizes; give metadata.sample_sizes "
                     "([n] or [n1, n2]) in the analysis or its study", path, line, "sample_sizes")


def _image(images: Any, folder: Path) -> tuple[str, str]:
    """``(absolute path or URL, stat)`` of an analysis' t (else z) image; ``("", "")``."""
    found: dict[str, str] = {}
    for image in images if isinstance(images, list) else []:
        if not isinstance(image, dict) or not isinstance(image.get("value_type"), str):
            continue
        kind = image["value_type"].strip().lower().removesuffix(" map").replace(" ", "_")
        stat = IMAGE_KINDS.get(kind.replace("-", "_"))
        if stat is None or stat in found:
            continue
        candidates = [c for c in (image.get("url"), image.get("filename"))
                      if isinstance(c, str) and c.strip()]
        looks = [c for c in candidates if c.split("?")[0].lower().endswith(_IMAGE_SUFFIXES)]
        if looks or candidates:
            found[stat] = resolve_path((looks or candidates)[0], folder)
    for stat in ("t", "z"):
        if stat in found:
            return found[stat], stat
    return "", ""


def _points(points: Any, name: str, path: Path, line: int,
            spaceless: list[str]) -> list[dict[str, Any]]:
    if points is None:
        return []
    if not isinstance(points, list):
        raise InputError(f"study {plain(name)!r}: points must be a list", path, line, "points")
    records = []
    for number, point in enumerate(points):
        field = f"points[{number}]"
        coords = point.get("coordinates") if isinstance(point, dict) else None
        if not isinstance(coords, list) or len(coords) != 3:
            raise InputError(f"study {plain(name)!r}: {field}.coordinates must be [x, y, z], got "
                             f"{plain(coords)!r}", path, line, f"{field}.coordinates")
        xyz = [parse_number(v, path, line, f"{field}.coordinates") for v in coords]
        token = _space(point.get("space"))
        if token == "?":
            raise InputError(f"study {plain(name)!r}: unknown space {plain(point.get('space'))!r}; "
                             "expected MNI or TAL (or a daskmeta space token)", path, line,
                             f"{field}.space")
        if token is None:
            token = "spm_mni"
            if name not in spaceless:
                spaceless.append(name)
        stats: dict[str, float] = {}
        for value in point.get("values") or []:
            if not isinstance(value, dict) or is_missing(value.get("value")):
                continue
            kind = str(value.get("kind", "")).strip().lower().replace(" ", "_").replace("-", "_")
            if kind in VALUE_KINDS and VALUE_KINDS[kind] not in stats:
                stats[VALUE_KINDS[kind]] = parse_number(value["value"], path, line,
                                                        f"{field}.values")
        stat_type = "t" if "t" in stats else "z" if "z" in stats else "t"
        value = stats.get(stat_type, np.nan)
        records.append({
            "study": name, "x_orig": xyz[0], "y_orig": xyz[1], "z_orig": xyz[2], "value": value,
            "stat_type": stat_type, "unknown": 0 if stats else 1, "space": token,
            "source": str(path), "line": line, "stat_field": f"{field}.values",
        })
    return records


def read_nimads(path: str | Path) -> StudySet:
    """Read a NiMARE Studyset (NIMADS) JSON into a :class:`~daskmeta.model.studyset.StudySet`.

    Parameters
    ----------
    path : str or Path
        The JSON file (format in the module docstring).

    Returns
    -------
    StudySet
        One study per analysis, named ``study_id-analysis_id`` (or its ``daskmeta_study``).

    Raises
    ------
    InputError
        For bad JSON, an analysis without sample sizes, a malformed point, or an analysis
        with no points whose map is not on disk, naming the file, the (best-effort) line of
        the analysis' id and the field.
    """
    path = Path(path)
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path, exc.lineno, None) from exc
    if not isinstance(data, dict) or not isinstance(data.get("studies"), list):
        raise InputError("expected a NiMARE Studyset: an object with a 'studies' list", path, 1,
                         "studies")
    lines = _Lines(text)
    rows, raw, listed, spaceless = [], [], {}, []
    a_row = 0
    for s_row, study in enumerate(data["studies"]):
        if not isinstance(study, dict):
            raise InputError(f"studies[{s_row}] is not an object", path, 1, "studies")
        sid = str(study["id"]) if study.get("id") is not None else f"study-{s_row}"
        s_line, offset = lines.find(study.get("id")) if study.get("id") is not None else (1, 0)
        s_meta = study.get("metadata") if isinstance(study.get("metadata"), dict) else {}
        analyses = study.get("analyses") or []
        if not isinstance(analyses, list):
            raise InputError(f"study {plain(sid)!r}: analyses must be a list", path, s_line,
                             "analyses")
        for analysis in analyses:
            if not isinstance(analysis, dict):
                raise InputError(f"study {plain(sid)!r}: an analysis is not an object", path, s_line,
                                 "analyses")
            aid = str(analysis["id"]) if analysis.get("id") is not None else f"analysis-{a_row}"
            a_row += 1
            line = lines.find(analysis["id"], offset)[0] if analysis.get("id") is not None else s_line
            meta = analysis.get("metadata") if isinstance(analysis.get("metadata"), dict) else {}
            given = meta.get(NAME_KEY)
            name = given.strip() if isinstance(given, str) and given.strip() else f"{sid}-{aid}"
            sizes = _sample_sizes([meta, s_meta], name, path, line)
            row: dict[str, Any] = {"study": name, "n1": sizes[0],
                                   "n2": sizes[1] if len(sizes) == 2 else np.nan}
            for key, value in {**s_meta, **meta}.items():
                if key in _NOT_COVARIATES or isinstance(value, list | dict):
                    continue
                row[key] = value
            row["map"], row["map_stat"] = _image(analysis.get("images"), path.parent)
            row["_line"] = line
            rows.append(row)
            records = _points(analysis.get("points"), name, path, line, spaceless)
            raw.extend(records)
            if records:
                listed[name] = f"{path}, line {line} (points)"
    if not rows:
        raise InputError("the Studyset holds no analyses", path, 1, "studies")
    log = [f"read {len(rows)} analyses from NiMARE Studyset {path}"]
    if spaceless:
        note(log, f"{path}: points without a space read as MNI, in {len(spaceless)} stud"
                  f"{'y' if len(spaceless) == 1 else 'ies'}: {', '.join(map(repr, spaceless))}")
    studies = pd.DataFrame(rows)
    for column in ("t_thr", "p_thr"):
        if column in studies:
            studies[column] = [np.nan if is_missing(v) else parse_number(v, path, line, column)
                               for v, line in zip(studies[column], studies["_line"], strict=True)]
    if "t_thr" not in studies:
        studies["t_thr"] = np.nan
    check_thresholds(studies, path)
    covariates = [c for c in studies.columns if c not in RESERVED and c != "_line"]
    for column in covariates:
        studies[column] = studies[column].astype(object)
    convert_covariates(studies, covariates, path)
    order = [*STUDY_COLUMNS, *(c for c in studies.columns if c not in STUDY_COLUMNS)]
    return assemble(studies[order], raw, path, path, log, listed=listed, missing_maps="fallback")


def _json_value(value: Any) -> Any:
    """A table cell as JSON: NumPy scalars as Python, NaN and missing as null."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _unique(base: str, taken: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``, ... the first not in ``taken`` (which it joins)."""
    value, count = base, 1
    while value in taken:
        count += 1
        value = f"{base}_{count}"
    taken.add(value)
    return value


def _keys(names: list[str]) -> list[tuple[str, str]]:
    """NIMADS ``(study id, analysis id)`` of each name, in order.

    A name is split at its last ``-`` (else it is ``(name, "1")``), so that NiMARE's key
    ``study_id-analysis_id`` is the daskmeta name wherever it can be. Consecutive names of
    one study id share a NIMADS study; a study id that comes back later gets ``_2``, ... so
    that the file keeps the table's order; an analysis id already taken in its study too.
    """
    study_ids: set[str] = set()
    keys: list[tuple[str, str]] = []
    analysis_ids: set[str] = set()
    previous = None
    for name in names:
        sid, dash, aid = name.rpartition("-")
        sid, aid = (sid, aid) if dash and sid and aid else (name, "1")
        if sid != previous:
            previous, analysis_ids = sid, set()
            final = _unique(sid, study_ids)
        keys.append((final, _unique(aid, analysis_ids)))
    return keys


def write_studyset_json(studies: StudySet, path: str | Path, name: str = "") -> Path:
    """Write a StudySet as a NiMARE Studyset (NIMADS) JSON that NiMARE and :func:`read_nimads` read.

    Each study becomes an analysis (grouped into NIMADS studies by the part of its name
    before the last ``-``) with: its peaks as points in MNI with their t (kind ``T``); its
    sample sizes (``metadata.sample_sizes``), ``t_thr``, other study columns (covariates;
    missing values as null) and its name (``metadata.daskmeta_study``); its statistical
    map, if any, as an image of ``value_type`` ``t`` or ``z`` whose ``url`` is the map's
    absolute path.

    Parameters
    ----------
    studies : StudySet
        What to write.
    path : str or Path
        The JSON file to write (its folder must exist).
    name : str, optional
        The Studyset's name; default the StudySet's source.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    table = studies.studies
    extra = [c for c in table.columns if c not in ("study", "n1", "n2", *MAP_COLUMNS)
             and not str(c).startswith("_")]
    documents: dict[str, dict[str, Any]] = {}
    for row, (sid, aid) in zip(table.to_dict("records"), _keys(studies.names), strict=True):
        sizes = [row["n1"]] if pd.isna(row["n2"]) else [row["n1"], row["n2"]]
        metadata = {"sample_sizes": [int(n) if float(n).is_integer() else float(n) for n in sizes]}
        metadata.update({column: _json_value(row[column]) for column in extra})
        metadata[NAME_KEY] = row["study"]
        peaks = studies.peaks_of(row["study"])
        points = [
            {"coordinates": [float(x), float(y), float(z)], "space": "MNI", "kind": None,
             "values": [{"kind": "T", "value": float(t)}]}
            for x, y, z, t in peaks[["x", "y", "z", "t"]].itertuples(index=False)
        ]
        images = []
        if row.get("map"):
            images.append({"url": str(row["map"]), "filename": os.path.basename(str(row["map"])),
                           "space": "MNI", "value_type": row["map_stat"] or "t", "metadata": {}})
        study = documents.setdefault(sid, {
            "id": sid, "name": sid, "authors": "", "publication": "", "metadata": {},
            "analyses": [],
        })
        study["analyses"].append({
            "id": aid, "name": aid,
            "conditions": [{"name": "default", "description": ""}], "weights": [1.0],
            "images": images, "points": points, "metadata": metadata,
        })
    document = {"id": f"daskmeta-{path.stem}", "name": name or studies.source,
                "studies": list(documents.values())}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def studyset_from_maps(maps: Any) -> StudySet:
    """The StudySet a store's ``studies`` group was recreated from.

    Parameters
    ----------
    maps : xarray.Dataset
        The ``studies`` group (:func:`daskmeta.io.store.read_group`): study-table columns
        as coordinates along ``study`` (``n1, n2, t_thr, map, map_stat`` and covariates),
        the peaks in ``attrs["peaks"]`` as ``[study, x, y, z, t]`` records (SPM-MNI mm).

    Returns
    -------
    StudySet
        Text columns' empty strings (how the store keeps a missing text) are None again,
        except in ``map`` and ``map_stat``.

    Raises
    ------
    StoreError
        If the group records no peaks (a store written before peaks were kept).
    """
    if "peaks" not in maps.attrs:
        raise StoreError("the studies group records no peaks (attrs['peaks']); it was written by "
                         "an older daskmeta: run `daskmeta preprocess` again")
    columns: dict[str, Any] = {"study": [str(s) for s in maps["study"].values]}
    for name, coord in maps.coords.items():
        if name == "study" or name in DERIVED_COORDS or coord.dims != ("study",):
            continue
        values = coord.values
        if values.dtype.kind in "OUS":
            values = [str(v) if name in MAP_COLUMNS else (None if str(v) == "" else str(v))
                      for v in values]
        columns[str(name)] = values
    table = pd.DataFrame(columns)
    # a store's coordinates come back in no fixed order: the table's own order is in attrs
    order = [c for c in maps.attrs.get("study_columns", []) if c in table.columns]
    table = table[order + [c for c in table.columns if c not in order]]
    records = [list(record) for record in maps.attrs["peaks"]]
    peaks = pd.DataFrame(records, columns=["study", "x", "y", "z", "t"])
    peaks = peaks.astype({"study": str, "x": np.float64, "y": np.float64, "z": np.float64,
                          "t": np.float64})
    peaks["x_orig"], peaks["y_orig"], peaks["z_orig"] = peaks["x"], peaks["y"], peaks["z"]
    peaks["space"], peaks["source"] = "spm_mni", "store attrs['peaks']"
    peaks["line"] = np.arange(1, len(peaks) + 1, dtype=np.int64)
    return StudySet(table, peaks[list(PEAK_COLUMNS)], "store")
