"""Analysis configuration files (YAML), validated with errors that name the bad key.

Schema (DESIGN.md)::

    studies: examples/clbp            # SDM folder, studies.tsv (+ peaks.tsv), NiMARE JSON, Sleuth
    store: zarr_store/clbp.zarr
    out: results/clbp
    preprocess: {mask: gray_matter, fwhm: 20, anisotropy: 1.0}
    threshold: {p: 0.005, peak_z: 1.0, extent: 10}
    analyses:
      reho: {type: mean, where: "modality == 'ReHo'", permutations: 1000, seed: 1}

Relative paths are taken relative to the working directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daskmeta.errors import ConfigError
from daskmeta.stats.fast_null import ENGINES

TOP_KEYS = {"studies", "store", "out", "preprocess", "threshold", "analyses", "sweep"}
SWEEP_KEYS = {"name": str, "analysis": dict, "grid": dict, "subsets": dict}
#: Parameters a sweep may vary, and the type of each value.
SWEEP_GRID = {"fwhm": float, "anisotropy": float, "p": float, "peak_z": float, "extent": int, "seed": int}
SWEEP_SUBSETS = {"leave_out": int, "where": list, "random": dict}
PREPROCESS_KEYS = {"mask": str, "fwhm": float, "anisotropy": float, "beta": float}
THRESHOLD_KEYS = {"p": float, "peak_z": float, "extent": int}
ANALYSIS_TYPES = {"mean", "compare", "multimodal"}
_NULL_KEYS = {"type": str, "where": str, "studies": list, "permutations": int, "seed": int,
              "block_size": int, "threshold": dict}
ANALYSIS_KEYS = {
    "mean": {**_NULL_KEYS, "jackknife": bool, "jackknife_maps": bool, "regressors": list, "engine": str},
    "compare": {**_NULL_KEYS, "groups": list, "engine": str},
    "multimodal": {"type": str, "of": list, "threshold": dict},
}
THRESHOLD_DEFAULTS = {"p": 0.005, "peak_z": 1.0, "extent": 10}
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class Config:
    """A validated configuration."""

    path: Path
    studies: Path
    store: str
    out: Path
    preprocess: dict[str, Any]
    threshold: dict[str, Any]
    analyses: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    if kind in (str, list, dict) and isinstance(value, kind):
        return value
    raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")


def _section(raw: Any, keys: dict[str, type], where: str, path: Path) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: '{where}' must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ConfigError(f"{path}: unknown key '{where}.{unknown[0]}'; known: {sorted(keys)}")
    return {key: _typed(value, keys[key], f"{path}: '{where}.{key}'") for key, value in raw.items()}


def _check_kind(path: Path, name: str, settings: dict[str, Any]) -> None:
    """Checks specific to each analysis type."""
    kind = settings["type"]
    if kind == "compare":
        groups = settings.get("groups")
        if not groups or len(groups) != 2 or not all(isinstance(g, str) for g in groups):
            raise ConfigError(f"{path}: 'analyses.{name}.groups' must be two study filters, "
                              f"e.g. [\"modality == 'ReHo'\", \"modality == 'ALFF'\"]")
    if kind == "multimodal":
        of = settings.get("of")
        if not of or len(of) != 2:
            raise ConfigError(f"{path}: 'analyses.{name}.of' must name two mean analyses")
    if "engine" in settings and settings["engine"] not in ENGINES:
        raise ConfigError(f"{path}: 'analyses.{name}.engine' must be one of {list(ENGINES)}, "
                          f"got {settings['engine']!r}")
    for column in settings.get("regressors", []):
        if not isinstance(column, str):
            raise ConfigError(f"{path}: 'analyses.{name}.regressors' must list study columns")


def _analyses(analyses_raw: Any, threshold: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """Validate the ``analyses`` section."""
    if not isinstance(analyses_raw, dict) or not analyses_raw:
        raise ConfigError(f"{path}: 'analyses' must map analysis names to their settings")
    analyses = {}
    for name, settings in analyses_raw.items():
        if not NAME.match(str(name)):
            raise ConfigError(f"{path}: analysis name {name!r} must be letters, digits, _ . -")
        if not isinstance(settings, dict):
            raise ConfigError(f"{path}: 'analyses.{name}' must be a mapping")
        kind = settings.get("type", "mean")
        if kind not in ANALYSIS_TYPES:
            raise ConfigError(
                f"{path}: 'analyses.{name}.type' must be one of {sorted(ANALYSIS_TYPES)}, got {kind!r}"
            )
        checked = _section({**settings, "type": kind}, ANALYSIS_KEYS[kind], f"analyses.{name}", path)
        if "threshold" in checked:
            checked["threshold"] = {**threshold, **_section(
                checked["threshold"], THRESHOLD_KEYS, f"analyses.{name}.threshold", path)}
        if checked.get("permutations", 1) < 1:
            raise ConfigError(f"{path}: 'analyses.{name}.permutations' must be >= 1")
        _check_kind(path, str(name), checked)
        analyses[str(name)] = checked
    for name, settings in analyses.items():
        for other in settings.get("of", []):
            if analyses.get(other, {}).get("type", "mean") != "mean" or other not in analyses:
                raise ConfigError(f"{path}: 'analyses.{name}.of' names {other!r}, which is not a "
                                  f"mean analysis of this file")
    return analyses


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a configuration file.

    Raises
    ------
    ConfigError
        Naming the file and the bad key.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such configuration file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of keys")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}'; known: {sorted(TOP_KEYS)}")
    for key in ("studies", "store"):
        if key not in raw:
            raise ConfigError(f"{path}: missing key '{key}'")
    if ("analyses" in raw) == ("sweep" in raw):
        raise ConfigError(f"{path}: give either 'analyses' (daskmeta run) or 'sweep' (daskmeta sweep)")
    preprocess = _section(raw.get("preprocess"), PREPROCESS_KEYS, "preprocess", path)
    threshold = {**THRESHOLD_DEFAULTS, **_section(raw.get("threshold"), THRESHOLD_KEYS, "threshold", path)}
    sweep = _sweep(raw["sweep"], path) if "sweep" in raw else {}
    analyses = _analyses(raw["analyses"], threshold, path) if "analyses" in raw else {}
    return Config(
        path=path, studies=Path(_typed(raw["studies"], str, f"{path}: 'studies'")),
        store=_typed(raw["store"], str, f"{path}: 'store'"),
        out=Path(_typed(raw.get("out", "results"), str, f"{path}: 'out'")),
        preprocess=preprocess, threshold=threshold, analyses=analyses,
        sweep=sweep, raw=raw,
    )


def _sweep(raw: Any, path: Path) -> dict[str, Any]:
    """Validate the ``sweep`` section: name, analysis, grid of values, study subsets."""
    sweep = _section(raw, SWEEP_KEYS, "sweep", path)
    name = str(sweep.get("name", "sweep"))
    if not NAME.match(name):
        raise ConfigError(f"{path}: 'sweep.name' {name!r} must be letters, digits, _ . -")
    analysis = _section(sweep.get("analysis", {}), {k: v for k, v in ANALYSIS_KEYS["mean"].items()
                                                     if k in ("type", "where", "studies", "permutations",
                                                              "seed", "block_size")},
                        "sweep.analysis", path)
    if analysis.get("type", "mean") != "mean":
        raise ConfigError(f"{path}: 'sweep.analysis.type' must be 'mean'")
    grid = {}
    for key, values in (sweep.get("grid") or {}).items():
        if key not in SWEEP_GRID:
            raise ConfigError(f"{path}: unknown key 'sweep.grid.{key}'; known: {sorted(SWEEP_GRID)}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: 'sweep.grid.{key}' must be a non-empty list of values")
        grid[key] = [_typed(v, SWEEP_GRID[key], f"{path}: 'sweep.grid.{key}'") for v in values]
    subsets = _section(sweep.get("subsets"), SWEEP_SUBSETS, "sweep.subsets", path)
    if "random" in subsets:
        subsets["random"] = _section(subsets["random"], {"n": int, "fraction": float, "seed": int},
                                     "sweep.subsets.random", path)
        if not 0 < subsets["random"].get("fraction", 0.8) < 1:
            raise ConfigError(f"{path}: 'sweep.subsets.random.fraction' must be in (0, 1)")
    if subsets.get("leave_out", 1) < 1:
        raise ConfigError(f"{path}: 'sweep.subsets.leave_out' must be >= 1")
    return {"name": name, "analysis": analysis, "grid": grid, "subsets": subsets}
