"""Reader of Sleuth / GingerALE text files (docs/methods.md, section 1.2).

The format, as BrainMap's Sleuth exports it::

    // Reference=MNI
    // Smith et al., 2010: patients > controls
    // Subjects=24
    -38   22   -8
    42    18   -6

    // Jones et al., 2012: patients > controls
    // Subjects=18
    ...

A ``// Reference=MNI|Talairach`` line sets the space of the experiments after it
(``MNI`` -> ``spm_mni``, ``Talairach``/``TAL`` -> ``other_tal``); it may appear again
before later experiments. Each experiment is one or more ``//`` name lines (joined with
a space into the study name, which must be unique), a ``// Subjects=N`` line and one
``x y z`` line per peak (tabs or spaces); blank lines separate experiments. An experiment
without coordinate lines is a null study.

Sleuth has no statistics: each study is a one-sample design (``n1 = N``, ``n2`` NaN) and
every peak a positive peak of unknown value, like the letter ``p`` of an SDM peak file.
With no threshold and no peak of known value, ``t_thr`` is the t of an uncorrected
p = 0.001 at ``N - 1`` degrees of freedom, and the peaks get that value, with warnings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from daskmeta.errors import InputError
from daskmeta.io._common import assemble, parse_number, read_text
from daskmeta.model.studyset import StudySet

#: Sleuth ``Reference`` values (lower-cased) and the daskmeta token they mean.
SPACES = {"mni": "spm_mni", "talairach": "other_tal", "tal": "other_tal"}
_REFERENCE = re.compile(r"reference\s*=\s*(.*)", re.IGNORECASE)
_SUBJECTS = re.compile(r"subjects\s*=\s*(.*)", re.IGNORECASE)


def is_sleuth(path: str | Path) -> bool:
    """Whether the first non-blank line of a text file starts with ``//``."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for text in handle:
            if text.strip():
                return text.lstrip().startswith("//")
    return False


def read_sleuth(path: str | Path) -> StudySet:
    """Read a Sleuth text file into a :class:`~daskmeta.model.studyset.StudySet`.

    Parameters
    ----------
    path : str or Path
        The Sleuth file (format in the module docstring).

    Returns
    -------
    StudySet
        One one-sample study per experiment; all peaks positive, of unknown value.

    Raises
    ------
    InputError
        For a missing or unknown ``Reference``, a missing or bad ``Subjects`` line, or a
        malformed coordinate line, naming the file, line and field.
    """
    path = Path(path)
    space: str | None = None
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    names: list[str] = []  # name lines of the experiment being read
    first = 0  # line of its first name line
    current: dict[str, Any] | None = None  # the experiment whose coordinates come next

    for number, text in enumerate(read_text(path).splitlines(), 1):
        text = text.strip()
        if not text:
            current = None
            if names:
                raise InputError("experiment has no '// Subjects=N' line before the blank "
                                 "line", path, number, "Subjects")
            continue
        if text.startswith("//"):
            content = text[2:].strip()
            current = None
            if match := _REFERENCE.fullmatch(content):
                space = SPACES.get(match.group(1).strip().lower())
                if space is None:
                    raise InputError(f"unknown Reference {match.group(1)!r}; expected MNI or "
                                     "Talairach", path, number, "Reference")
            elif match := _SUBJECTS.fullmatch(content):
                if not names:
                    raise InputError("'// Subjects=' line without a '// name' line before it",
                                     path, number, "Subjects")
                if space is None:
                    raise InputError("no '// Reference=MNI' or '// Reference=Talairach' line "
                                     "before the first experiment", path, first, "Reference")
                n = parse_number(match.group(1), path, number, "Subjects",
                                 expected="a number of subjects")
                current = {"study": " ".join(names), "n1": n, "n2": np.nan, "t_thr": np.nan,
                           "_line": first, "space": space}
                rows.append(current)
                names = []
            else:
                first = first if names else number
                names.append(content)
            continue
        if current is None:
            raise InputError("coordinate line outside an experiment; expected '// name' and "
                             "'// Subjects=N' lines before it", path, number, "Subjects")
        fields = text.split()
        if len(fields) != 3:
            field = ("x", "y", "z")[min(len(fields), 2)] if len(fields) < 3 else "z"
            raise InputError(f"expected 3 fields 'x y z' separated by tabs or spaces; got "
                             f"{len(fields)} in {text!r}", path, number, field)
        x, y, z = (parse_number(v, path, number, a) for v, a in zip(fields, "xyz", strict=True))
        raw.append({
            "study": current["study"], "x_orig": x, "y_orig": y, "z_orig": z,
            "value": np.nan, "stat_type": "t", "unknown": 1, "space": current["space"],
            "source": str(path), "line": number, "stat_field": "t",
        })
    if names:
        raise InputError("experiment has no '// Subjects=N' line", path, first, "Subjects")
    if not rows:
        raise InputError("no experiment found; expected '// Reference=...', '// name', "
                         "'// Subjects=N' and 'x y z' lines", path, 1, "Subjects")
    studies = pd.DataFrame(rows).drop(columns="space")
    log = [f"read {len(studies)} experiments from Sleuth file {path}"]
    return assemble(studies, raw, path, path, log)
