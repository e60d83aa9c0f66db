"""The stability figure of a sensitivity sweep (docs/methods.md, section 11).

Which choice loses which cluster: the survival share of each reference cluster, the
clusters x variants grid with the variants ordered by their parameters and bands naming
the FWHM, anisotropy, thresholds, seed and study subset of each column, and the share of
variants with each value of each parameter in which the cluster survives (so a left-out
study or a kernel width that loses a cluster stands out).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from daskmeta.report.plots import _new_figure, _save

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["stability_figure", "stability_plot"]

#: Variant parameters shown as bands, in the order the variants are sorted by.
PARAMETERS = ("fwhm", "anisotropy", "voxel_p", "peak_z", "extent", "seed", "subset")
NAMES = {"fwhm": "FWHM (mm)", "anisotropy": "anisotropy", "voxel_p": "voxel p", "peak_z": "peak z",
         "extent": "extent", "seed": "seed", "subset": "studies"}


def stability_plot(summary: pd.DataFrame, detail: pd.DataFrame, path: str | os.PathLike, title: str = "",
                   variants: pd.DataFrame | None = None) -> Path:
    """Write :func:`stability_figure` as a PNG."""
    return _save(stability_figure(summary, detail, title, variants), path)


def _text(value: object) -> str:
    return f"{value:g}" if isinstance(value, float | int | np.floating | np.integer) else str(value)


def _ordered(detail: pd.DataFrame,
             variants: pd.DataFrame | None) -> tuple[list, pd.DataFrame | None, list[str]]:
    """The variant columns of ``detail`` sorted by their parameters, their rows of ``variants``
    and the parameters that vary."""
    columns = [c for c in detail.columns if c != "cluster"]
    if variants is None:
        return columns, None, []
    table = variants.set_index("variant").loc[[int(c) for c in columns]]
    varying = [c for c in PARAMETERS if c in table and table[c].astype(str).nunique() > 1]
    reference = table["reference"].astype(bool) if "reference" in table else False
    table = table.assign(_later=~reference).sort_values(
        ["_later", *varying], kind="stable",
        key=lambda col: col.map(lambda v: "" if v == "all" else v) if col.name == "subset" else col)
    order = [columns[[int(c) for c in columns].index(v)] for v in table.index]
    return order, table, varying


def stability_figure(summary: pd.DataFrame, detail: pd.DataFrame, title: str = "",
                     variants: pd.DataFrame | None = None) -> Figure:
    """Cluster stability across the variants of a sweep.

    Top left: the share of variants in which each reference cluster survives; top right:
    which variants (columns, dark = survives) keep which cluster (rows). With ``variants``
    (the table of :func:`daskmeta.analyses.sweep.plan`), the columns are sorted by the
    parameters that vary (the reference first) and named by bands below the grid, and a
    lower panel gives, per parameter value, the share of its variants keeping each cluster.
    """
    from matplotlib import colormaps

    labels = [f"{int(r.cluster)} {r.direction[:3]} ({r.x:.0f}, {r.y:.0f}, {r.z:.0f})"
              for r in summary.itertuples()]
    order, table, varying = _ordered(detail, variants)
    grid = detail[order].to_numpy(dtype=float) if len(labels) else np.zeros((0, max(1, len(order))))
    columns = [(name, value) for name in varying for value in
               sorted(table[name].unique(),
                      key=lambda v: ("" if v == "all" else v) if name == "subset" else v)]
    n, rows_height = len(labels), max(1.2, 0.3 * len(labels) + 0.6)
    heights = [rows_height] + [0.28] * len(varying)
    if columns:
        heights.append(rows_height + 0.12 * max(len(_text(v)) for _, v in columns) + 0.4)
    figure = _new_figure()
    figure.set_size_inches(12, sum(heights) + 1.2)
    spec = figure.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=[1, 3])
    bars, cells = figure.add_subplot(spec[0, 0]), figure.add_subplot(spec[0, 1])
    positions = np.arange(n)
    bars.barh(positions, summary["fraction"].to_numpy() if n else [], color="#4477aa")
    bars.set_yticks(positions, labels, fontsize=8)
    bars.set_xlim(0, 1)
    bars.set_xlabel("share of variants in which the cluster survives", fontsize=8)
    cells.imshow(grid, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    cells.set_yticks(positions, [""] * n)
    cells.set_xticks([])
    if not varying:
        cells.set_xlabel("variant (dark: the cluster survives)")
    for axis in (bars, cells):  # the same rows on both panels, first cluster on top
        axis.set_ylim(n - 0.5, -0.5)
    palette = colormaps["tab20"]
    width_points = 0.72 * 12 * 72 / max(1, len(order))  # about the width of one variant column
    for row, name in enumerate(varying, start=1):
        band = figure.add_subplot(spec[row, 1], sharex=cells)
        values = [table.loc[int(c), name] for c in order]
        codes = {v: k for k, v in enumerate(dict.fromkeys(sorted(set(values), key=str)))}
        band.imshow(np.array([[codes[v] % 20 for v in values]]), aspect="auto", cmap=palette, vmin=0,
                    vmax=19, interpolation="nearest")
        first = 1 if len(values) > 1 and not table["_later"].iloc[0] else 0  # the reference: unlabelled
        start, runs = first, []
        for end in range(first + 1, len(values) + 1):
            if end == len(values) or values[end] != values[start]:
                runs.append((start, end, _text(values[start])))
                start = end
        if all((end - start) * width_points > 4.5 * len(text) + 6 for start, end, text in runs):
            for start, end, text in runs:
                band.text((start + end - 1) / 2, 0, text, ha="center", va="center", fontsize=7)
        elif len(codes) <= 8:  # too narrow to write in: a legend of the colours on the right
            from matplotlib.patches import Patch

            band.legend(handles=[Patch(color=palette(code % 20), label=_text(value))
                                 for value, code in codes.items()], loc="center left",
                        bbox_to_anchor=(1.0, 0.5), ncols=len(codes), fontsize=7, frameon=False,
                        handlelength=1, columnspacing=0.8)
        else:
            band.text(1.01, 0.5, "one colour per value: see the lower panel", transform=band.transAxes,
                      fontsize=7, va="center")
        band.set_yticks([0], [NAMES[name]], fontsize=8)
        band.tick_params(axis="x", bottom=False, labelbottom=False)
    if columns:
        share = figure.add_subplot(spec[len(varying) + 1, :])
        matrix = np.array([[detail.loc[:, [c for c in order if table.loc[int(c), name] == value]]
                            .to_numpy(dtype=float)[i].mean() for name, value in columns] for i in range(n)])
        share.imshow(matrix if n else np.zeros((0, len(columns))), aspect="auto", cmap="viridis", vmin=0,
                     vmax=1, interpolation="nearest")
        share.set_xticks(np.arange(len(columns)),
                         [f"{NAMES[name]} {_text(value)}" for name, value in columns],
                         rotation=90, fontsize=7)
        share.set_yticks(positions, labels, fontsize=7)
        share.set_title("share of the variants with this value in which the cluster survives (yellow: all, "
                        "dark: none)", fontsize=8)
        for i in range(n):
            for j in range(len(columns)):
                if matrix[i, j] < 1:
                    share.text(j, i, f"{matrix[i, j]:.2f}".lstrip("0") if matrix[i, j] > 0 else "0",
                               ha="center", va="center", fontsize=6, color="white")
    if title:
        figure.suptitle(title + ("" if not varying else f": {len(order)} variants, reference first"))
    return figure
