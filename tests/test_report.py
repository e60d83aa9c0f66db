"""The Markdown report and glass brain of a mean analysis (daskmeta.report.summary)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from daskmeta.inference.thresholding import empty_table
from daskmeta.model.grid import load_mask
from daskmeta.report.summary import REFERENCES, methods_text, write_report
from daskmeta.stats.null import histogram

THRESHOLD = {"p": 0.005, "peak_z": 1.0, "extent": 10}
PERMUTATIONS = 24
SEED = 4321
#: The planted blob's centre (MNI mm), a grey-matter voxel of the precentral gyrus.
CENTRE = (-40, -20, 50)


def make_result(rng: np.random.Generator, blob: bool = True, **attrs) -> xr.Dataset:
    """A computed mean result on the real grey-matter mask with a positive blob at CENTRE."""
    mask = load_mask("gray_matter")
    n = mask.n_voxels
    distance = np.linalg.norm(mask.xyz - np.array(CENTRE), axis=1)
    inside = distance <= 8.0 if blob else np.zeros(n, dtype=bool)
    z = rng.normal(0.0, 0.5, n)
    z[inside] = 4.5 - distance[inside] / 8.0
    p = np.where(inside, 1e-4, 0.5)
    p_fwe = np.where(inside, 0.04, 1.0)
    zeros = np.zeros(n)
    maps = {name: ("voxel", values) for name, values in {
        "effect": z / 5, "variance": zeros + 0.04, "z": z, "p": p, "p_fwe": p_fwe, "tau2": zeros,
        "q": zeros + 5.0, "i2": zeros, "p_q": zeros + 0.5, "q_z": zeros}.items()}
    null_z = rng.standard_normal(PERMUTATIONS * n)
    null = {
        "null_hist": ("bin", histogram(null_z)),
        "null_max_z": ("randomization", 4.0 + rng.random(PERMUTATIONS)),
        "null_min_z": ("randomization", -4.0 - rng.random(PERMUTATIONS)),
        "null_max_cluster_pos": ("randomization", rng.integers(5, 60, PERMUTATIONS)),
        "null_max_cluster_neg": ("randomization", rng.integers(5, 60, PERMUTATIONS)),
    }
    names = [f"study{s:02d}" for s in range(7)]
    result = xr.Dataset({**maps, **null})
    result.attrs = {
        "type": "mean", "name": "ocd_gm", "n_studies": len(names), "studies": names, "where": "",
        "permutations": PERMUTATIONS, "seed": SEED, "voxel_p": 0.005, "mask": "gray_matter",
        "preprocess": {"fwhm": 18.0, "anisotropy": 0.8, "beta": 1.5,
                       "kernel": "aes-sdm, tissue-aware geodesic distance (daskmeta)"},
        "studies_hash": "abc123",
        "null": "uniform relocation of each study's voxels (with replacement); "
                "one null pooled over voxels and randomizations",
        "daskmeta_version": "0.1.0",
    }
    result.attrs.update(attrs)
    return result


def make_clusters() -> pd.DataFrame:
    rows = [
        {"cluster": 1, "direction": "positive", "peak_type": "cluster", "x": CENTRE[0],
         "y": CENTRE[1], "z": CENTRE[2], "sdm_z": 4.5, "p": 1e-4, "voxels": 257,
         "breakdown": "Precentral_L (180) | BA 4 (90)", "region": "Precentral_L",
         "heterogeneity": False, "i2": 0.0, "p_fwe": 0.04, "cluster_p_fwe": 0.02},
        {"cluster": 1, "direction": "positive", "peak_type": "sub", "x": -34, "y": -14, "z": 54,
         "sdm_z": 3.8, "p": 2e-4, "voxels": 257, "breakdown": "Precentral_L (180) | BA 4 (90)",
         "region": "Frontal_Mid_2_L", "heterogeneity": True, "i2": 0.42, "p_fwe": 0.08,
         "cluster_p_fwe": 0.02},
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def result() -> xr.Dataset:
    return make_result(np.random.default_rng(20261125))


@pytest.fixture(scope="module")
def report(result, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return write_report(result, make_clusters(), out, THRESHOLD, extra={"run time (s)": 12.5})


def test_summary_states_the_analysis(report, result):
    assert report.name == "summary.md" and report.exists()
    text = report.read_text(encoding="utf-8")
    n_voxels = result.sizes["voxel"]
    for expected in [
        "# SDM meta-analysis: ocd_gm", "7 studies", "all studies",
        "FWHM 18 mm", "anisotropy 0.8", "beta = 1.5",
        f"{PERMUTATIONS} randomizations", f"seed {SEED}",
        "voxel p < 0.005", "peak |SDM-Z| >= 1", "extent >= 10 voxels",
        f"{n_voxels:,} voxels", f"{PERMUTATIONS * n_voxels:,}",
        "-40, -20, 50", "-34, -14, 54", "4.500", "Precentral_L",
        "1 positive cluster", "0 negative clusters",
        "## Methods", "## References", "![Glass brain", "(glass_brain.png)",
        "run time (s): 12.5", "daskmeta 0.1.0",
    ]:
        assert expected in text, expected
    for reference in REFERENCES:
        assert reference in text
    for citation in ["Br J Psychiatry 2009;195:393", "Eur Psychiatry 2012;27:605",
                     "Front Psychiatry 2014;5:13", "Control Clin Trials 1986;7:177",
                     "J Educ Stat 1981;6:107", "Stat Med 2002;21:1539", "NeuroImage 2011;54:313",
                     "NeuroImage 2002;15:273", "Hum Brain Mapp 2007;28:1194"]:
        assert citation in text, citation
    # The breakdown's " | " must not split the Markdown table cell.
    assert "Precentral_L (180) \\| BA 4 (90)" in text
    assert "yes (42.0%)" in text


def test_null_facts(report, result):
    text = report.read_text(encoding="utf-8")
    max95 = np.percentile(result["null_max_z"].values, 95)
    assert f"{max95:.3f}" in text
    # The null is a standard normal: p < 0.005 sits near z = 2.576.
    line = next(line for line in text.splitlines() if "corresponds in this null" in line)
    z_pos = float(line.split("SDM-Z >= ")[1].split(" ")[0])
    assert z_pos == pytest.approx(2.576, abs=0.01)
    assert f"1/{PERMUTATIONS + 1}" in text


def test_glass_brain_is_a_png(report):
    from matplotlib import image

    path = report.parent / "glass_brain.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 400
    assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 10
    # The planted positive blob is drawn in red: some pixels are clearly red.
    red = (pixels[..., 0] > 0.4) & (pixels[..., 1] < 0.2) & (pixels[..., 2] < 0.2)
    assert red.sum() > 50


def test_empty_clusters_and_empty_map(tmp_path):
    result = make_result(np.random.default_rng(1), blob=False)
    clusters = empty_table().assign(cluster_p_fwe=pd.Series(dtype=float))
    path = write_report(result, clusters, tmp_path, THRESHOLD)
    text = path.read_text(encoding="utf-8")
    assert "No cluster survived the thresholds" in text
    assert "| Cluster |" not in text
    assert "## Methods" in text
    from matplotlib import image

    pixels = image.imread(tmp_path / "glass_brain.png")
    assert pixels.shape[0] > 200
    assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 1


def test_methods_follow_the_attrs(result):
    base = methods_text(result, THRESHOLD)
    assert "not recorded" not in base and "nan" not in base
    changed = result.copy()
    changed.attrs = {**result.attrs, "preprocess": {**result.attrs["preprocess"], "fwhm": 15.0},
                     "permutations": 60, "seed": 7, "where": "modality == 'VBM'",
                     "daskmeta_version": "9.9.9"}
    text = methods_text(changed, {"p": 0.001, "peak_z": 1.5, "extent": 20})
    assert "FWHM 15 mm" in text and "FWHM 18 mm" not in text
    assert "60 randomizations" in text and "seed 7" in text and "1/61" in text
    assert "`modality == 'VBM'`" in text and "daskmeta 9.9.9" in text
    assert "voxel p < 0.001" in text and "|SDM-Z| >= 1.5" in text and ">= 20 voxels" in text


def test_methods_and_facts_state_where_the_voxel_null_stopped(result, tmp_path):
    """A run of 5000 randomizations whose voxel null stopped at 24 (docs/methods.md, 5.2)."""
    stopped = result.copy()
    stopped.attrs = {**result.attrs, "permutations": 5000, "uncorrected_permutations": PERMUTATIONS}
    text = methods_text(stopped, THRESHOLD)
    assert f"in each of {PERMUTATIONS} randomizations" in text
    assert "a second null of 5000 randomizations" in text and "1/5001" in text
    report = write_report(stopped, make_clusters(), tmp_path, THRESHOLD).read_text(encoding="utf-8")
    assert (f"Randomizations: 5000 (the voxel null behind the uncorrected p: the first {PERMUTATIONS})"
            in report)
    assert f"(= {PERMUTATIONS} x " in report
    # a run the stop did not shorten says nothing of it
    plain = methods_text(result, THRESHOLD)
    assert f"in each of {PERMUTATIONS} randomizations" in plain
    assert f"a second null of {PERMUTATIONS} randomizations" in plain


def test_isotropic_kernel_is_described_as_such(result):
    isotropic = result.copy()
    isotropic.attrs = {**result.attrs, "preprocess": {**result.attrs["preprocess"], "anisotropy": 0.0}}
    text = methods_text(isotropic, THRESHOLD)
    assert "isotropic Gaussian" in text and "geodesic" not in text
    assert "geodesic" in methods_text(result, THRESHOLD)
    # the cluster-extent null relocates peaks as the study maps' kernel allows (methods 5.4)
    assert "relocated every study's peaks to uniformly random mask voxels" in " ".join(text.split())
    anisotropic = " ".join(methods_text(result, THRESHOLD).split())
    assert "centres of a fixed sample of mask voxels" in anisotropic
    assert " isotropic kernel" not in anisotropic


def test_bad_inputs_are_named(result, tmp_path):
    with pytest.raises(ValueError, match="extent"):
        write_report(result, make_clusters(), tmp_path, {"p": 0.005, "peak_z": 1.0})
    with pytest.raises(TypeError, match="xarray.Dataset"):
        write_report({"z": result["z"].values}, make_clusters(), tmp_path, THRESHOLD)
    with pytest.raises(ValueError, match="region"):
        write_report(result, make_clusters().drop(columns="region"), tmp_path, THRESHOLD)
    assert not (tmp_path / "summary.md").exists()


def test_import_is_light():
    code = ("import sys, daskmeta.report.summary; "
            "bad = [m for m in ('nilearn', 'matplotlib', 'nibabel') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("engine", "expected", "absent"), [
    ("permutation", "uniformly random permutation of the mask's voxels", "with replacement"),
    ("numba", "with replacement from the mask (drawn with a SplitMix64", "permutation"),
    ("reference", "with replacement from the mask (drawn with NumPy's PCG64", "permutation"),
])
def test_methods_state_how_voxels_were_relocated(engine, expected, absent):
    result = make_result(np.random.default_rng(1), null_engine=engine)
    text = " ".join(methods_text(result, THRESHOLD).split())
    assert expected in text
    assert absent not in text
