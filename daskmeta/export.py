"""Writing a computed analysis to its output folder: NIfTI maps, tables, report.

Takes in-memory results (read back from the store); the statistics are done by then.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from daskmeta.nifti import to_nifti

#: Maps of a mean analysis written as ``<name>.nii.gz``.
MEAN_MAPS = ("z", "p", "p_fwe", "effect", "variance", "i2", "tau2", "q", "q_z")


def cluster_table(result: xr.Dataset, threshold_params: dict[str, Any]) -> tuple[Any, pd.DataFrame]:
    """Threshold a mean result and add cluster-level FWE p-values to its table."""
    from daskmeta.stats.pvalues import cluster_p_fwe
    from daskmeta.threshold import threshold

    found = threshold(result, p=threshold_params["p"], peak_z=threshold_params["peak_z"],
                      extent=threshold_params["extent"], mask=result.attrs["mask"])
    table = found.table.copy()
    positive = (table["direction"] == "positive").to_numpy()
    sizes = table["voxels"].to_numpy()
    table["cluster_p_fwe"] = np.where(
        positive, cluster_p_fwe(sizes, result["null_max_cluster_pos"].values),
        cluster_p_fwe(sizes, result["null_max_cluster_neg"].values)) if len(table) else []
    return found, table


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """A tab-separated table, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    os.replace(tmp, path)
    return path


def write_analysis(result: xr.Dataset, found: Any, table: pd.DataFrame, out_dir: str | os.PathLike,
                   threshold_params: dict[str, Any]) -> dict[str, Any]:
    """Maps, thresholded maps, ``clusters.tsv`` and the report of a mean analysis."""
    from daskmeta.report import write_report

    out_dir = Path(out_dir)
    mask = result.attrs["mask"]
    for variable in MEAN_MAPS:
        to_nifti(result[variable].values, out_dir / f"{variable}.nii.gz", mask=mask)
    to_nifti(np.where(found.labels != 0, result["z"].values, 0.0), out_dir / "z_thresholded.nii.gz",
             mask=mask)
    to_nifti(found.labels.astype(np.int16), out_dir / "clusters.nii.gz", mask=mask)
    write_table(table, out_dir / "clusters.tsv")
    report = write_report(result, table, out_dir, threshold_params)
    return {"clusters": table, "labels": found.labels, "report": report, "out": out_dir}


def write_jackknife(runs: xr.Dataset, detail: pd.DataFrame, out_dir: str | os.PathLike,
                    maps: bool = False) -> Path:
    """``jackknife.tsv`` (cluster x left-out study) and, on request, each run's z and p maps."""
    out_dir = Path(out_dir)
    wide = detail.pivot_table(index=["cluster", "direction"], columns="left_out",
                              values="replicated", aggfunc="first").reset_index()
    if len(wide):
        studies = [c for c in wide.columns if c not in ("cluster", "direction")]
        wide.insert(2, "replicated", wide[studies].sum(axis=1).astype(int))
        wide.insert(3, "runs", len(studies))
    path = write_table(wide, out_dir / "jackknife.tsv")
    if maps:
        for j, study in enumerate(runs.left_out.values):
            for variable in ("z", "p"):
                path = out_dir / "jackknife" / f"without_{study}_{variable}.nii.gz"
                to_nifti(runs[variable].values[j], path, mask=runs.attrs["mask"])
    return path
