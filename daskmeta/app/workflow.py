"""Orchestration of whole runs: preprocessing into the store, analyses, exports.

Everything here composes the analysis functions with a cluster connection and the store;
the statistics live in their own modules.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

from daskmeta.analyses.recreate import recreate, studies_hash
from daskmeta.app.config import (
    Analysis,
    CompareAnalysis,
    Config,
    MeanAnalysis,
    MultimodalAnalysis,
    Preprocess,
    PsiAnalysis,
)
from daskmeta.app.dask_client import cluster_client, compute
from daskmeta.app.logs import log_to_file
from daskmeta.app.psi_workflow import run_psi
from daskmeta.app.workflow_common import computed, names_of
from daskmeta.io.store import group_attrs, is_complete, write_group
from daskmeta.model.studyset import StudySet

#: Preprocessing parameters left out: those of :class:`daskmeta.app.config.Preprocess`.
PREPROCESS_DEFAULTS = asdict(Preprocess())


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
    dashboard_address: str | None = None,
) -> bool:
    """Recreate study maps and write them to ``store/studies``.

    Returns False when an identical complete group was already there (nothing recomputed).
    ``dashboard_address`` is that of a LocalCluster started here (default: this machine
    only, see :func:`daskmeta.app.dask_client.cluster_client`).
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
    with cluster_client(scheduler, dashboard_address=dashboard_address) as new_client:
        write_group(maps, store, "studies", compute=lambda d: compute(d, new_client, label))
    return True


def _analysis_key(settings: MeanAnalysis | CompareAnalysis, maps_attrs: dict[str, Any],
                  threshold_params: dict[str, Any] | None = None) -> str:
    """What an analysis result depends on: its settings, the study maps it read, the
    null's engine and the cluster-forming voxel p of its cluster-extent null.

    ``uncorrected_permutations`` enters only where it shortens the voxel null, so results of
    runs it does not change keep their keys.
    """
    import hashlib
    import json

    material = {
        "settings": {k: v for k, v in asdict(settings).items()
                     if k != "threshold" and not (k == "uncorrected_permutations"
                                                  and (v is None or v >= settings.permutations))},
        "engine": settings.engine,
        "voxel_p": (threshold_params or {}).get("p"),
        "studies_hash": maps_attrs.get("studies_hash"),
        "preprocess": {k: maps_attrs.get(k) for k in ("fwhm", "anisotropy", "beta", "mask")},
        # 2: p_fwe from the cluster-extent null's maxima (docs/methods.md, 5.3)
        "null_version": 2,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def uncorrected_permutations(settings: MeanAnalysis | CompareAnalysis) -> int:
    """Randomizations of the nulls of a mean analysis that give uncorrected p-values only.

    Its jackknife and meta-regressions have no family-wise p-value: like the mean's voxel null
    beside the cluster-extent null, they run ``min(permutations, uncorrected_permutations)``
    (docs/methods.md, 5.2). A comparison runs all its ``permutations``.
    """
    limit = getattr(settings, "uncorrected_permutations", None)
    return settings.permutations if limit is None else min(settings.permutations, int(limit))


def run_analysis(
    name: str,
    settings: MeanAnalysis,
    maps: Any,
    store: str | os.PathLike,
    out: os.PathLike,
    threshold_params: dict[str, Any],
    client: Any = None,
    force: bool = False,
) -> dict[str, Any]:
    """Compute (or resume) one mean analysis and its jackknife, write them, export everything."""
    from pathlib import Path

    from daskmeta.analyses.leave_one_out import jackknife
    from daskmeta.analyses.means import mean
    from daskmeta.inference.replication import replication, replication_counts
    from daskmeta.report.export import cluster_table, write_analysis, write_jackknife
    from daskmeta.report.publication_bias import publication_bias

    key = _analysis_key(settings, dict(maps.attrs), threshold_params)
    permutations = settings.permutations
    common = {"where": settings.where, "studies": names_of(settings.studies),
              "permutations": permutations, "seed": settings.seed, "block_size": settings.block_size}
    result = computed(
        store, f"analyses/{name}", key,
        lambda: mean(maps, name=name, voxel_p=float(threshold_params["p"]), engine=settings.engine,
                     uncorrected_permutations=settings.uncorrected_permutations, **common),
        f"daskmeta: {name}: random-effects mean, {permutations} randomizations", client, force)
    found, table = cluster_table(result, threshold_params)
    out_dir = Path(out) / name
    if settings.jackknife:
        runs = computed(
            store, f"analyses/{name}/jackknife", key,
            lambda: jackknife(maps, name=f"{name}/jackknife", engine=settings.engine,
                              **{**common, "permutations": uncorrected_permutations(settings)}),
            f"daskmeta: {name}: leave-one-out jackknife of {result.attrs['n_studies']} studies",
            client, force)
        detail = replication(found.labels, runs, threshold_params["p"], threshold_params["peak_z"],
                             threshold_params["extent"])
        counts = replication_counts(detail, runs.sizes["left_out"])
        table["jackknife"] = table["cluster"].map(counts).fillna("")
        write_jackknife(runs, detail, out_dir, maps=settings.jackknife_maps)
    bias = publication_bias(maps, table, list(result.attrs["studies"]), out_dir, name, client=client)
    if len(bias):
        table = table.merge(bias[["cluster", "egger_p"]], on="cluster", how="left")
    else:
        table["egger_p"] = []
    for regressor in settings.regressors:
        run_linear_model(f"{name}/regression_{regressor}", settings, maps, store, out, threshold_params,
                         client, force, key=key, mean_result=result, mean_labels=found.labels,
                         regressor=regressor)
    output = write_analysis(result, found, table, out_dir, threshold_params)
    return _html_report(name, result, output, threshold_params)


def run_linear_model(
    name: str,
    settings: MeanAnalysis | CompareAnalysis,
    maps: Any,
    store: str | os.PathLike,
    out: os.PathLike,
    threshold_params: dict[str, Any],
    client: Any = None,
    force: bool = False,
    key: str | None = None,
    mean_result: Any = None,
    mean_labels: Any = None,
    regressor: str | None = None,
) -> dict[str, Any]:
    """Compute (or resume) a meta-regression or group comparison and export it.

    A comparison's ``settings`` give its two groups; a mean analysis' ``settings`` with
    ``regressor`` (one of its ``regressors``) give a meta-regression, whose ``name`` is
    ``MEAN/regression_COLUMN``: the group is then ``analyses/MEAN/regression_COLUMN`` and
    the outputs go to ``out/MEAN/regression_COLUMN/``.
    """
    from pathlib import Path

    from daskmeta.analyses.linear_models import linear_model
    from daskmeta.inference.thresholding import HETEROGENEITY_P
    from daskmeta.report.export import write_linear_model

    key = key or _analysis_key(settings, dict(maps.attrs), threshold_params)
    permutations = uncorrected_permutations(settings)
    groups = settings.groups if isinstance(settings, CompareAnalysis) else None
    result = computed(
        store, f"analyses/{name}", key,
        lambda: linear_model(
            maps, regressor=regressor, groups=groups, where=settings.where,
            studies=names_of(settings.studies), permutations=permutations, seed=settings.seed, name=name,
            block_size=settings.block_size, check_p=float(threshold_params["p"]),
            engine=settings.engine),
        f"daskmeta: {name}: {'meta-regression on ' + regressor if regressor else 'comparison'}, "
        f"{permutations} randomizations", client, force)
    heterogeneous = None
    if mean_result is not None:
        heterogeneous = mean_result["p_q"].values < HETEROGENEITY_P
    output = write_linear_model(result, maps, threshold_params, Path(out) / name, mean_labels, heterogeneous)
    _html_report(name, result, output, threshold_params)
    if result.attrs.get("dropped"):
        print(f"daskmeta: {name}: studies without {regressor} dropped: {result.attrs['dropped']}",
              file=sys.stderr)
    return output


def run_multimodal(
    name: str, settings: MultimodalAnalysis, store: str | os.PathLike, out: os.PathLike,
    threshold_params: dict[str, Any],
) -> dict[str, Any]:
    """The multimodal overlap of two mean analyses already in the store, written and exported."""
    from pathlib import Path

    from daskmeta.analyses.overlap import multimodal
    from daskmeta.inference.multimodal_clusters import overlap_tables
    from daskmeta.io.nifti import to_nifti
    from daskmeta.io.store import read_group
    from daskmeta.report.export import write_table

    first, second = (read_group(store, f"analyses/{other}") for other in settings.of)
    write_group(multimodal(first, second, name=name), store, f"analyses/{name}")
    result = read_group(store, f"analyses/{name}").compute()
    same, opposite = overlap_tables(result, p=threshold_params["p"], peak_z=threshold_params["peak_z"],
                                    extent=threshold_params["extent"])
    out_dir = Path(out) / name
    for variable in ("z", "p", "z_opposite", "p_opposite"):
        to_nifti(result[variable].values, out_dir / f"{variable}.nii.gz", mask=result.attrs["mask"])
    write_table(same.table, out_dir / "clusters.tsv")
    write_table(opposite.table, out_dir / "clusters_opposite.tsv")
    output = {"clusters": same.table, "opposite": opposite.table, "labels": same.labels, "out": out_dir}
    return _html_report(name, result, output, threshold_params,
                        {"Opposite directions (clusters_opposite.tsv)": opposite.table})


def _html_report(name: str, result: Any, output: dict[str, Any], threshold_params: dict[str, Any],
                 extra_tables: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``report.html`` beside an analysis' outputs (linking back to the run's index)."""
    from daskmeta.report.html import write_html_report

    index = "../" * (name.count("/") + 1) + "index.html"
    output["html"] = write_html_report(result, output["labels"], output["clusters"], output["out"],
                                       threshold_params, extra_tables, index=index)
    return output


def _write_index(config: Config, studies: StudySet, analyses: Mapping[str, Analysis] | None = None) -> None:
    """Write ``out/index.html`` (every report under ``out``, the studies, the parameters)."""
    from daskmeta.report.index import write_index

    kinds, parameters = {}, {"configuration": str(config.path), "studies": str(config.studies),
                             "store": str(config.store), "preprocess": asdict(config.preprocess),
                             "threshold": asdict(config.threshold)}
    for name, settings in (analyses or config.analyses).items():
        kinds[name] = type(settings).__name__.removesuffix("Analysis").lower()
        parameters[f"analysis {name} ({kinds[name]})"] = asdict(settings)
        for regressor in settings.regressors if isinstance(settings, MeanAnalysis) else ():
            kinds[f"{name}/regression_{regressor}"] = "regression"
    if config.sweep is not None:
        parameters[f"sweep {config.sweep.as_dict()['name']}"] = config.sweep.as_dict()
    path = write_index(config.out, studies, parameters, kinds, title=f"daskmeta: {config.path.name}")
    print(f"daskmeta: reports: {path}", file=sys.stderr)


def _chosen_analyses(config: Config, only: list[str] | None, permutations: int | None) -> dict[str, Analysis]:
    """The analyses of ``config`` to run: those named in ``only`` (all when None), each with
    ``permutations`` randomizations when given (multimodal overlaps have none)."""
    from daskmeta.errors import ConfigError

    if permutations is not None and permutations < 1:
        raise ConfigError(f"--permutations must be >= 1, got {permutations}")
    unknown = sorted(set(only or ()) - set(config.analyses))
    if unknown:
        raise ConfigError(f"--only {', '.join(unknown)}: no such analysis in {config.path}; "
                          f"its analyses are: {', '.join(config.analyses)}")
    chosen = {name: settings for name, settings in config.analyses.items() if not only or name in only}
    if permutations is None:
        return chosen
    return {name: settings if isinstance(settings, MultimodalAnalysis)
            else replace(settings, permutations=permutations) for name, settings in chosen.items()}


def validate_selections(studies: StudySet, analyses: Mapping[str, Analysis]) -> None:
    """Check what every analysis selects before any heavy work starts."""
    import pandas as pd

    from daskmeta.errors import ConfigError

    def selected(name: str, where: str | None, names: tuple[str, ...] | None, minimum: int) -> StudySet:
        try:
            chosen = studies.select(where, names_of(names))
        except ValueError as exc:
            raise ConfigError(f"analysis '{name}': {exc}") from exc
        if len(chosen) < minimum:
            raise ConfigError(f"analysis '{name}' selects {len(chosen)} studies (where: {where!r}); "
                              f"it needs at least {minimum}")
        return chosen

    for name, settings in analyses.items():
        if isinstance(settings, MultimodalAnalysis):
            continue
        mean = isinstance(settings, MeanAnalysis)
        minimum = 3 if mean and (settings.jackknife or settings.regressors) else 2
        if isinstance(settings, PsiAnalysis) and settings.regressors:
            minimum = len(settings.regressors) + 2  # more studies than design columns
        chosen = selected(name, settings.where, settings.studies, minimum)
        for group in settings.groups if isinstance(settings, CompareAnalysis) else ():
            query = f"({settings.where}) and ({group})" if settings.where else group
            selected(f"{name}' group '{group}", query, settings.studies, 2)
        for column in settings.regressors if mean else ():
            if column not in chosen.studies:
                raise ConfigError(f"analysis '{name}': regressor '{column}' is not a study column "
                                  f"({', '.join(map(str, chosen.studies.columns))})")
            if not pd.api.types.is_numeric_dtype(chosen.studies[column]):
                raise ConfigError(f"analysis '{name}': regressor '{column}' is not numeric")
            if chosen.studies[column].notna().sum() < 3:
                raise ConfigError(f"analysis '{name}': fewer than 3 studies have '{column}'")
        for column in settings.regressors if isinstance(settings, PsiAnalysis) else ():
            if column not in chosen.studies:
                raise ConfigError(f"analysis '{name}': regressor '{column}' is not a study column "
                                  f"({', '.join(map(str, chosen.studies.columns))})")
            values = chosen.studies[column]
            if not pd.api.types.is_numeric_dtype(values):
                raise ConfigError(f"analysis '{name}': regressor '{column}' is not numeric")
            if values.isna().any():
                missing = ", ".join(map(str, chosen.studies.loc[values.isna(), "study"]))
                raise ConfigError(f"analysis '{name}': studies without '{column}': {missing}; select "
                                  "them out with 'where' (a PSI linear model needs every study's value)")
            if values.nunique() < 2:
                raise ConfigError(f"analysis '{name}': regressor '{column}' is constant over the "
                                  "selected studies")


def run_config(
    config_path: str | os.PathLike | Config,
    scheduler: str | None = None,
    force: bool = False,
    only: list[str] | None = None,
    permutations: int | None = None,
    dashboard_address: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Run a whole meta-analysis project from its configuration (a file, or a loaded ``Config``).

    Preprocesses (or reuses) the study maps, then computes (or resumes) each analysis and
    exports its maps, cluster table and reports (``summary.md``, ``report.html``) under
    ``out/<analysis>/``, then ``out/index.html`` linking every report. Dask's logs go
    to ``out/daskmeta.log`` (:func:`daskmeta.app.logs.log_to_file`); ``dashboard_address``
    is that of a LocalCluster started here.
    """
    from daskmeta.app.config import Config, load_config
    from daskmeta.io import load_studies
    from daskmeta.io.store import read_group

    config = config_path if isinstance(config_path, Config) else load_config(config_path)
    analyses = _chosen_analyses(config, only, permutations)
    studies = load_studies(config.studies)
    print(f"daskmeta: {studies!r}", file=sys.stderr)
    validate_selections(studies, analyses)
    outputs = {}
    with log_to_file(config.out), cluster_client(scheduler, dashboard_address=dashboard_address) as client:
        preprocess_to_store(studies, config.store, asdict(config.preprocess), client=client,
                            scheduler=scheduler, force=force)
        maps = read_group(config.store, "studies")
        order = sorted(analyses, key=lambda n: isinstance(analyses[n], MultimodalAnalysis))
        for name in order:
            settings = analyses[name]
            threshold_params = asdict(settings.threshold)
            if isinstance(settings, MeanAnalysis):
                outputs[name] = run_analysis(name, settings, maps, config.store, config.out,
                                             threshold_params, client=client, force=force)
            elif isinstance(settings, CompareAnalysis):
                outputs[name] = run_linear_model(name, settings, maps, config.store, config.out,
                                                 threshold_params, client=client, force=force)
            elif isinstance(settings, PsiAnalysis):
                outputs[name] = run_psi(name, settings, maps, config.store, config.out,
                                        client=client, force=force)
            else:
                outputs[name] = run_multimodal(name, settings, config.store, config.out,
                                               threshold_params)
            n = len(outputs[name]["clusters"].drop_duplicates("cluster"))
            print(f"daskmeta: {name}: {n} cluster(s) in {outputs[name]['out']}", file=sys.stderr)
    _write_index(config, studies)
    return outputs


def run_sweep(
    config_path: str | os.PathLike, scheduler: str | None = None, force: bool = False,
    dashboard_address: str | None = None,
) -> dict[str, Any]:
    """Run a sensitivity sweep from its configuration: variants to the store, stability tables.

    Writes ``STORE/sweeps/NAME`` (resuming an interrupted sweep with the variants still
    missing) and, under ``out/sweeps/NAME/``, ``variants.tsv``, ``stability.tsv`` (each
    reference cluster: in how many variants it survives), ``stability_detail.tsv``,
    ``stability.png``, ``significant_fraction.nii.gz`` (per voxel, the share of variants
    in which it lies in a significant cluster) and ``report.html``; ``out/index.html`` is
    rewritten to link it.
    """
    from pathlib import Path

    from daskmeta.analyses.recreate import studies_hash
    from daskmeta.analyses.sweep import plan, sweep_key, sweep_maps
    from daskmeta.app.config import load_config
    from daskmeta.errors import ConfigError
    from daskmeta.inference.replication import significant_fraction, stability, variant_labels
    from daskmeta.io import load_studies
    from daskmeta.io.nifti import to_nifti
    from daskmeta.io.store import read_group
    from daskmeta.report.export import write_table
    from daskmeta.report.stability import stability_plot

    config = load_config(config_path)
    if config.sweep is None:
        raise ConfigError(f"{config.path}: no 'sweep' section (use `daskmeta run` for analyses)")
    studies = load_studies(config.studies)
    print(f"daskmeta: {studies!r}", file=sys.stderr)
    preprocess = preprocess_params(asdict(config.preprocess))
    sweep = config.sweep.as_dict()
    try:
        variants = plan(studies, sweep, preprocess, asdict(config.threshold))
    except ValueError as exc:
        raise ConfigError(f"{config.path}: {exc}") from exc
    name, group = sweep["name"], f"sweeps/{sweep['name']}"
    key = sweep_key(variants, sweep, preprocess, studies_hash(studies))
    print(f"daskmeta: sweep {name}: {len(variants)} variants = {variants['kernel_key'].nunique()} "
          f"kernel(s), {variants['analysis_key'].nunique()} pooled analyses", file=sys.stderr)
    from daskmeta.analyses.sweep import run_sweep_to_store

    with log_to_file(config.out), cluster_client(scheduler, dashboard_address=dashboard_address) as client:
        maps = sweep_maps(studies, variants, sweep, preprocess, name)
        run_sweep_to_store(maps, config.store, group, key, client=client, force=force)
    result = read_group(config.store, group).compute()
    labels = variant_labels(result)  # every variant thresholded once, for both summaries
    summary, detail, reference = stability(result, labels)
    out_dir = Path(config.out) / "sweeps" / name
    write_table(variants.drop(columns=["kernel_key", "analysis_key"]), out_dir / "variants.tsv")
    write_table(summary, out_dir / "stability.tsv")
    write_table(detail, out_dir / "stability_detail.tsv")
    stability_plot(summary, detail, out_dir / "stability.png", title=f"sweep {name}", variants=variants)
    to_nifti(significant_fraction(result, labels), out_dir / "significant_fraction.nii.gz",
             mask=result.attrs["mask"])
    from daskmeta.report.index import write_sweep_report

    row = int(list(result.coords["reference"].values).index(True))
    write_sweep_report(out_dir, summary, variants.drop(columns=["kernel_key", "analysis_key"]), reference,
                       result["z"].values[row], str(result.attrs["mask"]), name)
    _write_index(config, studies)
    return {"variants": variants, "stability": summary, "detail": detail, "out": out_dir}
