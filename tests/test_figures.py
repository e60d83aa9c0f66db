"""Figures people read: funnel labels apart, the sweep's variant axis named."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from matplotlib.text import Text

from daskmeta.report.plots import funnel_figure
from daskmeta.report.stability import stability_figure


def test_funnel_labels_do_not_overlap():
    # crowded: several studies at effect 0 with close standard errors, a tight group on the right
    effect = np.array([0.27, 0.0, 0.0, 0.0, 0.28, 0.57, 0.0, 0.0, 0.54, 0.79, 0.66, 0.35, 0.0, 0.6])
    se = np.array([0.362, 0.28, 0.305, 0.163, 0.302, 0.275, 0.259, 0.203, 0.286, 0.298, 0.274, 0.244,
                   0.29, 0.28])
    labels = [f"Author{n:02d}_2020_ReHo" for n in range(effect.size)]
    figure = funnel_figure(effect, se**2, 0.25, title="cluster 1", labels=labels)
    renderer = figure.canvas.get_renderer()
    texts = [t for t in figure.axes[0].texts if t.get_text() in labels]
    assert sorted(t.get_text() for t in texts) == sorted(labels)
    boxes = []
    for text in texts:
        text.update_positions(renderer)
        boxes.append(Text.get_window_extent(text, renderer))
    for a, b in itertools.combinations(range(len(boxes)), 2):
        assert not boxes[a].overlaps(boxes[b]), (texts[a].get_text(), texts[b].get_text())


def test_stability_figure_names_the_variants():
    studies = [f"s{n}" for n in range(4)]
    rows = [{"fwhm": 20.0, "anisotropy": 1.0, "voxel_p": 0.005, "subset": "all", "reference": True}]
    for fwhm, anisotropy, p in itertools.product([10.0, 20.0], [0.0, 1.0], [0.005, 0.001]):
        for subset in ["all"] + [f"without {s}" for s in studies]:
            rows.append({"fwhm": fwhm, "anisotropy": anisotropy, "voxel_p": p, "subset": subset,
                         "reference": False})
    variants = pd.DataFrame(rows).assign(peak_z=1.0, extent=10, seed=1)
    variants.insert(0, "variant", np.arange(len(variants)))
    keep = {v.variant: [v.fwhm > 10, v.subset != "without s2"] for v in variants.itertuples()}
    detail = pd.DataFrame(keep).assign(cluster=[1, 2])
    fraction = detail.drop(columns="cluster").mean(axis=1)
    summary = pd.DataFrame({"cluster": [1, 2], "direction": ["positive", "negative"], "x": [0, 10],
                            "y": [0, 10], "z": [0, 10], "fraction": fraction})
    figure = stability_figure(summary, detail, "sweep", variants)
    labels = {t.get_text() for ax in figure.axes for t in ax.get_yticklabels()}
    assert {"FWHM (mm)", "anisotropy", "voxel p", "studies"} <= labels
    ticks = [t.get_text() for t in figure.axes[-1].get_xticklabels()]
    assert "FWHM (mm) 10" in ticks and "studies without s2" in ticks
    # the lower panel: without s2 the second cluster never survives, FWHM 10 loses the first
    image = figure.axes[-1].images[0].get_array()
    assert image[1, ticks.index("studies without s2")] == 0
    assert image[0, ticks.index("FWHM (mm) 10")] == 0 and image[0, ticks.index("FWHM (mm) 20")] == 1
