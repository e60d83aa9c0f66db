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


def _analysis_key(settings: dict[str, Any], maps_attrs: dict[str, Any]) -> str:
    """What an analysis result depends on: its settings and the study maps it read."""
    import hashlib
    import json

    material = {
        "settings": {k: v for k, v in settings.items() if k != "threshold"},
        "studies_hash": maps_attrs.get("studies_hash"),
        "preprocess": {k: maps_attrs.get(k) for k in ("fwhm", "anisotropy", "beta", "mask")},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _computed(store: str | os.PathLike, group: str, key: str, build: Any, label: str,
              client: Any, force: bool) -> Any:
    """The in-memory result of ``store/group``: read when complete with ``key``, else built
    (lazily, by ``build()``), written with a progress bar and read back."""
    from daskmeta.store import read_group

    attrs = group_attrs(store, group) or {}
    if not force and is_complete(store, group) and attrs.get("analysis_key") == key:
        print(f"daskmeta: {group}: complete in {store} (not recomputed)", file=sys.stderr)
    else:
        result = build()
        result.attrs["analysis_key"] = key
        write_group(result, store, group, compute=lambda d: compute(d, client, label))
    return read_group(store, group).compute()


def run_analysis(
    name: str,
    settings: dict[str, Any],
    maps: Any,
    store: str | os.PathLike,
    out: os.PathLike,
    threshold_params: dict[str, Any],
    client: Any = None,
    force: bool = False,
) -> dict[str, Any]:
    """Compute (or resume) one mean analysis and its jackknife, write them, export everything."""
    from pathlib import Path

    from daskmeta.analysis import DEFAULT_PERMUTATIONS, mean
    from daskmeta.export import cluster_table, write_analysis, write_jackknife
    from daskmeta.jackknife import jackknife, replication, replication_counts

    key = _analysis_key(settings, dict(maps.attrs))
    permutations = int(settings.get("permutations", DEFAULT_PERMUTATIONS))
    common = {"where": settings.get("where"), "studies": settings.get("studies"),
              "permutations": permutations, "seed": int(settings.get("seed", 0)),
              "block_size": int(settings.get("block_size", 10))}
    result = _computed(
        store, f"analyses/{name}", key,
        lambda: mean(maps, name=name, voxel_p=float(threshold_params["p"]), **common),
        f"daskmeta: {name}: random-effects mean, {permutations} randomizations", client, force)
    found, table = cluster_table(result, threshold_params)
    out_dir = Path(out) / name
    if settings.get("jackknife"):
        runs = _computed(
            store, f"analyses/{name}/jackknife", key,
            lambda: jackknife(maps, name=f"{name}/jackknife", **common),
            f"daskmeta: {name}: leave-one-out jackknife of {result.attrs['n_studies']} studies",
            client, force)
        detail = replication(found.labels, runs, threshold_params["p"], threshold_params["peak_z"],
                             threshold_params["extent"])
        counts = replication_counts(detail, runs.sizes["left_out"])
        table["jackknife"] = table["cluster"].map(counts).fillna("")
        write_jackknife(runs, detail, out_dir, maps=bool(settings.get("jackknife_maps")))
    return write_analysis(result, found, table, out_dir, threshold_params)


def validate_selections(studies: StudySet, analyses: dict[str, dict[str, Any]]) -> None:
    """Check every analysis selects >= 2 studies before any heavy work starts."""
    from daskmeta.errors import ConfigError

    for name, settings in analyses.items():
        try:
            chosen = studies.select(settings.get("where"), settings.get("studies"))
        except ValueError as exc:
            raise ConfigError(f"analysis '{name}': {exc}") from exc
        if len(chosen) < 2:
            raise ConfigError(
                f"analysis '{name}' selects {len(chosen)} studies "
                f"(where: {settings.get('where')!r}); it needs at least 2"
            )


def run_config(
    config_path: str | os.PathLike,
    scheduler: str | None = None,
    force: bool = False,
    only: list[str] | None = None,
    permutations: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run a whole meta-analysis project from its configuration file.

    Preprocesses (or reuses) the study maps, then computes (or resumes) each analysis and
    exports its maps, cluster table and report under ``out/<analysis>/``.
    """
    from daskmeta.config import load_config
    from daskmeta.io import load_studies
    from daskmeta.store import read_group

    config = load_config(config_path)
    studies = load_studies(config.studies)
    print(f"daskmeta: {studies!r}", file=sys.stderr)
    analyses = {name: dict(settings) for name, settings in config.analyses.items()
                if not only or name in only}
    if permutations is not None:
        for settings in analyses.values():
            settings["permutations"] = permutations
    validate_selections(studies, analyses)
    outputs = {}
    with cluster_client(scheduler) as client:
        preprocess_to_store(studies, config.store, config.preprocess, client=client,
                            scheduler=scheduler, force=force)
        maps = read_group(config.store, "studies")
        for name, settings in analyses.items():
            threshold_params = settings.get("threshold", config.threshold)
            outputs[name] = run_analysis(name, settings, maps, config.store, config.out,
                                         threshold_params, client=client, force=force)
            n = len(outputs[name]["clusters"].drop_duplicates("cluster"))
            print(f"daskmeta: {name}: {n} cluster(s); report {outputs[name]['report']}",
                  file=sys.stderr)
    return outputs
