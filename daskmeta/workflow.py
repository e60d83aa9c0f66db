"""Orchestration of whole runs: preprocessing into the store, analyses, exports.

Everything here composes the analysis functions with a cluster connection and the store;
the statistics live in their own modules.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from daskmeta.connect import cluster_client, compute
from daskmeta.preprocess import recreate, studies_hash
from daskmeta.store import group_attrs, is_complete, write_group
from daskmeta.studyset import StudySet

PREPROCESS_DEFAULTS = {"mask": "gray_matter", "fwhm": 20.0, "anisotropy": 1.0, "beta": 1.0}


def preprocess_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Preprocessing parameters with defaults filled in and types normalised."""
    merged = {**PREPROCESS_DEFAULTS, **(params or {})}
    unknown = sorted(set(merged) - set(PREPROCESS_DEFAULTS) - {"voxel_chunk"})
    if unknown:
        raise ValueError(f"unknown preprocess parameter(s) {unknown}; known: {sorted(PREPROCESS_DEFAULTS)}")
    return {
        "mask": str(merged["mask"]), "fwhm": float(merged["fwhm"]),
        "anisotropy": float(merged["anisotropy"]), "beta": float(merged["beta"]),
    }


def studies_up_to_date(store: str | os.PathLike, studies: StudySet, params: dict[str, Any]) -> bool:
    """Whether ``store/studies`` is complete and was made from these studies and parameters."""
    if not is_complete(store, "studies"):
        return False
    attrs = group_attrs(store, "studies") or {}
    same_params = all(attrs.get(key) == value for key, value in params.items())
    return same_params and attrs.get("studies_hash") == studies_hash(studies)


def preprocess_to_store(
    studies: StudySet,
    store: str | os.PathLike,
    params: dict[str, Any] | None = None,
    scheduler: str | None = None,
    client: Any = None,
    force: bool = False,
) -> bool:
    """Recreate study maps and write them to ``store/studies``.

    Returns False when an identical complete group was already there (nothing recomputed).
    """
    params = preprocess_params(params)
    if not force and studies_up_to_date(store, studies, params):
        print(f"daskmeta: {store}/studies is up to date", file=sys.stderr)
        return False
    maps = recreate(studies, **params)
    label = (f"daskmeta: recreating {len(studies)} study maps "
             f"({maps.attrs['n_voxels']} voxels, fwhm {params['fwhm']} mm, "
             f"anisotropy {params['anisotropy']})")
    if client is not None or scheduler in ("synchronous", "threads"):
        write_group(maps, store, "studies", compute=lambda d: compute(d, client, label))
        return True
    with cluster_client(scheduler) as new_client:
        write_group(maps, store, "studies", compute=lambda d: compute(d, new_client, label))
    return True
