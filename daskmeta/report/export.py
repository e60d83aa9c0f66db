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

from daskmeta.io.nifti import to_nifti

#: Maps of a mean analysis written as ``<name>.nii.gz``.
MEAN_MAPS = ("z", "p", "p_fwe", "effect", "variance", "i2", "tau2", "q", "q_z")


def cluster_table(result: xr.Dataset, threshold_params: dict[str, Any]) -> tuple[Any, pd.DataFrame]:
    """Threshold a mean result and add cluster-level FWE p-values to its table.

    ``cluster_p_fwe`` is missing (NaN) where the result has no cluster-extent null
    (``attrs['cluster_null']`` false), rather than a p-value against maxima that are all 0.
    """
    from daskmeta.inference.thresholding import threshold
    from daskmeta.stats.pvalues import cluster_p_fwe

    found = threshold(result, p=threshold_params["p"], peak_z=threshold_params["peak_z"],
                      extent=threshold_params["extent"], mask=result.attrs["mask"])
    table = found.table.copy()
    if not result.attrs.get("cluster_null", True):
        # no cluster-extent null ran (no sample sizes or peaks, or voxel_p=None): no p-value
        table["cluster_p_fwe"] = np.nan
        return found, table
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


def write_maps(result: xr.Dataset, found: Any, table: pd.DataFrame, out_dir: str | os.PathLike,
               variables: tuple[str, ...]) -> Path:
    """``variables`` as NIfTI, the thresholded z, the cluster labels and ``clusters.tsv``."""
    out_dir = Path(out_dir)
    mask = result.attrs["mask"]
    for variable in variables:
        to_nifti(result[variable].values, out_dir / f"{variable}.nii.gz", mask=mask)
    to_nifti(np.where(found.labels != 0, result["z"].values, 0.0), out_dir / "z_thresholded.nii.gz",
             mask=mask)
    to_nifti(found.labels.astype(np.int16), out_dir / "clusters.nii.gz", mask=mask)
    write_table(table, out_dir / "clusters.tsv")
    return out_dir


def write_analysis(result: xr.Dataset, found: Any, table: pd.DataFrame, out_dir: str | os.PathLike,
                   threshold_params: dict[str, Any]) -> dict[str, Any]:
    """Maps, thresholded maps, ``clusters.tsv`` and the report of a mean analysis."""
    from daskmeta.report.summary import write_report

    out_dir = write_maps(result, found, table, out_dir, MEAN_MAPS)
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


#: Maps of a linear model (meta-regression or comparison) written as ``<name>.nii.gz``.
LINEAR_MODEL_MAPS = ("z", "p", "p_slope", "slope", "effect_0", "z_0", "p_0", "effect_1", "z_1", "p_1",
                     "tau2", "q_e")


def overlap_flags(table: pd.DataFrame, labels: np.ndarray, other: np.ndarray) -> list[bool]:
    """For each row's cluster, whether any of its voxels is set in ``other`` (a bool vector)."""
    signed = np.where(table["direction"] == "positive", table["cluster"], -table["cluster"])
    return [bool(other[labels == label].any()) for label in signed]


def write_linear_model(result: xr.Dataset, maps: xr.Dataset, threshold_params: dict[str, Any],
                       out_dir: str | os.PathLike, mean_labels: np.ndarray | None = None,
                       heterogeneous: np.ndarray | None = None) -> dict[str, Any]:
    """Maps, ``clusters.tsv`` and a scatter plot per cluster peak of a linear model.

    For meta-regressions the table says whether each cluster overlaps a cluster of the mean
    analysis (``overlaps_mean``) or voxels of significant heterogeneity
    (``overlaps_heterogeneity``), as SDM advises (docs/methods.md, section 8).
    """
    from daskmeta.inference.bias import extract
    from daskmeta.inference.thresholding import threshold
    from daskmeta.model.grid import load_mask, mm_to_ijk
    from daskmeta.report.plots import scatter_plot
    from daskmeta.stats.regression import original_units

    out_dir = Path(out_dir)
    mask = result.attrs["mask"]
    for variable in LINEAR_MODEL_MAPS:
        to_nifti(result[variable].values, out_dir / f"{variable}.nii.gz", mask=mask)
    found = threshold(result, p=threshold_params["p"], peak_z=threshold_params["peak_z"],
                      extent=threshold_params["extent"], mask=mask)
    table = found.table.drop(columns=["heterogeneity"], errors="ignore")
    if mean_labels is not None:
        table["overlaps_mean"] = overlap_flags(table, found.labels, mean_labels != 0)
    if heterogeneous is not None:
        table["overlaps_heterogeneity"] = overlap_flags(table, found.labels, heterogeneous)
    table["scatter"] = ""
    peaks = table[table["peak_type"] == "cluster"]
    if len(peaks):
        studies = list(result.attrs["studies"])
        values = extract(maps, peaks[["x", "y", "z"]].to_numpy(float), studies).compute()
        covariate = np.asarray(result.attrs["covariate"], dtype=np.float64)
        label = result.attrs["regressor"] or "group (0 = A, 1 = B)"
        lookup = load_mask(mask).lookup
        for n, (_, row) in enumerate(peaks.iterrows()):
            voxel = int(lookup[tuple(mm_to_ijk(row[["x", "y", "z"]].to_numpy(float))[0])])
            intercept, slope = original_units(result.effect_0.values[voxel], result.slope.values[voxel],
                                              result.attrs["low"], result.attrs["high"])
            name = f"scatter_cluster{int(row['cluster'])}.png"
            scatter_plot(covariate, values.effect.values[n], values.variance.values[n], intercept, slope,
                         out_dir / name, xlabel=label,
                         title=f"{result.attrs['name']}: cluster {int(row['cluster'])} "
                               f"({row['x']:.0f}, {row['y']:.0f}, {row['z']:.0f})")
            table.loc[table["cluster"] == row["cluster"], "scatter"] = name
    write_table(table, out_dir / "clusters.tsv")
    return {"clusters": table, "labels": found.labels, "out": out_dir}
