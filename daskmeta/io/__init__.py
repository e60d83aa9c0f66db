"""Readers of study sets: SDM folders, native tables, NiMARE JSON and Sleuth text.

Any of them may give studies as whole-brain statistical maps (:mod:`daskmeta.io.statmap`);
:func:`write_studyset_json` exports a study set for NiMARE.

Every reader returns a :class:`~daskmeta.model.studyset.StudySet` with coordinates in SPM-MNI mm
and a signed t per peak (docs/methods.md, section 1); bad input raises
:class:`~daskmeta.errors.InputError` naming the file, line and field, and documented
fill-ins emit :class:`~daskmeta.errors.DaskmetaWarning`. Readers never write files.
"""

from __future__ import annotations

from pathlib import Path

from daskmeta.errors import InputError
from daskmeta.io.nimads import is_nimads, read_nimads, studyset_from_maps, write_studyset_json
from daskmeta.io.nimare import read_nimare_json
from daskmeta.io.sdm_folder import read_sdm_folder
from daskmeta.io.sleuth import is_sleuth, read_sleuth
from daskmeta.io.statmap import inspect_statmap, sample_statmap
from daskmeta.io.tables import read_tables
from daskmeta.model.studyset import StudySet

__all__ = [
    "inspect_statmap", "load_studies", "read_nimads", "read_nimare_json", "read_sdm_folder",
    "read_sleuth", "read_tables", "sample_statmap", "studyset_from_maps", "write_studyset_json",
]

_EXPECTED = (
    "expected a folder holding sdm_table.txt and peak files, a folder holding studies.tsv "
    "and peaks.tsv, a studies.tsv file with peaks.tsv beside it, a NiMARE Dataset or Studyset "
    ".json, or a Sleuth .txt file whose first line starts with '//'"
)


def load_studies(path: str | Path) -> StudySet:
    """Read a study set, choosing the reader from what ``path`` is.

    Parameters
    ----------
    path : str or Path
        One of:

        - a folder with ``sdm_table.txt`` (or that file itself): an SDM folder,
          :func:`read_sdm_folder`;
        - a folder with ``studies.tsv`` and ``peaks.tsv``, or a ``studies.tsv`` with
          ``peaks.tsv`` beside it: :func:`read_tables`;
        - a ``*.json`` file: a NiMARE Studyset (an object with a ``studies`` list),
          :func:`read_nimads`, else a NiMARE Dataset, :func:`read_nimare_json`;
        - a ``*.txt`` file whose first non-blank line starts with ``//``: Sleuth text,
          :func:`read_sleuth`.

    Returns
    -------
    StudySet

    Raises
    ------
    InputError
        If ``path`` is none of the above, or its content is malformed.

    Examples
    --------
    >>> studies = load_studies("my_meta_analysis/")  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        if (path / "sdm_table.txt").is_file():
            return read_sdm_folder(path)
        if (path / "studies.tsv").is_file() and (path / "peaks.tsv").is_file():
            return read_tables(path / "studies.tsv", path / "peaks.tsv")
        raise InputError(f"the folder holds neither sdm_table.txt nor studies.tsv + peaks.tsv; "
                         f"{_EXPECTED}", path)
    if not path.is_file():
        raise InputError(f"no such file or folder; {_EXPECTED}", path)
    name = path.name.lower()
    if name == "sdm_table.txt":
        return read_sdm_folder(path.parent)
    if name == "studies.tsv":
        return read_tables(path)
    if name.endswith(".json"):
        return read_nimads(path) if is_nimads(path) else read_nimare_json(path)
    if name.endswith(".txt") and is_sleuth(path):
        return read_sleuth(path)
    raise InputError(f"unrecognised input; {_EXPECTED}", path)
