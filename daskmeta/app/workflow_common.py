"""What every analysis runner of the workflow shares: resuming from the store, study names."""

from __future__ import annotations

import os
import sys
from typing import Any

from daskmeta.app.dask_client import compute
from daskmeta.io.store import group_attrs, is_complete, write_group


def computed(store: str | os.PathLike, group: str, key: str, build: Any, label: str,
              client: Any, force: bool) -> Any:
    """The in-memory result of ``store/group``: read when complete with ``key``, else built
    (lazily, by ``build()``), written with a progress bar and read back."""
    from daskmeta.io.store import read_group

    attrs = group_attrs(store, group) or {}
    if not force and is_complete(store, group) and attrs.get("analysis_key") == key:
        print(f"daskmeta: {group}: complete in {store} (not recomputed)", file=sys.stderr)
    else:
        result = build()
        result.attrs["analysis_key"] = key
        write_group(result, store, group, compute=lambda d: compute(d, client, label))
    return read_group(store, group).compute()


def names_of(studies: tuple[str, ...] | None) -> list[str] | None:
    """An analysis' ``studies`` as the list of names the analyses take (None: all studies)."""
    return None if studies is None else list(studies)
