"""Reader of NiMARE's dataset JSON (the legacy ``nimare.dataset.Dataset`` dict; docs/methods.md, section 1.2).

The file maps study ids to ``{"contrasts": {contrast_id: contrast}}``; each contrast
becomes one study named ``f"{study_id}-{contrast_id}"`` (NiMARE's own ``id``). Of a
contrast daskmeta reads:

``coords``
    ``space`` (``MNI``/``mni152_2mm``/``ale_2mm`` -> ``spm_mni``; ``TAL``/``Talairach``
    -> ``other_tal``; a daskmeta space token is taken as is) and the lists ``x``, ``y``,
    ``z``. Empty lists mean a null study. A statistic per peak may be given as a list
    ``t`` or ``t_stat`` (t values) or ``z_stat`` (z values; ``z`` is the coordinate).
    Peaks without a statistic are positive peaks of unknown value, like the letter ``p``
    of an SDM peak file: they get ``t_thr`` with a warning.
``metadata``
    ``sample_sizes``: one entry for a one-sample design, two for ``n1, n2`` (required).
    ``t_thr`` / ``p_thr`` if present; other scalar entries become covariates.

``images``
    ``t`` (a t-map) or else ``z`` (a z-map): the contrast's whole-brain statistical map
    (docs/methods.md, section 3.8), a path relative to the JSON's folder. Other image
    types (``beta``, ``varcope``, ...) are not used. A contrast with a map needs no
    ``coords``; with both, the map is used, its peaks are dropped and a warning says so. A
    map that is not on disk (NiMARE's own example data sets name images that are not
    shipped with them) makes the contrast fall back to its peaks, with one warning listing
    every missing map.

A contrast with neither ``coords`` nor an existing map is an error rather than a silent
null study. JSON has no fields on lines of their own, so the line given in messages is
that of the contrast's (or study's) key in the file, found by a text search.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from daskmeta.errors import InputError, plain
from daskmeta.io._common import (
    RESERVED,
    assemble,
    check_thresholds,
    convert_covariates,
    is_missing,
    parse_number,
    read_text,
    resolve_path,
)
from daskmeta.model.coordinates import SPACE_TOKENS
from daskmeta.model.studyset import STUDY_COLUMNS, StudySet

#: NiMARE ``coords.space`` values (lower-cased) and the daskmeta token they mean.
SPACES = {
    "mni": "spm_mni", "mni152_2mm": "spm_mni", "ale_2mm": "spm_mni",
    "tal": "other_tal", "talairach": "other_tal",
    **{token: token for token in SPACE_TOKENS},
}
#: Per-peak statistic lists in ``coords`` and their kind.
STAT_KEYS = {"t": "t", "t_stat": "t", "z_stat": "z"}
#: ``images`` keys read as the contrast's statistical map, in order of preference.
IMAGE_KEYS = ("t", "z")


def contrast_image(images: Any, folder: Path) -> tuple[str, str]:
    """``(absolute path, stat)`` of a contrast's ``images.t`` (else ``images.z``); ``("", "")``."""
    if not isinstance(images, dict):
        return "", ""
    for key in IMAGE_KEYS:
        if isinstance(images.get(key), str) and images[key].strip():
            return resolve_path(images[key], folder), key
    return "", ""


class _Locator:
    """Best-effort 1-based line of a nested key in the JSON text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def line(self, *keys: str) -> int:
        """Line of ``keys[-1]`` searched after ``keys[-2]`` ...; the deepest found, else 1."""
        position, found = 0, 0
        for key in keys:
            quoted = re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:"
            match = re.compile(quoted).search(self.text, position)
            if match is None:
                break
            position, found = match.end(), match.start()
        return self.text.count("\n", 0, found) + 1


def _sample_sizes(meta: dict[str, Any], name: str, path: Path, line: int) -> list[float]:
    sizes = meta.get("sample_sizes")
    if isinstance(sizes, int | float) and not isinstance(sizes, bool):
        sizes = [sizes]
    if not isinstance(sizes, list) or len(sizes) not in (1, 2):
        raise InputError(
            f"study {plain(name)!r}: metadata.sample_sizes must be a list of one (one-sample) or two "
            f"(n1, n2) sample sizes, got {plain(sizes)!r}", path, line, "sample_sizes")
    return [parse_number(n, path, line, "sample_sizes") for n in sizes]


def _contrast_peaks(name: str, coords: Any, path: Path, line: int) -> list[dict[str, Any]]:
    if not isinstance(coords, dict):
        raise InputError(f"study {plain(name)!r} has no coords and no images.t or images.z; give "
                         "empty x, y, z lists for a study that reported no peaks", path, line,
                         "coords")
    space_name = coords.get("space")
    token = SPACES.get(str(space_name).strip().lower())
    lists = {axis: coords.get(axis, []) for axis in ("x", "y", "z")}
    n_peaks = len(lists["x"]) if isinstance(lists["x"], list) else -1
    for axis, values in lists.items():
        if not isinstance(values, list) or len(values) != n_peaks:
            raise InputError(f"study {plain(name)!r}: coords.x, .y and .z must be lists of equal "
                             "length", path, line, axis)
    if n_peaks and token is None:
        raise InputError(f"study {plain(name)!r}: unknown coords.space {plain(space_name)!r}; expected "
                         f"one of {sorted(SPACES)}", path, line, "space")
    stat_key = next((key for key in STAT_KEYS if key in coords), None)
    stats = coords[stat_key] if stat_key else [None] * n_peaks
    if not isinstance(stats, list) or len(stats) != n_peaks:
        raise InputError(f"study {plain(name)!r}: coords.{stat_key} must be a list as long as x",
                         path, line, stat_key)
    records = []
    for i in range(n_peaks):
        xyz = [parse_number(lists[a][i], path, line, a) for a in ("x", "y", "z")]
        unknown = 1 if is_missing(stats[i]) else 0
        value = np.nan if unknown else parse_number(stats[i], path, line, stat_key)
        records.append({
            "study": name, "x_orig": xyz[0], "y_orig": xyz[1], "z_orig": xyz[2],
            "value": value, "stat_type": STAT_KEYS.get(stat_key or "t", "t"),
            "unknown": unknown, "space": token, "source": str(path), "line": line,
            "stat_field": stat_key or "t",
        })
    return records


def read_nimare_json(path: str | Path) -> StudySet:
    """Read a NiMARE dataset JSON into a :class:`~daskmeta.model.studyset.StudySet`.

    Parameters
    ----------
    path : str or Path
        The JSON file (format in the module docstring).

    Returns
    -------
    StudySet
        One study per contrast, named ``study_id-contrast_id``.

    Raises
    ------
    InputError
        For bad JSON or a contrast without sample sizes or coordinates, naming the file,
        the (best-effort) line and the field.
    """
    path = Path(path)
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path, exc.lineno, None) from exc
    if not isinstance(data, dict) or not data:
        raise InputError("expected a NiMARE dataset: an object of study ids, each with "
                         "'contrasts'", path, 1, "contrasts")
    where = _Locator(text)
    rows, raw, listed = [], [], {}
    for study_id, study in data.items():
        contrasts = study.get("contrasts") if isinstance(study, dict) else None
        if not isinstance(contrasts, dict):
            raise InputError(f"study {plain(study_id)!r} has no 'contrasts' object", path,
                             where.line(study_id), "contrasts")
        for contrast_id, contrast in contrasts.items():
            name = f"{study_id}-{contrast_id}"
            line = where.line(study_id, "contrasts", contrast_id)
            contrast = contrast if isinstance(contrast, dict) else {}
            meta = contrast.get("metadata")
            meta = meta if isinstance(meta, dict) else {}
            sizes_line = (where.line(study_id, "contrasts", contrast_id, "sample_sizes")
                          if "sample_sizes" in meta else line)
            sizes = _sample_sizes(meta, name, path, sizes_line)
            row: dict[str, Any] = {"study": name, "n1": sizes[0],
                                   "n2": sizes[1] if len(sizes) == 2 else np.nan}
            for key, value in meta.items():
                if key == "sample_sizes" or isinstance(value, list | dict):
                    continue
                row[key] = value
            row["map"], row["map_stat"] = contrast_image(contrast.get("images"), path.parent)
            row["_line"] = line
            rows.append(row)
            coords = contrast.get("coords")
            if coords is None and row["map"]:
                continue  # an image-only contrast
            raw.extend(_contrast_peaks(name, coords, path, line))
            listed[name] = f"{path}, line {line} (coords)"
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
    log = [f"read {len(studies)} contrasts from NiMARE dataset {path}"]
    return assemble(studies[order], raw, path, path, log, listed=listed, missing_maps="fallback")
