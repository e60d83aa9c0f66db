"""``report.html``: the interactive, self-contained report of one analysis.

One HTML file per analysis folder, written beside the maps and tables of that folder: an
offline slice viewer of the z map (thresholded and unthresholded, :mod:`daskmeta.report.viewer`),
the sortable peaks table (one row per peak, as ``clusters.tsv``, each with a link that moves
the viewer to the peak), one section per cluster with its funnel or scatter plot, Egger
test and jackknife row, and the Methods paragraph with its references. The JavaScript and
CSS are embedded; the plots are the PNG files beside the report, referenced by relative
path; nothing is loaded from the network.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from daskmeta.report.citations import REFERENCES
from daskmeta.report.viewer import asset, viewer_data, viewer_html

REPORT_NAME = "report.html"
#: Columns of ``clusters.tsv`` not shown in the peaks table (shown per cluster instead).
HIDDEN_COLUMNS = ("breakdown", "scatter")
_P_COLUMNS = ("p", "p_fwe", "cluster_p_fwe", "egger_p", "p_slope")
#: References of the linear models and the multimodal overlap, beyond :data:`REFERENCES`.
EXTRA_REFERENCES = {
    "raudenbush": "Raudenbush SW. Analyzing effect sizes: random-effects models. In: Cooper H, Hedges LV, "
                  "Valentine JC, eds. The Handbook of Research Synthesis and Meta-Analysis. 2nd ed. "
                  "Russell Sage Foundation; 2009:295-315.",
    "thompson": "Thompson SG, Higgins JPT. How should meta-regression analyses be undertaken and "
                "interpreted? Stat Med 2002;21:1559-1573.",
    "multimodal": "Radua J, Romeo M, Mataix-Cols D, Fusar-Poli P. A general approach for combining "
                  "voxel-based meta-analyses conducted in different neuroimaging modalities. Curr Med "
                  "Chem 2013;20:462-466.",
    "clopper": "Clopper CJ, Pearson ES. The use of confidence or fiducial limits illustrated in the "
               "case of the binomial. Biometrika 1934;26:404-413.",
}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(column: str, value: Any) -> str:
    """A table cell as text: p-values in 3 decimals or scientific, floats in 3 decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        if column in _P_COLUMNS or column.startswith("p_"):
            return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.3f}"
    return str(value)


def table_html(table: pd.DataFrame, peaks: bool = False, css: str = "sortable", anchors: bool = True) -> str:
    """A sortable HTML table; with ``peaks``, one ``<tr data-cluster>`` per peak and a link
    that moves the viewer to it (and, with ``anchors``, cluster numbers link to their section)."""
    columns = [c for c in table.columns if not (peaks and c in HIDDEN_COLUMNS)]
    head = ("<th>view</th>" if peaks else "") + "".join(f"<th>{esc(c)}</th>" for c in columns)
    rows = []
    for record in table.to_dict("records"):
        cells = []
        if peaks:
            xyz = ",".join(str(int(record[a])) for a in "xyz")
            cells.append(f'<td><a class="goto" href="#viewer" data-xyz="{xyz}" '
                         f'title="move the viewer to this peak">({xyz.replace(",", ", ")})</a></td>')
        for column in columns:
            value = record[column]
            number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
            sort = f' data-sort="{float(value):.6g}"' if number and np.isfinite(value) else ""
            text = esc(fmt(column, value))
            if peaks and anchors and column == "cluster":
                text = f'<a href="#cluster-{int(value)}">{text}</a>'
            cells.append(f'<td{" class=num" if number else ""}{sort}>{text}</td>')
        attrs = ""
        if peaks:
            attrs = f' data-cluster="{int(record["cluster"])}"'
            attrs += ' class="sub"' if record.get("peak_type") == "sub" else ""
        rows.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    return (f'<div class="table-wrap"><table class="{css}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def page(title: str, body: str, nav: list[tuple[str, str]] | None = None) -> str:
    """A whole self-contained HTML document: CSS and the viewer/table script embedded."""
    links = "".join(f'<a href="{esc(href)}">{esc(text)}</a>' for href, text in nav or [])
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><link rel=\"icon\" href=\"data:,\">"
        f"<style>{asset('report.css')}</style></head><body>"
        f'<nav class="top">{links}</nav>{body}'
        f"<script>{asset('viewer.js')}</script></body></html>\n"
    )


def write_page(path: Path, title: str, body: str, nav: list[tuple[str, str]] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page(title, body, nav), encoding="utf-8")
    tmp.replace(path)
    return path


def references_html(references: list[str]) -> str:
    return '<ol class="refs">' + "".join(f"<li>{esc(r)}</li>" for r in references) + "</ol>"


def _read_tsv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""]) if path.exists() else None


def _cluster_sections(table: pd.DataFrame, out_dir: Path) -> str:
    """One section per cluster: peak, breakdown, plots, Egger test and jackknife row."""
    egger = _read_tsv(out_dir / "egger.tsv")
    jackknife = _read_tsv(out_dir / "jackknife.tsv")
    parts = []
    for record in table[table["peak_type"] == "cluster"].to_dict("records"):
        n = int(record["cluster"])
        xyz = ",".join(str(int(record[a])) for a in "xyz")
        head = (f'<h3>Cluster {n}: {esc(record["direction"])}, {int(record["voxels"])} voxels, peak '
                f'<a class="goto" href="#viewer" data-xyz="{xyz}">MNI ({xyz.replace(",", ", ")})</a>, '
                f'SDM-Z {record["sdm_z"]:.3f}, {esc(record.get("region") or "")}</h3>')
        text = [f'<p class="note">{esc(record.get("breakdown") or "")}</p>']
        plots = [f'<img src="{name}" alt="{name}" loading="lazy">'
                 for name in (f"funnel_cluster{n}.png", f"scatter_cluster{n}.png")
                 if (out_dir / name).exists()]
        side = []
        if egger is not None and len(egger):
            row = egger[egger["cluster"] == n]
            if len(row):
                columns = [c for c in ("k", "pooled_effect", "egger_intercept", "egger_t", "egger_df",
                                       "egger_p", "bias_suggested", "note") if c in row.columns]
                side.append("<h4>Egger's test at the peak</h4>" + table_html(row[columns], css="egger"))
        if jackknife is not None and len(jackknife):
            row = jackknife[jackknife["cluster"] == n]
            if len(row):
                studies = [c for c in row.columns if c not in ("cluster", "direction", "replicated", "runs")]
                kept = pd.DataFrame({"left out": studies,
                                     "cluster found": [bool(row.iloc[0][s]) for s in studies]})
                lost = [s for s in studies if not bool(row.iloc[0][s])]
                summary = (f"replicated in {int(row.iloc[0]['replicated'])}/{int(row.iloc[0]['runs'])} runs"
                           + (f"; lost without {', '.join(lost)}" if lost else ""))
                side.append(f"<h4>Jackknife</h4><p>{esc(summary)}</p>" + table_html(kept, css="sortable"))
        parts.append(f'<section class="cluster" id="cluster-{n}">{head}{"".join(text)}'
                     f'<div class="plots">{"".join(plots)}<div>{"".join(side)}</div></div></section>')
    return "".join(parts)


def _num(value: Any) -> str:
    return f"{float(value):g}" if isinstance(value, int | float | np.integer | np.floating) else str(value)


def linear_model_methods(result: Any, threshold: dict[str, Any]) -> tuple[str, list[str]]:
    """Methods paragraph and references of a meta-regression or group comparison."""
    attrs = result.attrs
    regressor = attrs.get("regressor") or ""
    where = attrs.get("where") or ""
    chosen = f"the studies selected by `{where}`" if where else "all studies"
    if regressor:
        model = (f"The study maps ({int(attrs['n_studies'])} studies, {chosen}) were regressed voxel-wise "
                 f"on {regressor}, rescaled to [0, 1] between its minimum {_num(attrs.get('low'))} and "
                 f"maximum {_num(attrs.get('high'))}, by random-effects weighted least squares with the "
                 "method-of-moments between-study variance (Raudenbush 2009); SDM-Z is the Wald z of the "
                 "slope. As in SDM, a slope was reported only where the prediction at one extreme of the "
                 f"covariate was significant (p < {_num(attrs.get('check_p'))}) with the slope's sign.")
        if attrs.get("dropped"):
            model += f" Studies without {regressor} were left out: {', '.join(attrs['dropped'])}."
    else:
        groups = list(attrs.get("groups") or [])
        model = (f"Two groups of studies ({int(attrs['n_studies'])} in all; group A: `{groups[0]}`, "
                 f"group B: `{groups[1]}`) were compared voxel-wise by a random-effects linear model "
                 "with a 0/1 group indicator (Raudenbush 2009); SDM-Z is the Wald z of B - A."
                 if len(groups) == 2 else "Two groups of studies were compared voxel-wise.")
    text = (f"{model} Significance was assessed against {int(attrs['permutations'])} randomizations "
            f"(seed {_num(attrs.get('seed'))}, engine {attrs.get('null_engine', 'reference')}) that "
            "relocated each study's map with its covariate (Radua et al. 2012), thresholded at voxel "
            f"p < {_num(threshold['p'])}, peak |SDM-Z| >= {_num(threshold['peak_z'])} and >= "
            f"{_num(threshold['extent'])} voxels (daskmeta {attrs.get('daskmeta_version', '')}; "
            "docs/methods.md, sections 5, 6 and 8).")
    if regressor:
        text += (" At each cluster peak, a bubble plot shows the studies' effects against the covariate, "
                 "marker area proportional to 1/variance (Thompson & Higgins 2002).")
    refs = [REFERENCES[0], REFERENCES[1], REFERENCES[2], EXTRA_REFERENCES["raudenbush"],
            EXTRA_REFERENCES["thompson"]]
    return text, refs


def multimodal_methods(result: Any, threshold: dict[str, Any]) -> tuple[str, list[str]]:
    attrs = result.attrs
    first, second = list(attrs.get("of") or ["first", "second"])[:2]
    text = (f"The mean analyses {first} and {second} were overlapped voxel-wise (Radua et al. 2013): each "
            "one-tailed randomization p-value was replaced by its one-sided upper 95% Clopper-Pearson "
            "bound (Clopper & Pearson 1934), the two bounds combined as p = u1 + u2 - u1 u2, and voxels "
            "where both maps have the same sign thresholded as a mean map (voxel p < "
            f"{_num(threshold['p'])}, peak |SDM-Z| >= {_num(threshold['peak_z'])}, >= "
            f"{_num(threshold['extent'])} voxels), with the smaller |z| as SDM-Z; voxels of opposite "
            "signs are reported in the second table (docs/methods.md, section 10).")
    return text, [REFERENCES[0], REFERENCES[1], EXTRA_REFERENCES["multimodal"], EXTRA_REFERENCES["clopper"]]


def _methods(result: Any, table: pd.DataFrame, threshold: dict[str, Any]) -> tuple[str, list[str]]:
    kind = result.attrs.get("type", "mean")
    if kind == "mean":
        from daskmeta.report.summary import _sensitivity_text, methods_text

        return methods_text(result, threshold) + _sensitivity_text(table, result), list(REFERENCES)
    if kind == "multimodal":
        return multimodal_methods(result, threshold)
    if kind == "psi":
        from daskmeta.report.psi_report import psi_methods_text, psi_references

        return psi_methods_text(result, threshold), psi_references(result)
    return linear_model_methods(result, threshold)


def _psi_null_section(attrs: dict[str, Any], out_dir: Path) -> list[str]:
    """The permutation null of an SDM-PSI page: its figure, or why there is none."""
    permutations = int(attrs.get("permutations", 0))
    head = '<h2 id="null">Permutation null</h2>'
    if not permutations:
        return [head, "<p>No permutation was run (<code>permutations: 0</code>): there is no null "
                "distribution and no family-wise corrected p-value, so clusters can only be cut on the "
                "uncorrected p (<code>threshold: {fwe: none}</code>).</p>"]
    if not (out_dir / "null_maxima.png").exists():
        return [head, f"<p>{permutations} permutations; their figure (null_maxima.png) was not written.</p>"]
    note = (f"The largest and smallest z and TFCE over the mask in each of the {permutations} "
            "permutations of the subject images (grey histograms), the observed map's extremes (red) "
            "and the family-wise 0.05 critical values (dashed: the 95th percentile of the maxima, the "
            "5th of the minima). A voxel's p_fwe_voxel (p_fwe_tfce) is the share of permutations, "
            "counting the observed one, whose extreme z (TFCE) of its sign is at least as extreme as "
            "the voxel's own.")
    return [head, f'<p class="note">{esc(note)}</p>',
            '<img class="figure" src="null_maxima.png" alt="histograms of the permutation null maxima">']


def _peaks(table: pd.DataFrame) -> list[dict[str, Any]]:
    keep = [c for c in ("cluster", "direction", "peak_type", "x", "y", "z", "sdm_z", "region") if c in table]
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in table[keep].to_dict("records")]


def write_html_report(
    result: Any, labels: np.ndarray, table: pd.DataFrame, out_dir: str | Path, threshold: dict[str, Any],
    extra_tables: dict[str, pd.DataFrame] | None = None, index: str | None = "../index.html",
) -> Path:
    """Write ``out_dir/report.html`` for one analysis.

    Parameters
    ----------
    result : xarray.Dataset
        The computed analysis: ``z`` over ``voxel`` and the ``attrs`` of its kind (``type``
        ``mean``, ``regression``, ``compare``, ``multimodal`` or ``psi``).
    labels : ndarray
        Signed cluster label of each voxel (:attr:`daskmeta.inference.thresholding.Thresholded.labels`).
    table : pandas.DataFrame
        The peaks table written to ``clusters.tsv`` (one row per peak).
    out_dir : path
        The analysis folder, holding its plots (``funnel_cluster<N>.png``,
        ``scatter_cluster<N>.png``), ``egger.tsv`` and ``jackknife.tsv`` when they exist.
    threshold : dict
        ``{"p", "peak_z", "extent"}``; for ``psi`` also ``fwe``, the map the clusters were
        cut on (:data:`daskmeta.report.psi_report.FWE_MAPS`).
    extra_tables : dict, optional
        Further tables shown after the peaks table (title -> table), e.g. the opposite-sign
        clusters of a multimodal overlap.
    index : str, optional
        Relative link to the run's ``index.html`` (None: no link).

    Notes
    -----
    An SDM-PSI result (``type: psi``) shows, like the other kinds, its signed z map (SDM-Z)
    in the viewer, with the clusters cut on a family-wise corrected p (``p_fwe_tfce`` by
    default), which the rule line names: SDM-PSI reads its SDM-Z map thresholded by the
    corrected p, not TFCE values, whose scale has no meaning of its own (see
    :func:`daskmeta.app.psi_workflow.run_psi`). Its page adds the histograms of the
    permutation null (``null_maxima.png``) and its own Methods and References
    (:mod:`daskmeta.report.psi_report`).
    """
    out_dir = Path(out_dir)
    attrs = result.attrs
    name = str(attrs.get("name", out_dir.name))
    kind = str(attrs.get("type", "mean"))
    rule = (f"voxel p &lt; {_num(threshold['p'])}, peak |SDM-Z| &ge; {_num(threshold['peak_z'])}, "
            f"&ge; {_num(threshold['extent'])} voxels")
    if kind == "psi":
        from daskmeta.report.psi_report import psi_rule

        rule = esc(psi_rule(threshold))
    n_clusters = int(table["cluster"].nunique()) if len(table) else 0
    data = viewer_data(result["z"].values, labels, str(attrs["mask"]), _peaks(table))
    methods, refs = _methods(result, table, threshold)
    studies = attrs.get("studies")
    facts = [f"{kind}", f"{n_clusters} cluster(s), {len(table)} peak(s) at {rule}"]
    if kind == "psi":
        facts[0] = (f"SDM-PSI ({kind}): {int(attrs['imputations'])} imputations, "
                    f"{int(attrs['permutations'])} permutations of subject images, seed {int(attrs['seed'])}")
    if studies is not None and not isinstance(studies, str):
        facts.append(f"{len(list(studies))} studies: {esc(', '.join(map(str, studies)))}")
    body = [
        f"<h1>{esc(name)}</h1>",
        "<p>" + "; ".join(facts) + ".</p>",
        "<h2>Brain viewer</h2>",
        '<p class="note">Click a slice to move the cross-hair; the line below says which cluster holds the '
        "voxel and links to it. <em>Thresholded</em> shows the reported clusters, <em>unthresholded</em> "
        "the whole z map (hide small |z| with the slider). Left hemisphere on the left.</p>",
        viewer_html(data),
        f"<h2>Peaks ({len(table)})</h2>",
        '<p class="note">One row per peak, as clusters.tsv; click a column title to sort, a coordinate '
        "to show the peak in the viewer, a cluster number for its plots and tables.</p>",
        table_html(table, peaks=True) if len(table) else "<p>No cluster survived the thresholds.</p>",
    ]
    for title, extra in (extra_tables or {}).items():
        shown = table_html(extra, peaks=True, anchors=False) if len(extra) else "<p>None.</p>"
        body += [f"<h2>{esc(title)}</h2>", shown]
    if kind == "psi":
        body += _psi_null_section(attrs, out_dir)
    if n_clusters:
        body += ["<h2>Clusters</h2>", _cluster_sections(table, out_dir)]
    if (out_dir / "glass_brain.png").exists():
        body += ["<h2>Glass brain</h2>", '<img class="figure" src="glass_brain.png" alt="glass brain">']
    body += ['<h2 id="methods">Methods</h2>', f'<p class="methods">{esc(methods)}</p>',
             "<h2>References</h2>", references_html(refs)]
    nav = [(index, "\u2190 all analyses")] if index else []
    nav += [("#viewer", "viewer")] + ([("#null", "permutation null")] if kind == "psi" else [])
    nav += [("#methods", "methods")]
    return write_page(out_dir / REPORT_NAME, f"daskmeta: {name}", "\n".join(body), nav)
