"""Peak figures: funnel plots (docs/methods.md, section 9) and meta-regression scatter plots (section 8).

Reports at the edge of the package: arrays in, PNG files out. Matplotlib is imported inside
the functions, so ``import daskmeta.report.plots`` (and ``import daskmeta``) stays light. Figures are
built as bare :class:`matplotlib.figure.Figure` objects on an Agg canvas, never through
``pyplot``: nothing changes the global backend of a user's session, no figure is registered
with pyplot's manager (so there is nothing to close and nothing leaks in long runs), and the
functions are safe to call from worker threads.

``funnel_figure``/``scatter_figure`` build and return the figure (for notebooks and tests);
``funnel_plot``/``scatter_plot`` also write it as a PNG at :data:`DPI`, atomically (a temporary
file in the same folder, then :func:`os.replace`), and return the path.

References
----------
Light RJ, Pillemer DB (1984). Summing Up: The Science of Reviewing Research. Harvard
University Press (the funnel plot).
Sterne JAC, Egger M (2001). Funnel plots for detecting bias in meta-analysis: guidelines on
choice of axis. J Clin Epidemiol 54:1046-1055 (standard error on an inverted vertical axis,
pseudo-confidence limits ``pooled +- 1.96 se``).
Egger M, Davey Smith G, Schneider M, Minder C (1997). Bias in meta-analysis detected by a
simple, graphical test. BMJ 315:629-634.
Thompson SG, Higgins JPT (2002). How should meta-regression analyses be undertaken and
interpreted? Stat Med 21:1559-1573 (bubble plots, marker area proportional to weight).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.errors import plain

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DPI", "funnel_figure", "funnel_plot", "psi_null_plot", "scatter_figure", "scatter_plot"]

#: Resolution of the saved PNGs, dots per inch.
DPI = 150
#: Two-sided 95% normal quantile of the pseudo-confidence funnel.
Z_95 = 1.959963984540054
#: Marker area (points^2) of the study with the largest weight in :func:`scatter_figure`.
MAX_MARKER_AREA = 300.0
EFFECT_LABEL = "Effect size (Hedges' g)"


def _studies(
    variance: ArrayLike, **arrays: ArrayLike
) -> tuple[NDArray[np.float64], dict[str, NDArray[np.float64]]]:
    """Check 1-D, equal-length, finite arrays and positive variances; return float64 copies."""
    v = np.asarray(variance, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"'variance' must be 1-D with one value per study; got shape {v.shape}.")
    out = {}
    for name, values in arrays.items():
        a = np.asarray(values, dtype=np.float64)
        if a.shape != v.shape:
            raise ValueError(
                f"'{name}' must have one value per study like 'variance' {v.shape}; got shape "
                f"{a.shape}."
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"'{name}' must be finite; drop the studies without a value first.")
        out[name] = a
    if not (np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError("'variance' must be finite and strictly positive for every study.")
    return v, out


def _new_figure() -> Figure:
    """A pyplot-free figure on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically: temporary file, then ``os.replace``."""
    return write_atomically(png_bytes(fig), path)


def png_bytes(fig: Figure) -> bytes:
    """``fig`` rendered as PNG (the bytes :func:`_save` writes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_atomically(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` to ``path`` through a temporary file in its folder, then ``os.replace``
    (a reader never sees a partial file); the folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def funnel_figure(
    effect: ArrayLike,
    variance: ArrayLike,
    pooled_effect: float,
    title: str = "",
    labels: Sequence[str] | None = None,
) -> Figure:
    """Funnel plot of the studies at one peak: effect on x, standard error on an inverted y.

    Parameters
    ----------
    effect : array_like, shape (k,)
        Study effect sizes at the peak (Hedges g).
    variance : array_like, shape (k,)
        Their sampling variances, strictly positive.
    pooled_effect : float
        The pooled (random-effects) mean, drawn as a vertical line with its 95%
        pseudo-confidence funnel ``pooled_effect +- 1.96 se``.
    title : str, default ''
        Axes title, e.g. the peak's coordinates and Egger's p.
    labels : sequence of str, optional
        One label per study, written next to its point.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, one axes with the y axis inverted (precise studies at the top).

    Raises
    ------
    ValueError
        If the arrays are not 1-D of one length, not finite, a variance is not positive,
        ``pooled_effect`` is not finite or ``labels`` has the wrong length.

    References
    ----------
    Sterne & Egger (2001); docs/methods.md, section 9.
    """
    v, arrays = _studies(variance, effect=effect)
    effect = arrays["effect"]
    if not np.isfinite(pooled_effect):
        raise ValueError(f"'pooled_effect' must be finite; {plain(pooled_effect)!r} was provided.")
    if labels is not None and len(labels) != effect.size:
        raise ValueError(
            f"'labels' must have one entry per study ({effect.size}); got {len(labels)}."
        )
    se = np.sqrt(v)
    se_top = 1.1 * float(se.max())
    se_grid = np.linspace(0.0, se_top, 50)
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.plot(pooled_effect - Z_95 * se_grid, se_grid, color="0.4", linestyle="--", linewidth=1,
            label="95% pseudo-confidence limits")
    ax.plot(pooled_effect + Z_95 * se_grid, se_grid, color="0.4", linestyle="--", linewidth=1)
    ax.axvline(pooled_effect, color="tab:red", linewidth=1.2, label=f"Pooled effect {pooled_effect:.3g}")
    ax.scatter(effect, se, s=28, color="tab:blue", edgecolor="black", linewidth=0.5, zorder=3,
               label="Studies")
    ax.set_ylim(0.0, se_top)
    ax.invert_yaxis()
    ax.set_xlabel(EFFECT_LABEL)
    ax.set_ylabel("Standard error")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left" if labels is not None else "best")
    if labels is not None:
        _place_labels(fig, ax, [str(label) for label in labels], effect, se)
    return fig


#: Offsets (points) tried for a point's label, in order; then further down with a leader line.
_LABEL_OFFSETS = ((4, 2), (4, -9), (-4, 2), (-4, -9), (4, 9), (-4, 9))


def _place_labels(fig: Figure, ax: object, labels: list[str], x: NDArray, y: NDArray) -> None:
    """Annotate each point with its label where it overlaps no other label, no point and the
    legend: the first free offset of :data:`_LABEL_OFFSETS`, else stepped further out with a
    line to the point. The layout is fixed first, so that the positions checked are those drawn."""
    from matplotlib.text import Text

    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend()
    taken = [legend.get_window_extent(renderer)] if legend is not None else []
    points = ax.transData.transform(np.column_stack([x, y]))
    dots = [(px - 3, py - 3, px + 3, py + 3) for px, py in points]
    frame = ax.get_window_extent(renderer)
    candidates = list(_LABEL_OFFSETS) + [(dx, dy * step) for step in range(2, 12) for dx, dy in
                                         ((12, -8), (-12, -8), (12, 8), (-12, 8))]
    order = np.argsort(points[:, 1])[::-1]  # top of the plot first
    for n in order:
        for dx, dy in candidates:
            far = abs(dy) > 9
            text = ax.annotate(labels[n], (x[n], y[n]), xytext=(dx, dy), textcoords="offset points",
                               fontsize=7, ha="left" if dx > 0 else "right", va="center",
                               arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if far else None)
            text.update_positions(renderer)  # the label's own box, without its leader line
            box = Text.get_window_extent(text, renderer).expanded(1.05, 1.1)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            clash = any(box.overlaps(other) for other in taken) or any(
                box.x0 < d[2] and d[0] < box.x1 and box.y0 < d[3] and d[1] < box.y1
                for m, d in enumerate(dots) if m != n)
            if inside and not clash:
                taken.append(box)
                break
            text.remove()
        else:  # nowhere free: the first offset, overlapping
            ax.annotate(labels[n], (x[n], y[n]), xytext=_LABEL_OFFSETS[0], textcoords="offset points",
                        fontsize=7)


def funnel_plot(
    effect: ArrayLike,
    variance: ArrayLike,
    pooled_effect: float,
    path: str | os.PathLike[str],
    title: str = "",
    labels: Sequence[str] | None = None,
) -> Path:
    """Write the funnel plot of :func:`funnel_figure` as a PNG, atomically.

    Parameters
    ----------
    effect, variance, pooled_effect, title, labels
        As in :func:`funnel_figure`.
    path : str or os.PathLike
        Destination PNG; its folder is created if missing, an existing file replaced.

    Returns
    -------
    pathlib.Path
        ``path``.

    References
    ----------
    Sterne & Egger (2001); Egger et al. (1997); docs/methods.md, section 9.
    """
    return _save(funnel_figure(effect, variance, pooled_effect, title=title, labels=labels), path)


def funnel_png(
    effect: ArrayLike,
    variance: ArrayLike,
    pooled_effect: float,
    title: str = "",
    labels: Sequence[str] | None = None,
) -> bytes:
    """The PNG of :func:`funnel_plot`, as bytes (to render on a Dask worker and write where
    the results go). Arguments as :func:`funnel_figure`."""
    return png_bytes(funnel_figure(effect, variance, pooled_effect, title=title, labels=labels))


def scatter_figure(
    covariate: ArrayLike,
    effect: ArrayLike,
    variance: ArrayLike,
    intercept: float,
    slope: float,
    xlabel: str,
    title: str = "",
) -> Figure:
    """Meta-regression bubble plot: study effect against the covariate, with the fitted line.

    Parameters
    ----------
    covariate : array_like, shape (k,)
        The covariate in its original units (not rescaled).
    effect : array_like, shape (k,)
        Study effect sizes at the peak.
    variance : array_like, shape (k,)
        Their sampling variances; marker area is proportional to the weight ``1/variance``.
    intercept, slope : float
        The fitted line ``intercept + slope * covariate`` in the covariate's original units;
        for a model fitted on the rescaled regressor convert ``beta_0, beta_1`` with
        :func:`daskmeta.stats.regression.original_units`.
    xlabel : str
        Name (and unit) of the covariate.
    title : str, default ''
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, one axes.

    Raises
    ------
    ValueError
        If the arrays are not 1-D of one length, not finite, a variance is not positive, or
        the line is not finite.

    References
    ----------
    Thompson & Higgins (2002); docs/methods.md, section 8.
    """
    v, arrays = _studies(variance, covariate=covariate, effect=effect)
    covariate, effect = arrays["covariate"], arrays["effect"]
    if not (np.isfinite(intercept) and np.isfinite(slope)):
        raise ValueError("'intercept' and 'slope' must be finite; "
                         f"got {plain(intercept)!r}, {plain(slope)!r}.")
    weight = 1.0 / v
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.7", linewidth=0.8)
    ax.scatter(covariate, effect, s=MAX_MARKER_AREA * weight / weight.max(), color="tab:blue",
               alpha=0.6, edgecolor="black", linewidth=0.5, zorder=3,
               label="Studies (area \u221d 1/variance)")
    line_x = np.array([covariate.min(), covariate.max()])
    ax.plot(line_x, intercept + slope * line_x, color="tab:red", linewidth=1.5,
            label=f"Meta-regression: {intercept:.3g} + {slope:.3g} x")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(EFFECT_LABEL)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def scatter_plot(
    covariate: ArrayLike,
    effect: ArrayLike,
    variance: ArrayLike,
    intercept: float,
    slope: float,
    path: str | os.PathLike[str],
    xlabel: str,
    title: str = "",
) -> Path:
    """Write the meta-regression bubble plot of :func:`scatter_figure` as a PNG, atomically.

    Parameters
    ----------
    covariate, effect, variance, intercept, slope, xlabel, title
        As in :func:`scatter_figure`.
    path : str or os.PathLike
        Destination PNG; its folder is created if missing, an existing file replaced.

    Returns
    -------
    pathlib.Path
        ``path``.

    References
    ----------
    Thompson & Higgins (2002); docs/methods.md, section 8.
    """
    fig = scatter_figure(covariate, effect, variance, intercept, slope, xlabel, title=title)
    return _save(fig, path)


def psi_null_plot(
    null_max_z: ArrayLike,
    null_min_z: ArrayLike,
    null_max_tfce: ArrayLike,
    null_min_tfce: ArrayLike,
    observed: Sequence[float],
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Histograms of an SDM-PSI permutation null's extremes, written as a PNG, atomically.

    Four panels (largest z, smallest z, largest TFCE, smallest TFCE over the mask in each
    permutation), each with the observed map's extreme (red) and the family-wise 0.05
    critical value (dashed): the 95th percentile of the maxima, the 5th of the minima. A
    voxel whose z (or TFCE) lies beyond the critical value has a family-wise corrected
    p below about 0.05 (docs/methods.md, section 14.4).

    Parameters
    ----------
    null_max_z, null_min_z, null_max_tfce, null_min_tfce : array_like, shape (B,)
        Per-permutation extremes (``null_*`` of :func:`daskmeta.psi`), B >= 1.
    observed : sequence of 4 float
        The observed map's ``max z, min z, max TFCE, min TFCE``, in that order.
    path : str or os.PathLike
        Destination PNG; its folder is created if missing, an existing file replaced.
    title : str, default ''
        Figure title, e.g. the analysis' name.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If a null is empty or not finite, or ``observed`` does not hold 4 values.

    References
    ----------
    Nichols TE, Holmes AP (2002). Hum Brain Mapp 15:1-25 (maximum statistic).
    Smith SM, Nichols TE (2009). NeuroImage 44:83-98 (TFCE).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    nulls = [np.asarray(values, dtype=np.float64).ravel()
             for values in (null_max_z, null_min_z, null_max_tfce, null_min_tfce)]
    if any(values.size == 0 or not np.all(np.isfinite(values)) for values in nulls):
        raise ValueError("each null must hold at least one finite value per permutation.")
    extremes = [float(v) for v in observed]
    if len(extremes) != 4:
        raise ValueError(f"'observed' must hold 4 values (max z, min z, max TFCE, min TFCE); "
                         f"got {len(extremes)}.")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9.0, 6.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    panels = (("Largest z", "z", True), ("Smallest z", "z", False),
              ("Largest TFCE", "TFCE", True), ("Smallest TFCE", "TFCE", False))
    for ax, values, seen, (label, unit, upper) in zip(axes.ravel(), nulls, extremes, panels, strict=True):
        critical = float(np.quantile(values, 0.95 if upper else 0.05))
        ax.hist(values, bins=min(40, max(5, values.size // 5)), color="0.75", edgecolor="0.35",
                linewidth=0.5)
        ax.axvline(critical, color="black", linestyle="--", linewidth=1.2)
        low, high = float(values.min()), float(values.max())
        if np.isfinite(seen):
            ax.axvline(seen, color="tab:red", linewidth=1.8)
            low, high = min(low, seen), max(high, seen)
        pad = 0.05 * (high - low or 1.0)
        ax.set_xlim(low - pad, high + pad)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{label} per permutation\nobserved {seen:.3g}, FWE 0.05 critical value {critical:.3g}",
                     fontsize=9)
        ax.set_xlabel(unit)
        ax.set_ylabel("Permutations")
    handles = [Patch(facecolor="0.75", edgecolor="0.35", label=f"Null ({nulls[0].size} permutations)"),
               Line2D([], [], color="black", linestyle="--",
                      label="FWE 0.05 critical value (95th percentile of the maxima, 5th of the minima)"),
               Line2D([], [], color="tab:red", linewidth=1.8, label="Observed map")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
