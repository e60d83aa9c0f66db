"""Running an SDM-PSI analysis of a configuration: compute or resume, write, export."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from daskmeta.app.config import PsiAnalysis
from daskmeta.app.workflow_common import computed, names_of


def psi_key(settings: PsiAnalysis, maps_attrs: dict[str, Any]) -> str:
    """What a PSI result depends on: its settings (not the threshold) and the study maps."""
    material = {
        "settings": {k: v for k, v in asdict(settings).items() if k != "threshold"},
        "studies_hash": maps_attrs.get("studies_hash"),
        "preprocess": {k: maps_attrs.get(k) for k in ("fwhm", "anisotropy", "beta", "mask")},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_psi(name: str, settings: PsiAnalysis, maps: Any, store: str | os.PathLike, out: os.PathLike,
            client: Any = None, force: bool = False) -> dict[str, Any]:
    """Compute (or resume) one SDM-PSI analysis, threshold it and write its outputs.

    Clusters are cut on ``p_fwe_tfce`` (default), ``p_fwe_voxel`` or ``p``, as the analysis'
    ``threshold.fwe`` says (docs/methods.md, section 14.4). The outputs are the maps,
    ``clusters.tsv``, ``summary.md``, ``null_maxima.png`` (the permutation null),
    ``glass_brain.png`` (:func:`daskmeta.report.psi_report.write_psi_outputs`) and
    ``report.html`` (:func:`daskmeta.report.html.write_html_report`).

    The page's viewer shows the signed z map (SDM-Z), thresholded by the clusters of the
    chosen map: an SDM-PSI user reads the SDM-Z map where the FWE-corrected p (of TFCE by
    default) is below 0.05, as SDM's own outputs do. The TFCE values themselves are not
    shown there: their scale depends on cluster size and smoothness and has no reading of
    its own (they are in ``tfce.nii.gz`` and the null figure).

    In ``clusters.tsv`` (one row per peak), ``p`` is the uncorrected normal p at the peak,
    ``p_fwe_voxel`` and ``p_fwe_tfce`` its family-wise corrected p-values; the always-false
    ``heterogeneity`` flag of the AES-SDM tables (PSI has no Q-test p) is left out.

    Parameters
    ----------
    name : str
        The analysis' name: its store group ``analyses/NAME`` and folder ``out/NAME``.
    settings : PsiAnalysis
        Its configuration.
    maps : xarray.Dataset
        The preprocessed study maps (the store's ``studies`` group).
    store, out : path
        The Zarr store and the run's output folder.
    client : distributed.Client, optional
        Where to compute (progress bar); None: the current scheduler.
    force : bool
        Recompute even when the store holds a result with the same key.

    Returns
    -------
    dict
        As :func:`daskmeta.report.psi_report.write_psi_outputs` (``clusters``, ``labels``,
        ``report``, ``null_figure``, ``out``), and ``html``, the path of ``report.html``.
    """
    from daskmeta.analyses.psi import psi
    from daskmeta.inference.thresholding import threshold
    from daskmeta.report.html import write_html_report
    from daskmeta.report.psi_report import FWE_MAPS, write_psi_outputs

    params = asdict(settings.threshold)
    result = computed(
        store, f"analyses/{name}", psi_key(settings, dict(maps.attrs)),
        lambda: psi(maps, imputations=settings.imputations, permutations=settings.permutations,
                    seed=settings.seed, where=settings.where, studies=names_of(settings.studies),
                    regressors=list(settings.regressors) or None,
                    name=name, block_size=settings.block_size),
        f"daskmeta: {name}: SDM-PSI, {settings.imputations} imputations, "
        f"{settings.permutations} permutations", client, force)
    view = result.assign(p=result[FWE_MAPS[settings.threshold.fwe]].fillna(1.0))
    found = threshold(view, p=params["p"], peak_z=params["peak_z"], extent=params["extent"],
                      mask=result.attrs["mask"])
    table = found.table.drop(columns=["heterogeneity"], errors="ignore")
    voxels = _peak_voxels(found, result)
    for column in ("p", "p_fwe_voxel", "p_fwe_tfce"):
        table[column] = [float(result[column].values[v]) for v in voxels]
    output = write_psi_outputs(result, found, table, Path(out) / name, params)
    output["html"] = write_html_report(result, found.labels, table, output["out"], params,
                                       index="../" * (name.count("/") + 1) + "index.html")
    return output


def _peak_voxels(found: Any, result: Any) -> list[int]:
    """The voxel index of each row (peak) of a clusters table."""
    import numpy as np

    from daskmeta.model.grid import load_mask, mm_to_ijk

    mask = load_mask(result.attrs["mask"])
    ijk = mm_to_ijk(found.table[["x", "y", "z"]].to_numpy(dtype=np.float64))
    return [int(v) for v in mask.lookup[tuple(ijk.T)]] if len(ijk) else []
