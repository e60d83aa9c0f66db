"""Outputs of an SDM-PSI analysis: NIfTI maps, clusters, a methods paragraph and report.html.

The paragraph names every step and its parameters (docs/methods.md, section 14), so that a
user can cite exactly what ran. ``report.html`` is the page of the other kinds
(:func:`daskmeta.report.html.write_html_report`, which knows ``type: psi``) with the
histograms of the permutation null (:data:`NULL_FIGURE`) and a glass brain of the clusters.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from daskmeta.report.citations import PSI_REFERENCES, REFERENCES
from daskmeta.report.export import write_maps

#: Maps written as NIfTI.
PSI_MAPS = ("effect", "variance", "z", "p", "tau2", "i2", "q", "tfce", "p_fwe_voxel", "p_fwe_tfce")
#: The map each ``fwe`` choice thresholds.
FWE_MAPS = {"tfce": "p_fwe_tfce", "voxel": "p_fwe_voxel", "none": "p"}
#: The histograms of the permutation null's extremes, beside the maps.
NULL_FIGURE = "null_maxima.png"
#: The glass brain of the clusters, beside the maps (the name ``report.html`` shows).
GLASS_BRAIN = "glass_brain.png"
#: The null maxima of a PSI result, in the order of :func:`daskmeta.report.plots.psi_null_plot`.
NULL_VARIABLES = ("null_max_z", "null_min_z", "null_max_tfce", "null_min_tfce")


def _num(value: float) -> str:
    return f"{value:g}"


def psi_methods_text(result: xr.Dataset, threshold: dict[str, Any]) -> str:
    """The methods paragraph of an SDM-PSI result (its attributes and thresholds)."""
    attrs = result.attrs
    tfce = attrs.get("tfce", {})
    k, m, b = int(attrs["n_studies"]), int(attrs["imputations"]), int(attrs["permutations"])
    cut = {"tfce": "the family-wise error rate of TFCE", "voxel": "the family-wise error rate of z",
           "none": "the uncorrected p of z (normal reference)"}[threshold.get("fwe", "tfce")]
    text = (
        f"The {k} studies were meta-analysed with seed-based d mapping with permutation of subject "
        f"images (SDM-PSI; Albajes-Eizagirre, Solanes, Vieta & Radua 2019) as implemented in daskmeta "
        f"{attrs.get('daskmeta_version', '')}. At each voxel, the mean effect and the between-study "
        f"variance were estimated by maximum likelihood from the studies' known effects and the "
        f"intervals within which their unreported effects lie, with SDM-PSI's leave-one-out "
        f"protection (Albajes-Eizagirre, Solanes & Radua 2019); these estimates were smoothed with a "
        f"Gaussian of {_num(attrs['fwhm'])} mm FWHM. "
        f"{m} imputations of every study map were drawn from the truncated normal distributions "
        f"within each study's bounds, through spatially coherent uniform fields smoothed with the "
        f"same kernel. Each study's map was then represented by preliminary subject images "
        f"(unit-variance noise with the neighbour correlations of a {_num(attrs.get('subject_fwhm', 8))} "
        f"mm FWHM smoothness along tissue-aware steps, standardised, plus the imputed "
        f"standardised effect), so that each study's group analysis reproduces its imputed Hedges g. "
        f"Each imputation was pooled by a DerSimonian-Laird random-effects model and the "
        f"imputations were combined by Rubin's rules (Rubin 1987; heterogeneity Q by the D2 rule of "
        f"Li et al. 1991; tau2 and I2 "
        f"as the square of the mean of their square roots). Threshold-free cluster enhancement "
        f"(Smith & Nichols 2009; E = {_num(tfce.get('E', 0.5))}, H = {_num(tfce.get('H', 2))}, "
        f"dh = {_num(tfce.get('dh', 0.1))}, 26-connectivity) was computed on the pooled z map."
    )
    regressors = list(attrs.get("regressors") or [])
    if regressors:
        return _linear_model_text(text, regressors, attrs, b, cut, threshold)
    if b:
        text += (
            f" Family-wise corrected p-values came from {b} permutations of the subject images "
            f"(sign flips in one-sample studies, relabelling of patients and controls in two-sample "
            f"studies; the same permutation for every imputation), each recording the largest "
            f"positive and negative z and TFCE values (Nichols & Holmes 2002)."
        )
    else:
        text += " No permutation was run, so no family-wise corrected p-value was computed."
    return text + _clusters_sentence(cut, threshold)


def _clusters_sentence(cut: str, threshold: dict[str, Any]) -> str:
    return (
        f" Clusters were formed by the voxels with {cut} below {_num(threshold['p'])}"
        + (f", a peak |z| of at least {_num(threshold['peak_z'])}" if threshold.get("peak_z") else "")
        + (f" and at least {int(threshold['extent'])} voxels" if int(threshold.get("extent", 1)) > 1 else "")
        + "."
    )


def _linear_model_text(mean_text: str, regressors: list[str], attrs: dict[str, Any], b: int, cut: str,
                       threshold: dict[str, Any]) -> str:
    """The methods paragraph of a PSI linear model (docs/methods.md, section 14.5)."""
    tested, others = regressors[0], regressors[1:]
    covariates = (f", with {', '.join(others)} as covariate{'s' if len(others) > 1 else ''} of no "
                  f"interest" if others else "")
    model = (f" The effect of {tested}{covariates} was tested by a linear model: every regressor was "
             f"rescaled to [0, 1], the maximum-likelihood estimates were those of the model (the "
             f"leave-one-out protection acting on the coefficient of {tested}), and each imputation "
             f"was fitted by a random-effects meta-regression (method-of-moments tau2, Wald "
             f"variances) whose coefficient of {tested} was combined across imputations by Rubin's "
             f"rules (Rubin 1987; residual heterogeneity Q by the D2 rule of Li et al. 1991).")
    text = mean_text.replace(" Each imputation was pooled by a DerSimonian-Laird random-effects "
                             "model and the imputations were combined by Rubin's rules (Rubin 1987; "
                             "heterogeneity Q by the D2 rule of Li et al. 1991; tau2 and I2 as the "
                             "square of the mean of their square roots).", model)
    text = text.replace("the mean effect and the between-study variance were estimated",
                        "the model's coefficients and the between-study variance were estimated")
    text = text.replace("computed on the pooled z map.", f"computed on the pooled z map of {tested}.")
    if b:
        text += (f" Family-wise corrected p-values came from {b} Freedman-Lane permutations of the "
                 f"studies (Freedman & Lane 1983): the residuals of the model without {tested} were "
                 f"exchanged between studies, each with its study's variance model, the same "
                 f"permutation for every imputation and voxel; each permutation recorded the largest "
                 f"positive and negative z and TFCE values (Nichols & Holmes 2002).")
    else:
        text += " No permutation was run, so no family-wise corrected p-value was computed."
    return text + _clusters_sentence(cut, threshold)


def psi_rule(threshold: dict[str, Any]) -> str:
    """The clusters' thresholds as text, e.g. ``p_fwe_tfce < 0.05`` (peak and extent when set)."""
    rule = f"{FWE_MAPS[threshold.get('fwe', 'tfce')]} < {_num(float(threshold['p']))}"
    if threshold.get("peak_z"):
        rule += f", peak |SDM-Z| >= {_num(float(threshold['peak_z']))}"
    if int(threshold.get("extent", 1)) > 1:
        rule += f", >= {int(threshold['extent'])} voxels"
    return rule


def psi_references(result: xr.Dataset) -> list[str]:
    """The references of :func:`psi_methods_text`, in the order a report lists them."""
    refs = [PSI_REFERENCES["psi"], PSI_REFERENCES["unreported"], REFERENCES[3], REFERENCES[7],
            REFERENCES[8], PSI_REFERENCES["rubin"], PSI_REFERENCES["d2"], PSI_REFERENCES["tfce"]]
    if int(result.attrs.get("permutations", 0)):
        refs.append(REFERENCES[9])
        if result.attrs.get("regressors"):
            refs.append(PSI_REFERENCES["freedman_lane"])
    return refs + list(REFERENCES[10:13])  # the atlases that name the peaks' regions


def write_null_figure(result: xr.Dataset, out_dir: str | os.PathLike) -> Path | None:
    """``out_dir/null_maxima.png``: the permutation null's extremes against the observed map's.

    Returns None (and removes a figure left by an earlier run) without permutations.
    """
    from daskmeta.report.plots import psi_null_plot

    path = Path(out_dir) / NULL_FIGURE
    if not int(result.attrs.get("permutations", 0)) or any(v not in result for v in NULL_VARIABLES):
        path.unlink(missing_ok=True)
        return None
    z, tfce = (np.asarray(result[v].values, dtype=np.float64) for v in ("z", "tfce"))
    observed = [np.nanmax(z), np.nanmin(z), np.nanmax(tfce), np.nanmin(tfce)]
    attrs = result.attrs
    title = (f"{attrs.get('name', 'psi')}: SDM-PSI permutation null ({int(attrs['permutations'])} "
             f"permutations of subject images, {int(attrs['imputations'])} imputations)")
    return psi_null_plot(*(result[v].values for v in NULL_VARIABLES), observed, path, title=title)


def write_glass_brain(found: Any, threshold: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """``out_dir/glass_brain.png``: SDM-Z in the clusters, titled with the map they were cut on."""
    params = {FWE_MAPS[threshold.get("fwe", "tfce")]: float(threshold["p"]),
              "peak_z": float(threshold.get("peak_z") or 0.0), "extent": int(threshold.get("extent", 1))}
    path = Path(out_dir) / GLASS_BRAIN
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(dataclasses.replace(found, params=params).glass_brain_png())
    os.replace(tmp, path)
    return path


def write_psi_outputs(result: xr.Dataset, found: Any, table: pd.DataFrame, out_dir: str | os.PathLike,
                      threshold: dict[str, Any]) -> dict[str, Any]:
    """Maps (``.nii.gz``), ``clusters.tsv``, ``summary.md`` and the figures of an SDM-PSI result.

    The figures are ``null_maxima.png`` (:func:`write_null_figure`) and ``glass_brain.png``,
    which ``report.html`` shows (:func:`daskmeta.report.html.write_html_report`, written by
    :func:`daskmeta.app.psi_workflow.run_psi` after these).

    Parameters
    ----------
    result : xarray.Dataset
        The computed :func:`daskmeta.psi` result.
    found : Thresholded
        Its clusters, cut on the map ``threshold["fwe"]`` chooses (:data:`FWE_MAPS`).
    table : pandas.DataFrame
        The peaks table written to ``clusters.tsv``.
    out_dir : path
        The analysis folder.
    threshold : dict
        ``{"fwe", "p", "peak_z", "extent"}`` (:class:`daskmeta.app.config.PsiThreshold`).

    Returns
    -------
    dict
        ``clusters`` (the table), ``labels``, ``report`` (summary.md), ``null_figure``
        (None without permutations) and ``out``.
    """
    out_dir = write_maps(result, found, table, out_dir, PSI_MAPS)
    figure = write_null_figure(result, out_dir)
    write_glass_brain(found, threshold, out_dir)
    summary = out_dir / "summary.md"
    summary.write_text(
        f"# {result.attrs.get('name', 'psi')}: SDM-PSI\n\n"
        f"{len(table.drop_duplicates('cluster')) if len(table) else 0} cluster(s) "
        f"({FWE_MAPS[threshold.get('fwe', 'tfce')]} < {_num(threshold['p'])}); peaks in clusters.tsv.\n\n"
        f"## Methods\n\n{psi_methods_text(result, threshold)}\n"
    )
    return {"clusters": table, "labels": found.labels, "report": summary, "null_figure": figure,
            "out": out_dir}
