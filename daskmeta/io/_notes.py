"""Ingest notes: a fill-in recorded in the study set's log and shown as a warning."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from daskmeta.errors import DaskmetaWarning

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


def note(log: list[str], message: str) -> None:
    """Record an ingest fill-in in the log and emit it as a :class:`DaskmetaWarning`.

    The warning points at the first caller outside daskmeta (the user's ``load_studies``).
    """
    log.append(message)
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DaskmetaWarning, stacklevel=level)
