"""Exceptions and warnings raised by daskmeta.

Bad input files raise :class:`InputError`, which names the file, the line and the
field so the user can fix the input without guessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plain(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays made Python ones, for messages.

    ``f"got {plain(x)!r}"`` prints ``got -3.2`` where ``x`` is ``np.float64(-3.2)``, and
    ``[1, 2]`` for an array or a list of NumPy integers; strings keep their quotes.
    """
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # NumPy (or pandas) values
        if getattr(value, "ndim", 1) == 0:
            # str() of a float32 is its shortest repr: 0.1, not 0.10000000149011612
            return float(str(value)) if value.dtype.kind == "f" else value.item()
        return [plain(item) for item in value]
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(plain(item) for item in value)
    if isinstance(value, set | frozenset):
        return sorted((plain(item) for item in value), key=str)
    if isinstance(value, dict):
        return {plain(key): plain(item) for key, item in value.items()}
    return value


class DaskmetaError(Exception):
    """Base class of daskmeta's own exceptions."""


class InputError(DaskmetaError, ValueError):
    """A bad input file or table: names the file, line and field.

    Parameters
    ----------
    message : str
        What was wrong and what was expected.
    path : str or Path, optional
        The file that holds the bad value.
    line : int, optional
        1-based line number in ``path``.
    field : str, optional
        The column or field name.
    """

    def __init__(
        self,
        message: str,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class StoreError(DaskmetaError):
    """A Zarr store that is missing, incomplete or written by an incompatible version."""


class ConfigError(DaskmetaError, ValueError):
    """A bad analysis configuration: names the key."""


class DaskmetaWarning(UserWarning):
    """Warnings about input that was accepted with a documented fill-in."""
