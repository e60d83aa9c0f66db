"""Funnel and meta-regression scatter plots: valid PNGs, axes as docs/methods.md, sections 8-9, describes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from daskmeta.report import plots


@pytest.fixture
def studies(rng):
    k = 12
    variance = 4.0 / rng.integers(10, 200, size=k)
    effect = 0.3 + rng.normal(size=k) * np.sqrt(variance)
    covariate = rng.uniform(20, 60, size=k)
    return covariate, effect, variance


def _assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 300
    rgb = image[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 10  # not a single colour


def test_funnel_plot_writes_png(tmp_path, studies):
    _, effect, variance = studies
    labels = [f"study{s:02d}" for s in range(effect.size)]
    path = plots.funnel_plot(effect, variance, 0.3, tmp_path / "peak1" / "funnel.png",
                             title="Peak 1 (Egger p = 0.42)", labels=labels)
    assert path == tmp_path / "peak1" / "funnel.png"
    _assert_png(path)
    assert [p.name for p in path.parent.iterdir()] == ["funnel.png"]  # no temporary left


def test_funnel_figure_axes(studies):
    _, effect, variance = studies
    fig = plots.funnel_figure(effect, variance, 0.25, title="t")
    (ax,) = fig.axes
    assert ax.yaxis_inverted()
    low, high = sorted(ax.get_ylim())
    assert low == 0.0 and high >= np.sqrt(variance).max()
    # Studies plotted at (effect, se).
    np.testing.assert_allclose(ax.collections[0].get_offsets(), np.column_stack([effect,
                                                                                np.sqrt(variance)]))
    # Pooled line and the two pseudo-confidence limits pooled -+ 1.96 se.
    x_lines = [line.get_xdata() for line in ax.get_lines()]
    se_lines = [line.get_ydata() for line in ax.get_lines()]
    np.testing.assert_allclose(x_lines[0], 0.25 - 1.959963984540054 * np.asarray(se_lines[0]))
    np.testing.assert_allclose(x_lines[1], 0.25 + 1.959963984540054 * np.asarray(se_lines[1]))
    np.testing.assert_allclose(x_lines[2], [0.25, 0.25])


def test_scatter_plot_writes_png(tmp_path, studies):
    covariate, effect, variance = studies
    path = plots.scatter_plot(covariate, effect, variance, 0.1, 0.005, tmp_path / "scatter.png",
                              xlabel="Age (years)", title="Peak 1")
    _assert_png(path)


def test_scatter_figure_weights_and_line(studies):
    covariate, effect, variance = studies
    fig = plots.scatter_figure(covariate, effect, variance, 0.1, 0.005, xlabel="Age (years)")
    (ax,) = fig.axes
    sizes = ax.collections[0].get_sizes()
    np.testing.assert_allclose(sizes / sizes.max(), variance.min() / variance)  # area ~ 1/v
    line = ax.get_lines()[-1]
    np.testing.assert_allclose(line.get_xdata(), [covariate.min(), covariate.max()])
    np.testing.assert_allclose(line.get_ydata(), 0.1 + 0.005 * line.get_xdata())
    assert ax.get_xlabel() == "Age (years)"


def test_overwrite_is_replaced(tmp_path, studies):
    covariate, effect, variance = studies
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    plots.funnel_plot(effect, variance, 0.3, path)
    _assert_png(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"variance": [0.1, 0.0, 0.2]}, "strictly positive"),
     ({"effect": [0.1, 0.2]}, "one value per study"),
     ({"pooled_effect": float("nan")}, "'pooled_effect' must be finite"),
     ({"labels": ["a"]}, "'labels' must have one entry per study")],
)
def test_funnel_rejects_bad_input(tmp_path, kwargs, match):
    args = {"effect": [0.1, 0.2, 0.3], "variance": [0.1, 0.1, 0.2], "pooled_effect": 0.2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        plots.funnel_plot(path=tmp_path / "f.png", **args)
    assert not list(tmp_path.iterdir())


def test_scatter_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="'covariate' must be finite"):
        plots.scatter_plot([1.0, np.nan, 3.0], [0.1, 0.2, 0.3], [0.1, 0.1, 0.2], 0.0, 1.0,
                           tmp_path / "s.png", xlabel="x")


def test_import_does_not_load_matplotlib():
    code = "import sys, daskmeta.report.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
