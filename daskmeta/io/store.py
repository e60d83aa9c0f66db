"""The Zarr store: study maps, analyses and sweeps, each group marked complete last.

Layout: ``studies/``, ``analyses/<name>/``, ``sweeps/<name>/``. Every group
records what produced it in attrs. A group is written with ``daskmeta_complete = False``
and flipped to ``True`` only after its last chunk is written, so an interrupted run never
leaves a group that looks whole; :func:`read_group` refuses incomplete groups and groups
written by an incompatible store format.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from daskmeta import __version__
from daskmeta.errors import StoreError
from daskmeta.io.nifti import with_mask

#: Version of the store layout; bump when a reader can no longer read older groups.
STORE_FORMAT = 1
COMPLETE = "daskmeta_complete"
FORMAT = "daskmeta_store_format"


def store_path(store: str | os.PathLike) -> str:
    """The store as a string path or fsspec URL."""
    return os.fspath(store)


def _root(store: str, mode: str = "a") -> zarr.Group | None:
    try:
        return zarr.open_group(store, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None


def group_attrs(store: str | os.PathLike, group: str) -> dict[str, Any] | None:
    """Attributes of a group, or None when it does not exist."""
    root = _root(store_path(store), mode="r") if _exists(store) else None
    if root is None:
        return None
    try:
        node = root[group]
    except KeyError:
        return None
    return dict(node.attrs)


def _exists(store: str | os.PathLike) -> bool:
    path = store_path(store)
    if "://" in path:
        return True
    return Path(path).exists()


def is_complete(store: str | os.PathLike, group: str) -> bool:
    """Whether ``group`` exists, was fully written and has a compatible format."""
    attrs = group_attrs(store, group)
    return bool(attrs) and attrs.get(COMPLETE) is True and attrs.get(FORMAT) == STORE_FORMAT


def _for_zarr(ds: xr.Dataset) -> xr.Dataset:
    """Strings as object dtype (Zarr v3 variable-length strings), attrs JSON-friendly."""
    out = ds.copy()
    for name, var in list(out.variables.items()):
        if var.dtype.kind == "U":
            out[name] = var.astype(object)
    out.attrs = {key: _jsonable(value) for key, value in ds.attrs.items()}
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def write_group(
    ds: xr.Dataset,
    store: str | os.PathLike,
    group: str,
    compute: Callable[[Any], Any] | None = None,
) -> None:
    """Write ``ds`` to ``store/group``, replacing any earlier group, and mark it complete.

    Parameters
    ----------
    ds : xarray.Dataset
        Lazy or in-memory data; computed while writing.
    store : path or fsspec URL
    group : str
        e.g. ``"studies"`` or ``"analyses/reho"``.
    compute : callable, optional
        Runs the delayed write (e.g. with a progress bar on a cluster); defaults to
        ``.compute()``.
    """
    path = store_path(store)
    ds = _for_zarr(ds)
    ds.attrs.update({COMPLETE: False, FORMAT: STORE_FORMAT, "daskmeta_version": __version__})
    for var in ds.variables.values():
        var.encoding.pop("chunks", None)
        var.encoding.pop("preferred_chunks", None)
    root = _root(path, mode="a")
    if root is not None and group in root:
        del root[group]
    try:
        delayed = ds.to_zarr(path, group=group, mode="w", consolidated=False, compute=False)
        (compute or (lambda d: d.compute()))(delayed)
    except BaseException:
        _delete_group(path, group)  # nothing half-written stays behind
        raise
    zarr.open_group(path, path=group, mode="r+").attrs[COMPLETE] = True


def _delete_group(path: str, group: str) -> None:
    root = _root(path, mode="a")
    if root is not None and group in root:
        del root[group]


def read_group(store: str | os.PathLike, group: str) -> xr.Dataset:
    """Open ``store/group`` lazily; raise :class:`StoreError` unless it is complete."""
    attrs = group_attrs(store, group)
    path = store_path(store)
    if attrs is None:
        raise StoreError(f"{path}: no group '{group}' (run the step that writes it first)")
    if attrs.get(FORMAT) != STORE_FORMAT:
        raise StoreError(
            f"{path}/{group}: written by daskmeta {attrs.get('daskmeta_version', '?')} with store "
            f"format {attrs.get(FORMAT)!r}; this daskmeta {__version__} reads format "
            f"{STORE_FORMAT}. Rerun the step to rewrite it."
        )
    if attrs.get(COMPLETE) is not True:
        raise StoreError(
            f"{path}/{group}: incomplete (an interrupted run?); rerun to rewrite it"
        )
    ds = xr.open_zarr(path, group=group, consolidated=False)
    for name, var in ds.variables.items():
        if var.dtype == object:
            ds[name] = var.astype(str)
    return with_mask(ds)  # groups written before variables carried their mask


def list_groups(store: str | os.PathLike, parent: str) -> list[str]:
    """Names of the complete groups under ``parent`` (e.g. ``"analyses"``)."""
    if not _exists(store):
        return []
    root = _root(store_path(store), mode="r")
    if root is None or parent not in root:
        return []
    return sorted(name for name in root[parent].group_keys() if is_complete(store, f"{parent}/{name}"))


def start_group(template: xr.Dataset, store: str | os.PathLike, group: str) -> None:
    """Create ``store/group`` from a lazy template (metadata and coordinates only), incomplete.

    The data variables are then filled region by region with :func:`region_write`; the
    group's attrs list what is done, and :func:`mark_complete` closes it.
    """
    path = store_path(store)
    template = _for_zarr(template)
    template.attrs.update({COMPLETE: False, FORMAT: STORE_FORMAT, "daskmeta_version": __version__})
    _delete_group(path, group)
    template.to_zarr(path, group=group, mode="w", consolidated=False, compute=False)


def region_write(ds: xr.Dataset, store: str | os.PathLike, group: str, dim: str, index: int) -> Any:
    """The delayed write of row ``index`` of ``ds`` along ``dim`` into an existing group."""
    row = ds.isel({dim: slice(index, index + 1)})
    row = row.drop_vars([name for name, var in row.variables.items() if dim not in var.dims])
    return row.to_zarr(store_path(store), group=group, region={dim: slice(index, index + 1)},
                       consolidated=False, compute=False)


def update_attrs(store: str | os.PathLike, group: str, **attrs: Any) -> None:
    """Update a group's attributes (JSON-friendly values)."""
    node = zarr.open_group(store_path(store), path=group, mode="r+")
    node.attrs.update({key: _jsonable(value) for key, value in attrs.items()})


def mark_complete(store: str | os.PathLike, group: str) -> None:
    """Flag a group written piece by piece as complete (the last step of writing it)."""
    update_attrs(store, group, **{COMPLETE: True})
