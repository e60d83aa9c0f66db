"""Replication of an analysis' clusters: leave-one-out runs and sweep variants.

A cluster of the main analysis is replicated by a run (a leave-one-out jackknife run, a
sweep variant) that has a significant cluster of the same direction overlapping it by at
least one voxel (docs/methods.md, section 7).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from daskmeta.inference.thresholding import replicated, threshold


def replication(
    labels: np.ndarray, runs: xr.Dataset, p: float = 0.005, peak_z: float = 1.0, extent: int = 10
) -> pd.DataFrame:
    """In which leave-one-out runs each main-analysis cluster is found again.

    A cluster is replicated by a run that has a significant cluster of the same direction
    overlapping it by at least one voxel (docs/methods.md, section 7, chosen here).

    Parameters
    ----------
    labels : ndarray of int, (voxel,)
        The main analysis' signed cluster labels (+id positive, -id negative, 0 none), as
        :attr:`daskmeta.inference.thresholding.Thresholded.labels`.
    runs : xarray.Dataset
        The computed result of :func:`jackknife`.

    Returns
    -------
    pandas.DataFrame
        One row per (cluster, left-out study): ``cluster``, ``direction``, ``left_out``,
        ``replicated`` (bool).
    """


    rows = []
    for j, study in enumerate(runs.left_out.values):
        found = threshold(runs.isel(left_out=j), p=p, peak_z=peak_z, extent=extent, atlas=False).labels
        for cluster, again in replicated(labels, found).items():
            rows.append({"cluster": abs(cluster), "direction": "positive" if cluster > 0 else "negative",
                         "left_out": str(study), "replicated": again})
    return pd.DataFrame(rows, columns=["cluster", "direction", "left_out", "replicated"])


def replication_counts(detail: pd.DataFrame, k: int) -> dict[int, str]:
    """``{cluster: "replicated/k"}`` from :func:`replication`'s table (e.g. ``"21/24"``)."""
    counts = detail.groupby("cluster")["replicated"].sum()
    return {int(cluster): f"{int(count)}/{k}" for cluster, count in counts.items()}


def variant_labels(result: xr.Dataset) -> np.ndarray:
    """Signed cluster labels of every variant, ``(variant, voxel)``.

    Each variant is thresholded with its own ``voxel_p``, ``peak_z`` and ``extent``.
    """


    labels = np.zeros((result.sizes["variant"], result.sizes["voxel"]), dtype=np.int32)
    for n in range(result.sizes["variant"]):
        row = result.isel(variant=n).assign_attrs(mask=result.attrs["mask"])
        labels[n] = threshold(row, p=float(row.voxel_p), peak_z=float(row.peak_z),
                              extent=int(row.extent), atlas=False).labels
    return labels


def stability(result: xr.Dataset, labels: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """For each cluster of the reference variant, the variants in which it survives.

    A cluster survives a variant that has a significant cluster of the same sign
    overlapping it by at least one voxel (:func:`daskmeta.inference.thresholding.replicated`), each
    variant thresholded with its own thresholds.

    Parameters
    ----------
    result : xarray.Dataset
        A computed sweep.
    labels : ndarray, optional
        :func:`variant_labels` of ``result``, when already computed.

    Returns
    -------
    summary : pandas.DataFrame
        One row per reference cluster: its peak, size and region, ``survived`` (count),
        ``variants`` and ``fraction``.
    detail : pandas.DataFrame
        Clusters x variants of booleans.
    reference : Thresholded
        The reference variant's thresholded result (with atlas labels).
    """


    labels = variant_labels(result) if labels is None else labels
    row = int(np.flatnonzero(result.coords["reference"].values)[0])
    reference = result.isel(variant=row).assign_attrs(mask=result.attrs["mask"])
    ref = threshold(reference, p=float(reference.voxel_p), peak_z=float(reference.peak_z),
                    extent=int(reference.extent))
    found = {int(v): replicated(ref.labels, labels[n]) for n, v in enumerate(result.variant.values)}
    clusters = [abs(c) for c in replicated(ref.labels, ref.labels)]
    detail = pd.DataFrame({v: list(f.values()) for v, f in found.items()}, index=clusters)
    detail.index.name = "cluster"
    peaks = ref.table[ref.table["peak_type"] == "cluster"].set_index("cluster")
    summary = peaks.loc[detail.index, ["direction", "x", "y", "z", "sdm_z", "voxels", "region"]].copy()
    summary["survived"] = detail.sum(axis=1).astype(int)
    summary["variants"] = detail.shape[1]
    summary["fraction"] = summary["survived"] / summary["variants"]
    return summary.reset_index(), detail.reset_index(), ref


def significant_fraction(result: xr.Dataset, labels: np.ndarray | None = None) -> np.ndarray:
    """Per voxel, the share of variants in which it lies in a significant cluster."""
    labels = variant_labels(result) if labels is None else labels
    return (labels != 0).mean(axis=0)
