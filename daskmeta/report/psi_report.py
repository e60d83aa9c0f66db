"""Outputs of an SDM-PSI analysis: NIfTI maps, clusters, and a methods paragraph.

The paragraph names every step and its parameters (docs/methods.md, section 14), so that a
user can cite exactly what ran.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import xarray as xr

from daskmeta.report.export import write_maps

#: Maps written as NIfTI.
PSI_MAPS = ("effect", "variance", "z", "p", "tau2", "i2", "q", "tfce", "p_fwe_voxel", "p_fwe_tfce")
#: The map each ``fwe`` choice thresholds.
FWE_MAPS = {"tfce": "p_fwe_tfce", "voxel": "p_fwe_voxel", "none": "p"}


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
        f"images (SDM-PSI; Albajes-Eizagirre et al. 2019) as implemented in daskmeta "
        f"{attrs.get('daskmeta_version', '')}. At each voxel, the mean effect and the between-study "
        f"variance were estimated by maximum likelihood from the studies' known effects and the "
        f"intervals within which their unreported effects lie, with SDM-PSI's leave-one-out "
        f"protection; these estimates were smoothed with a Gaussian of {_num(attrs['fwhm'])} mm FWHM. "
        f"{m} imputations of every study map were drawn from the truncated normal distributions "
        f"within each study's bounds, through spatially coherent uniform fields smoothed with the "
        f"same kernel. Each study's map was then represented by preliminary subject images "
        f"(unit-variance noise with the neighbour correlations of a {_num(attrs.get('subject_fwhm', 8))} "
        f"mm FWHM smoothness along tissue-aware steps, standardised, plus the imputed "
        f"standardised effect), so that each study's group analysis reproduces its imputed Hedges g. "
        f"Each imputation was pooled by a DerSimonian-Laird random-effects model and the "
        f"imputations were combined by Rubin's rules (heterogeneity Q by the D2 rule; tau2 and I2 "
        f"as the square of the mean of their square roots). Threshold-free cluster enhancement "
        f"(Smith & Nichols 2009; E = {_num(tfce.get('E', 0.5))}, H = {_num(tfce.get('H', 2))}, "
        f"dh = {_num(tfce.get('dh', 0.1))}, 26-connectivity) was computed on the pooled z map."
    )
    if b:
        text += (
            f" Family-wise corrected p-values came from {b} permutations of the subject images "
            f"(sign flips in one-sample studies, relabelling of patients and controls in two-sample "
            f"studies; the same permutation for every imputation), each recording the largest "
            f"positive and negative z and TFCE values."
        )
    else:
        text += " No permutation was run, so no family-wise corrected p-value was computed."
    text += (
        f" Clusters were formed by the voxels with {cut} below {_num(threshold['p'])}"
        + (f", a peak |z| of at least {_num(threshold['peak_z'])}" if threshold.get("peak_z") else "")
        + (f" and at least {int(threshold['extent'])} voxels" if int(threshold.get("extent", 1)) > 1 else "")
        + "."
    )
    return text


def write_psi_outputs(result: xr.Dataset, found: Any, table: pd.DataFrame, out_dir: str | os.PathLike,
                      threshold: dict[str, Any]) -> dict[str, Any]:
    """Maps (``.nii.gz``), ``clusters.tsv`` and ``summary.md`` of an SDM-PSI result."""
    out_dir = write_maps(result, found, table, out_dir, PSI_MAPS)
    summary = out_dir / "summary.md"
    summary.write_text(
        f"# {result.attrs.get('name', 'psi')}: SDM-PSI\n\n"
        f"{len(table.drop_duplicates('cluster')) if len(table) else 0} cluster(s) "
        f"({FWE_MAPS[threshold.get('fwe', 'tfce')]} < {_num(threshold['p'])}); peaks in clusters.tsv.\n\n"
        f"## Methods\n\n{psi_methods_text(result, threshold)}\n"
    )
    return {"clusters": table, "labels": found.labels, "report": summary, "out": out_dir}
