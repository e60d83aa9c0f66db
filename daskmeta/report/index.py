"""``index.html`` of a run and ``report.html`` of a sensitivity sweep.

The index links every analysis report found under the run's output folder (those of this
run and of earlier ``--only`` runs or sweeps into the same folder), with the study table,
the parameters that ran and the notes and warnings of reading the studies. Like the
analysis reports, the pages are self-contained: no network access is needed to open them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from daskmeta.report.html import REPORT_NAME, esc, table_html, write_page
from daskmeta.report.viewer import viewer_data, viewer_html

INDEX_NAME = "index.html"
#: Files of an analysis folder linked from its row, where they exist (``null_maxima.png``: SDM-PSI).
LINKED_FILES = ("summary.md", "clusters.tsv", "stability.tsv", "null_maxima.png")


def _reports(out: Path) -> list[Path]:
    """Every ``report.html`` under ``out``, analyses first, regressions after their mean."""
    found = [p for p in out.rglob(REPORT_NAME) if not p.name.startswith(".")]
    return sorted(found, key=lambda p: (p.parent.relative_to(out).parts[0] == "sweeps",
                                        str(p.parent.relative_to(out))))


def _analysis_row(out: Path, report: Path, kinds: dict[str, str]) -> dict[str, Any]:
    folder = report.parent
    name = folder.relative_to(out).as_posix()
    row: dict[str, Any] = {"analysis": name, "type": kinds.get(name, "")}
    if not row["type"]:
        row["type"] = ("sweep" if name.startswith("sweeps/") else
                       "regression" if "/regression_" in name else
                       "psi" if (folder / "p_fwe_tfce.nii.gz").exists() else "")
    clusters = folder / "clusters.tsv"
    if clusters.exists():
        table = pd.read_csv(clusters, sep="\t")
        heads = table[table["peak_type"] == "cluster"] if len(table) else table
        row["clusters"] = len(heads)
        row["positive"] = int((heads["direction"] == "positive").sum()) if len(heads) else 0
        row["negative"] = int((heads["direction"] == "negative").sum()) if len(heads) else 0
        row["peaks"] = len(table)
    elif (folder / "stability.tsv").exists():
        stability = pd.read_csv(folder / "stability.tsv", sep="\t")
        row["clusters"] = len(stability)
    return row


def _links_table(out: Path, rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("analysis", "type", "clusters", "positive", "negative",
                                              "peaks", "files"))
    body = []
    for row in rows:
        name = row["analysis"]
        files = [f'<a href="{esc(name)}/{f}">{f}</a>' for f in LINKED_FILES if (out / name / f).exists()]
        cells = [f'<a href="{esc(name)}/{REPORT_NAME}">{esc(name)}</a>', esc(row["type"])]
        cells += [esc(row.get(c, "")) for c in ("clusters", "positive", "negative", "peaks")]
        cells.append(" ".join(files))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<div class="table-wrap"><table class="sortable" id="analyses"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _parameters(parameters: dict[str, Any]) -> str:
    items = []
    for key, value in parameters.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k}: {v}" for k, v in value.items() if v not in (None, (), [], ""))
            items.append(f"<li><b>{esc(key)}</b>: {esc(inner)}</li>")
        else:
            items.append(f"<li><b>{esc(key)}</b>: {esc(value)}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def write_index(
    out: str | Path,
    studies: Any,
    parameters: dict[str, Any],
    kinds: dict[str, str] | None = None,
    title: str = "daskmeta run",
) -> Path:
    """Write ``out/index.html``: links to every analysis report, studies, parameters, notes.

    Parameters
    ----------
    out : path
        The run's output folder.
    studies : StudySet
        The studies read (their table, peak counts and ``log`` of notes and warnings).
    parameters : dict
        What ran, shown as a list: ``{"config": ..., "preprocess": {...}, "threshold": {...},
        "analysis NAME": {...}}``.
    kinds : dict, optional
        The type of each analysis by its folder name (``mean``, ``compare`` ...).
    """
    out = Path(out)
    rows = [_analysis_row(out, report, kinds or {}) for report in _reports(out)]
    table = studies.studies.copy()
    counts = studies.peaks.groupby("study").size()
    table.insert(1, "peaks", table["study"].map(counts).fillna(0).astype(int))
    if "map" in table.columns and not (table["map"].fillna("") != "").any():
        table = table.drop(columns=["map", "map_stat"], errors="ignore")  # no study is an image
    log = list(getattr(studies, "log", []) or [])
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p>{len(rows)} report(s) in <code>{esc(out)}</code>; each opens from the file system, offline.</p>",
        '<h2 id="analyses-title">Analyses</h2>',
        _links_table(out, rows) if rows else "<p>No analysis report yet.</p>",
        f'<h2 id="studies">Studies ({len(table)})</h2>',
        table_html(table),
        '<h2 id="parameters">Parameters</h2>', _parameters(parameters),
        f'<h2 id="ingest">Reading the studies: notes and warnings ({len(log)})</h2>',
        ("<ul>" + "".join(f'<li class="warning">{esc(line)}</li>' for line in log) + "</ul>"
         if log else "<p>None.</p>"),
    ]
    nav = [("#analyses-title", "analyses"), ("#studies", "studies"), ("#parameters", "parameters"),
           ("#ingest", "warnings")]
    return write_page(out / INDEX_NAME, title, "\n".join(body), nav)


def write_sweep_report(
    out_dir: str | Path, summary: pd.DataFrame, variants: pd.DataFrame, reference: Any,
    z: np.ndarray, mask: str, name: str, index: str | None = "../../index.html",
) -> Path:
    """Write ``report.html`` of a sweep: stability plot and table, the reference variant's
    clusters in the viewer, and the variant table.

    ``reference`` is the reference variant's :class:`~daskmeta.inference.thresholding.Thresholded`
    and ``z`` its SDM-Z voxel vector.
    """
    out_dir = Path(out_dir)
    peaks = [{"cluster": int(r.cluster), "direction": r.direction, "peak_type": "cluster",
              "x": int(r.x), "y": int(r.y), "z": int(r.z), "region": str(r.region)}
             for r in summary.itertuples()]
    shown = summary.assign(peak_type="cluster")
    varying = [c for c in ("fwhm", "anisotropy", "voxel_p", "peak_z", "extent", "seed", "subset")
               if c in variants and variants[c].nunique() > 1]
    body = [
        f"<h1>Sweep {esc(name)}</h1>",
        f"<p>{len(variants)} variants (varying: {esc(', '.join(varying) or 'nothing')}); "
        f"{len(summary)} clusters in the reference variant.</p>",
        "<h2>Stability of the reference clusters</h2>",
        '<img class="figure" src="stability.png" alt="stability plot">'
        if (out_dir / "stability.png").exists() else "",
        table_html(shown, peaks=True, anchors=False) if len(shown) else "<p>No reference cluster.</p>",
        "<h2>Brain viewer: the reference variant</h2>",
        viewer_html(viewer_data(z, reference.labels, mask, peaks)),
        f"<h2>Variants ({len(variants)})</h2>",
        table_html(variants.drop(columns=["studies"], errors="ignore")),
        '<h2 id="methods">Methods</h2>',
        '<p class="methods">Each variant reran the mean analysis with its own kernel, thresholds, seed and '
        "studies; a reference cluster survives a variant that has a significant cluster of the same sign "
        "overlapping it by at least one voxel, each variant thresholded with its own thresholds "
        "(docs/methods.md, section 11). The variant grid of the plot is ordered by its parameters, "
        "with bands naming them; the lower panel gives, for each value of each parameter, the share "
        "of its variants in which the cluster survives.</p>",
    ]
    nav = [(index, "\u2190 all analyses")] if index else []
    return write_page(out_dir / REPORT_NAME, f"daskmeta sweep: {name}", "\n".join(body), nav)
