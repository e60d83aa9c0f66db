"""report.html and index.html: self-contained, offline, and working in a real browser."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from browser import open_page, screenshot
from test_report import THRESHOLD, make_result

from daskmeta.inference.thresholding import threshold
from daskmeta.model.grid import load_mask
from daskmeta.report.html import write_html_report
from daskmeta.report.index import write_index
from daskmeta.report.plots import funnel_plot

#: A second, negative blob (MNI mm) so that the map has both signs.
NEGATIVE = (30, 20, 40)


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    """A mean result with a positive and a negative cluster, its funnel plots and tables."""
    result = make_result(np.random.default_rng(7))
    mask = load_mask("gray_matter")
    for centre, height in ((NEGATIVE, 4.0), ((NEGATIVE[0], NEGATIVE[1] + 14, NEGATIVE[2]), 3.5)):
        distance = np.linalg.norm(mask.xyz - np.array(centre), axis=1)
        inside = distance <= 8.0  # two touching spheres: one cluster with a sub-peak
        z = result["z"].values
        z[inside] = np.minimum(z[inside], -(height - distance[inside] / 8.0))
        result["p"].values[inside] = 1e-4
    found = threshold(result, **THRESHOLD)
    out = tmp_path_factory.mktemp("run") / "ocd_gm"
    out.mkdir()
    names = list(result.attrs["studies"])
    rng = np.random.default_rng(1)
    for cluster in found.table["cluster"].unique():
        funnel_plot(rng.normal(0.3, 0.2, len(names)), rng.uniform(0.05, 0.2, len(names)), 0.3,
                    out / f"funnel_cluster{cluster}.png", title=f"cluster {cluster}", labels=names)
    jackknife = pd.DataFrame({"cluster": [1, 2], "direction": ["positive", "negative"], "replicated": [6, 7],
                              "runs": [7, 7], **{n: [n != names[2], True] for n in names}})
    jackknife.to_csv(out / "jackknife.tsv", sep="\t", index=False)
    found.table.to_csv(out / "clusters.tsv", sep="\t", index=False)
    path = write_html_report(result, found.labels, found.table, out, THRESHOLD)
    return path, found


def test_report_is_self_contained(analysis):
    path, found = analysis
    text = path.read_text(encoding="utf-8")
    assert text.count("<tr data-cluster=") == len(found.table) > 2
    assert {1, 2} <= set(found.table["cluster"])
    # nothing remote: no http(s) resource, import or font; the scripts and styles are inline
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "@import" not in text and "url(http" not in text and "<script src" not in text
    for name in ("funnel_cluster1.png", "funnel_cluster2.png"):
        assert f'src="{name}"' in text and (path.parent / name).exists()
    assert "Methods" in text and "DerSimonian" in text and "Br J Psychiatry 2009" in text
    assert 'id="cluster-1"' in text and "lost without study02" in text
    assert path.stat().st_size < 3_000_000


def test_report_in_a_browser(analysis):
    path, found = analysis
    with open_page(path) as (page, problems):
        assert page.locator("canvas").count() >= 3
        # the slices are drawn: the axial canvas is not one flat colour
        colours = page.evaluate("""() => {
            const c = document.getElementById('view-axial'), d = c.getContext('2d')
                .getImageData(0, 0, c.width, c.height).data, seen = new Set();
            for (let n = 0; n < d.length; n += 4 * 97) seen.add(d[n] + ',' + d[n + 1] + ',' + d[n + 2]);
            return seen.size; }""")
        assert colours > 20
        rows = page.locator("table.sortable tbody tr[data-cluster]")
        assert rows.count() == len(found.table)
        # a peak's link moves the viewer there
        last = found.table.iloc[-1]
        page.locator("a.goto").nth(len(found.table) - 1).click()
        info = page.inner_text("#viewer-info")
        assert f"MNI ({int(last.x)}, {int(last.y)}, {int(last.z)})" in info
        assert f"cluster {int(last.cluster)}" in info
        # sorting by sdm_z puts the negative peak first
        page.locator("table.sortable thead th", has_text="sdm_z").first.click()
        first = page.locator("table.sortable tbody tr[data-cluster]").first.get_attribute("data-cluster")
        assert int(first) == int(found.table.loc[found.table["sdm_z"].idxmin(), "cluster"])
        # a click on a slice moves the cross-hair
        page.locator("#view-coronal").click(position={"x": 60, "y": 150})
        assert page.inner_text("#viewer-info") != info
        page.locator("input[value=unthresholded]").check()
        screenshot(page, "report.png")
        assert problems == []


def test_index_links_every_report(analysis, small_studies):
    path, _ = analysis
    small_studies.log.append("study03: peak 2 of unknown value given +t_thr (a warning)")
    parameters = {"preprocess": {"fwhm": 20.0}, "threshold": THRESHOLD}
    index = write_index(path.parent.parent, small_studies, parameters, {"ocd_gm": "mean"})
    text = index.read_text(encoding="utf-8")
    assert 'href="ocd_gm/report.html"' in text and "study03: peak 2 of unknown value" in text
    assert "fwhm: 20.0" in text and text.count("<tr>") >= len(small_studies)
    with open_page(index) as (page, problems):
        assert page.locator("#analyses tbody tr").count() == 1
        page.locator("a", has_text="ocd_gm").first.click()
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("canvas").count() >= 3
        assert problems == []


def test_sweep_report_shows_the_stability_plot(analysis, tmp_path):
    from daskmeta.report.index import write_sweep_report
    from daskmeta.report.stability import stability_plot

    _, found = analysis
    heads = found.table[found.table["peak_type"] == "cluster"]
    variants = pd.DataFrame({"variant": range(5), "fwhm": [20.0, 10.0, 10.0, 20.0, 20.0],
                             "voxel_p": [0.005, 0.005, 0.001, 0.005, 0.001], "subset": "all",
                             "reference": [True, False, False, False, False]})
    detail = pd.DataFrame({v: [v != 2, True] for v in range(5)}).assign(cluster=heads["cluster"].to_numpy())
    summary = heads[["cluster", "direction", "x", "y", "z", "sdm_z", "voxels", "region"]].assign(
        survived=[4, 5], variants=5, fraction=[0.8, 1.0])
    stability_plot(summary, detail, tmp_path / "stability.png", "sweep s", variants)
    z = np.where(found.labels != 0, found.z, 0.0)
    path = write_sweep_report(tmp_path, summary, variants, found, z, "gray_matter", "s")
    with open_page(path) as (page, problems):
        assert page.locator("img[src='stability.png']").evaluate("i => i.naturalWidth") > 500
        assert page.locator("tr[data-cluster]").count() == len(summary)
        assert page.locator("canvas").count() >= 3
        screenshot(page, "sweep.png")
        assert problems == []


def test_thresholded_displays_as_a_table_and_an_image(analysis):
    _, found = analysis
    html = found._repr_html_()
    assert "<table" in html and "data:image/png;base64," in html and "2 cluster(s)" in html


@pytest.mark.slow
def test_a_real_run_writes_reports_and_keeps_the_terminal_quiet(tmp_path, capfd):
    """`daskmeta run` on 5 simulated studies: a mean with jackknife and a meta-regression."""
    import functools

    import yaml
    from typer.testing import CliRunner

    from daskmeta.app import workflow
    from daskmeta.app.cli import app
    from daskmeta.app.dask_client import cluster_client
    from daskmeta.testing.simulate import TrueEffect, simulate_studies
    from daskmeta.testing.synthetic import simulate_table

    table = simulate_table(5, seed=3, n_peaks_range=(2, 4), covariates={"age": (20.0, 60.0)})
    effect = TrueEffect(-38.0, -26.0, 56.0, sign=1, probability=0.9, name="s1")
    folder = simulate_studies(table, [effect], tmp_path / "studies", seed=3)
    config = tmp_path / "analysis.yaml"
    config.write_text(yaml.safe_dump({
        "studies": str(folder), "store": str(tmp_path / "s.zarr"), "out": str(tmp_path / "out"),
        "preprocess": {"mask": "gray_matter", "fwhm": 20, "anisotropy": 0.0},
        "threshold": {"p": 0.005, "peak_z": 1.0, "extent": 10},
        "analyses": {"all": {"type": "mean", "permutations": 3, "seed": 1, "jackknife": True,
                             "regressors": ["age"]}},
    }))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(workflow, "cluster_client", functools.partial(cluster_client, n_workers=1))
        result = CliRunner().invoke(app, ["run", str(config), "--dashboard-address", "127.0.0.1:0"])
    terminal = result.output + "".join(capfd.readouterr())
    assert result.exit_code == 0, terminal
    for line in filter(str.strip, re.split(r"[\r\n]", terminal)):
        ours = line.startswith(("daskmeta", "all: ")) or line.strip().startswith("done in")
        assert ours or "%|" in line or "dashboard" in line, f"{line!r} in\n{terminal}"
    out = tmp_path / "out"
    assert "reports: " in terminal and (out / "index.html").exists()
    with open_page(out / "index.html") as (page, problems):
        assert page.locator("#analyses tbody tr").count() == 2  # the mean and its meta-regression
        screenshot(page, "run_index.png")
        assert problems == []
    clusters = pd.read_csv(out / "all" / "clusters.tsv", sep="\t")
    with open_page(out / "all" / "report.html") as (page, problems):
        assert page.locator("canvas").count() >= 3
        assert page.locator("table.sortable tbody tr[data-cluster]").count() == len(clusters)
        screenshot(page, "run_report.png")
        assert problems == []


@pytest.fixture(scope="module")
def psi_run(make_studyset, tmp_path_factory):
    """A small SDM-PSI run through ``run_psi``: 5 studies, 2 imputations, 9 permutations.

    With 9 permutations no family-wise p is below 0.1, so the clusters are cut at
    ``p_fwe_tfce < 0.25`` (the rule the page must name).
    """
    import dask

    from daskmeta.analyses.recreate import recreate
    from daskmeta.app.config import PsiAnalysis, PsiThreshold
    from daskmeta.app.psi_workflow import run_psi

    studies = make_studyset(n_studies=5, peaks_per_study=4, seed=11)
    maps = recreate(studies, anisotropy=0.0).persist(scheduler="threads")
    settings = PsiAnalysis(imputations=2, permutations=9, seed=3, threshold=PsiThreshold(fwe="tfce", p=0.25))
    root = tmp_path_factory.mktemp("psi")
    with dask.config.set(scheduler="threads"):
        output = run_psi("ps", settings, maps, root / "s.zarr", root / "out")
    return output, studies


def test_psi_report_names_every_step_and_draws_the_null(psi_run):
    from PIL import Image

    output, studies = psi_run
    path, table = output["html"], output["clusters"]
    assert path == output["out"] / "report.html" and len(table) >= 1
    with Image.open(output["null_figure"]) as image:
        image.verify()
    with Image.open(output["out"] / "null_maxima.png") as image:
        assert image.format == "PNG" and image.width > 1000 and image.height > 700
    assert (output["out"] / "glass_brain.png").exists()
    text = path.read_text(encoding="utf-8")
    assert text.count("<tr data-cluster=") == len(table)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text) and "<script src" not in text
    assert "SDM-PSI (psi): 2 imputations, 9 permutations of subject images, seed 3" in text
    assert "p_fwe_tfce &lt; 0.25" in text and "voxel p &lt;" not in text
    assert "<th>p_fwe_voxel</th>" in text and "<th>p_fwe_tfce</th>" in text
    assert "<th>heterogeneity</th>" not in text  # PSI has no Q-test p: the flag would always be "no"
    # every step of the methods, with its parameters
    for step in ("2 imputations", "truncated normal", "subject images", "DerSimonian-Laird", "Rubin's rules",
                 "E = 0.5, H = 2, dh = 0.1", "9 permutations of the subject images",
                 "family-wise error rate of TFCE below 0.25"):
        assert step in text.replace("&#x27;", "'"), step
    for reference in ("NeuroImage 2019;186:174-184", "NeuroImage 2009;44:83-98",
                      "Rubin DB. Multiple Imputation", "Hum Brain Mapp 2002;15:1-25"):
        assert reference in text, reference
    assert 'src="null_maxima.png"' in text and 'src="glass_brain.png"' in text
    # the peaks' p is the uncorrected normal p; the FWE columns are their own
    assert (table["p"] <= table["p_fwe_tfce"]).all() and (table["p_fwe_tfce"] < 0.25).all()
    # index.html lists it as psi even without the run's kinds, and links its null figure
    index = write_index(output["out"].parent, studies, {"analysis ps (psi)": {"imputations": 2}})
    listing = index.read_text(encoding="utf-8")
    assert "<td>psi</td>" in listing and 'href="ps/null_maxima.png"' in listing


def test_psi_report_without_permutations_says_so(psi_run, tmp_path):
    from daskmeta.io.store import read_group
    from daskmeta.report.psi_report import write_null_figure

    output, _ = psi_run
    result = read_group(output["out"].parent.parent / "s.zarr", "analyses/ps").compute()
    observed = result.drop_vars(["null_max_z", "null_min_z", "null_max_tfce", "null_min_tfce"])
    observed.attrs = {**result.attrs, "permutations": 0}
    (tmp_path / "null_maxima.png").write_bytes(b"stale")
    assert write_null_figure(observed, tmp_path) is None and not (tmp_path / "null_maxima.png").exists()
    threshold_params = {"fwe": "none", "p": 0.005, "peak_z": 0.0, "extent": 10}
    page = write_html_report(observed, output["labels"], output["clusters"], tmp_path, threshold_params)
    text = page.read_text(encoding="utf-8")
    assert "No permutation was run" in text and "null_maxima.png" not in text
    assert "p &lt; 0.005, &gt;= 10 voxels" in text and "No permutation was run, so no family-wise" in text


def test_psi_report_in_a_browser(psi_run):
    output, _ = psi_run
    table = output["clusters"]
    with open_page(output["html"]) as (page, problems):
        assert page.locator("canvas").count() >= 3
        colours = page.evaluate("""() => {
            const c = document.getElementById('view-axial'), d = c.getContext('2d')
                .getImageData(0, 0, c.width, c.height).data, seen = new Set();
            for (let n = 0; n < d.length; n += 4 * 97) seen.add(d[n] + ',' + d[n + 1] + ',' + d[n + 2]);
            return seen.size; }""")
        assert colours > 20
        assert page.locator("table.sortable tbody tr[data-cluster]").count() == len(table)
        assert page.locator("#cluster-buttons button").count() == (table["peak_type"] == "cluster").sum()
        assert page.locator("img[src='null_maxima.png']").evaluate("i => i.naturalWidth") > 1000
        assert page.locator("table.sortable thead th", has_text="p_fwe_tfce").count() == 1
        first = table.iloc[0]
        page.locator("a.goto").first.click()
        assert f"MNI ({int(first.x)}, {int(first.y)}, {int(first.z)})" in page.inner_text("#viewer-info")
        screenshot(page, "psi_report.png")
        assert problems == []
