"""Tests of the seeded study simulator and of the committed CLBP example folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daskmeta.io import load_studies
from daskmeta.model.coordinates import to_spm_mni
from daskmeta.model.grid import load_mask, mm_to_ijk
from daskmeta.stats.effect_size import t_from_p
from daskmeta.testing.clbp import CLBP_EFFECTS, CLBP_SEED, clbp_table, write_clbp_example
from daskmeta.testing.simulate import TrueEffect, simulate_studies, simulate_studyset, threshold_t
from daskmeta.testing.synthetic import null_studies, planted_studies, simulate_table

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "clbp"
PUBLISHED = EXAMPLE / "studies_published.tsv"


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def read_peak_files(folder: Path) -> dict[str, np.ndarray]:
    """Independent parse of the peak files: study -> (n, 4) array of SPM-MNI x, y, z and t."""
    peaks = {}
    for path in folder.glob("*.txt"):
        if path.name == "sdm_table.txt":
            continue
        study, token = path.name[: -len(".txt")].rsplit(".", 1)
        rows = np.array([line.split("\t") for line in path.read_text().splitlines()], float)
        rows = rows.reshape(-1, 4)
        if token == "other_tal":
            rows[:, :3] = to_spm_mni(rows[:, :3], "other_tal")
        else:
            assert token in ("spm_mni", "no_peaks")
        peaks[study] = rows
    return peaks


@pytest.fixture(scope="module")
def clbp_folder(tmp_path_factory) -> Path:
    return write_clbp_example(tmp_path_factory.mktemp("clbp") / "clbp")


@pytest.fixture(scope="module")
def clbp_truth():
    return simulate_studyset(clbp_table(), list(CLBP_EFFECTS), CLBP_SEED)


def test_same_seed_writes_identical_files(tmp_path):
    table = simulate_table(8, seed=3, talairach_fraction=0.5, n_peaks_range=(0, 6),
                           covariates={"age": (20, 60)})
    effect = [TrueEffect(-38, -26, 56, probability=0.7)]
    first = simulate_studies(table, effect, tmp_path / "a", seed=11)
    second = simulate_studies(table, effect, tmp_path / "b", seed=11)
    assert folder_bytes(first) == folder_bytes(second)


def test_different_seed_writes_different_peaks(tmp_path):
    table = simulate_table(8, seed=3)
    first = folder_bytes(simulate_studies(table, None, tmp_path / "a", seed=1))
    second = folder_bytes(simulate_studies(table, None, tmp_path / "b", seed=2))
    assert first["sdm_table.txt"] == second["sdm_table.txt"]
    assert first.keys() == second.keys()
    assert first != second


def test_a_study_does_not_depend_on_the_others():
    table = simulate_table(6, seed=4)
    whole = simulate_studyset(table, None, seed=9).peaks
    alone = simulate_studyset(table.iloc[[3]], None, seed=9).peaks
    expected = whole[whole["study"] == table["study"][3]].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, expected)


def test_each_study_has_its_published_number_of_peaks(clbp_folder):
    published = pd.read_csv(PUBLISHED, sep="\t", na_values=["NA"], keep_default_na=False)
    published = published[published["included"] == "yes"].set_index("study")
    peaks = read_peak_files(clbp_folder)
    assert set(peaks) == set(published.index)
    for study, count in published["n_peaks"].items():
        # the one missing count takes the median of its modality (ReHo: 7)
        expected = 7 if study == "Zhang2021_ReHo" else int(count)
        assert len(peaks[study]) == expected, study
    assert (clbp_folder / "Li2019_ReHo.no_peaks.txt").read_text() == ""
    assert (clbp_folder / "Chen2011_ReHo.other_tal.txt").exists()
    assert (clbp_folder / "Zhao2016_ALFF.other_tal.txt").exists()


def test_peaks_lie_in_grey_matter_and_pass_the_threshold(clbp_folder):
    mask = load_mask("gray_matter")
    table = pd.read_csv(clbp_folder / "sdm_table.txt", sep="\t").set_index("study")
    for study, rows in read_peak_files(clbp_folder).items():
        if len(rows) == 0:
            continue
        ijk = mm_to_ijk(rows[:, :3])
        assert mask.volume[tuple(ijk.T)].all(), study
        assert np.all(np.abs(rows[:, 3]) >= table.loc[study, "t_thr"]), study


def test_sdm_table_columns_and_thresholds(clbp_folder):
    table = pd.read_csv(clbp_folder / "sdm_table.txt", sep="\t", keep_default_na=False,
                        na_values=["NA", ""])
    assert list(table.columns) == ["study", "n1", "n2", "t_thr", "age", "duration", "vas",
                                   "modality"]
    assert (table["modality"] == "ReHo").sum() == 12
    assert (table["modality"] == "ALFF").sum() == 12
    corrected = table.set_index("study").loc["Zhou2019_ReHo"]
    assert corrected["t_thr"] == pytest.approx(float(t_from_p(0.001, 49)), abs=5e-5)
    uncorrected = table.set_index("study").loc["Sun2018_ALFF"]
    assert uncorrected["t_thr"] == pytest.approx(float(t_from_p(0.05, 28)), abs=5e-5)


def test_true_effect_peaks_carry_the_effect_sign(clbp_truth):
    peaks = clbp_truth.peaks
    by_name = {effect.name: effect for effect in CLBP_EFFECTS}
    true_peaks = peaks[peaks["effect"] != ""]
    assert set(true_peaks["effect"]) == set(by_name)
    studies = clbp_truth.studies.set_index("study")
    for peak in true_peaks.itertuples():
        effect = by_name[peak.effect]
        assert np.sign(peak.t) == effect.sign
        assert effect.modality in (None, studies.loc[peak.study, "modality"])
        assert np.linalg.norm([peak.x - effect.x, peak.y - effect.y, peak.z - effect.z]) < 30


def test_reader_returns_the_simulated_studyset(clbp_folder, clbp_truth):
    read = load_studies(clbp_folder)
    simulated = clbp_truth.peaks.drop(columns=["effect", "source"])
    pd.testing.assert_frame_equal(
        read.peaks[simulated.columns].reset_index(drop=True), simulated,
        check_dtype=False, atol=1e-9,
    )
    pd.testing.assert_frame_equal(
        read.studies[clbp_truth.studies.columns], clbp_truth.studies, check_dtype=False
    )


def test_planted_effect_is_reported_near_its_location(tmp_path):
    location = np.array([-4.0, -56.0, 30.0])
    folder = planted_studies(tmp_path / "planted", location, n_studies=20, seed=5,
                             sign=-1, probability=1.0)
    peaks = read_peak_files(folder)
    near = [study for study, rows in peaks.items()
            if np.any((np.linalg.norm(rows[:, :3] - location, axis=1) <= 8) & (rows[:, 3] < 0))]
    assert len(near) > len(peaks) / 2


def test_null_studies_spread_peaks_over_grey_matter(tmp_path):
    folder = null_studies(tmp_path / "null", n_studies=30, seed=6, n_peaks_range=(5, 10))
    rows = np.concatenate(list(read_peak_files(folder).values()))
    assert 0.35 < np.mean(rows[:, 3] > 0) < 0.65
    assert np.std(rows[:, 0]) > 30 and np.std(rows[:, 1]) > 30  # no focus anywhere
    centre = rows[:, :3] - np.array([-4.0, -56.0, 30.0])
    assert np.mean(np.linalg.norm(centre, axis=1) <= 8) < 0.02


def test_refuses_to_overwrite_unless_asked(tmp_path):
    table = simulate_table(3, seed=0)
    folder = simulate_studies(table, None, tmp_path / "out", seed=1)
    before = folder_bytes(folder)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        simulate_studies(table, None, folder, seed=2)
    assert folder_bytes(folder) == before
    (folder / "stale.no_peaks.txt").write_text("")
    simulate_studies(table, None, folder, seed=2, overwrite=True)
    after = folder_bytes(folder)
    assert "stale.no_peaks.txt" not in after and after != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


def test_an_empty_existing_folder_is_filled(tmp_path):
    (tmp_path / "empty").mkdir()
    simulate_studies(simulate_table(2, seed=0), None, tmp_path / "empty", seed=0)
    assert (tmp_path / "empty" / "sdm_table.txt").exists()


def test_a_failed_write_leaves_nothing(tmp_path):
    bad = simulate_table(2, seed=0).assign(threshold="p<0.05 something")
    with pytest.raises(ValueError, match="neither 'corrected' nor 'uncorrected'"):
        simulate_studies(bad, None, tmp_path / "out", seed=0)
    assert list(tmp_path.iterdir()) == []


def test_committed_example_equals_a_fresh_simulation(clbp_folder):
    generated = folder_bytes(clbp_folder)
    committed = {name: data for name, data in folder_bytes(EXAMPLE).items()
                 if name.endswith(".txt")}
    assert committed == generated


def test_packaged_table_equals_the_example_copy():
    packaged = Path(__file__).resolve().parents[1] / "daskmeta" / "datasets" / "clbp_studies.tsv"
    assert packaged.read_bytes() == PUBLISHED.read_bytes()
    table = clbp_table()
    assert len(table) == 24 and table["study"].is_unique


def test_clbp_effects_lie_in_grey_matter():
    mask = load_mask("gray_matter")
    for effect in CLBP_EFFECTS:
        assert mask.volume[tuple(mm_to_ijk(effect.xyz)[0])], effect.name


@pytest.mark.parametrize(
    ("text", "p"),
    [("p<0.05 corrected", 0.001), ("p < 0.05 FWE-corrected", 0.001),
     ("p<0.001 uncorrected", 0.001), ("p<0.05 uncorrected", 0.05),
     ("P<.005, unc.", 0.005), ("GRF corrected", 0.001)],
)
def test_threshold_text_rule(text, p):
    assert threshold_t(text, 20, 20) == pytest.approx(float(t_from_p(p, 38)))


def test_threshold_t_of_a_one_sample_study():
    assert threshold_t("p<0.01 uncorrected", 20, np.nan) == pytest.approx(
        float(t_from_p(0.01, 19))
    )


@pytest.mark.parametrize("text", ["p<0.05", "uncorrected", "cluster-level"])
def test_threshold_text_that_cannot_be_read(text):
    with pytest.raises(ValueError, match="threshold"):
        threshold_t(text, 20, 20)


def test_table_t_thr_overrides_threshold_text():
    table = simulate_table(3, seed=0).assign(t_thr=[2.5, np.nan, 4.0])
    studies = simulate_studyset(table, None, seed=0).studies
    assert studies["t_thr"].tolist()[0::2] == [2.5, 4.0]
    assert studies["t_thr"][1] == pytest.approx(
        threshold_t("p<0.001 uncorrected", table["n1"][1], table["n2"][1]), abs=5e-5
    )


def test_one_sample_studies_leave_n2_empty(tmp_path):
    table = simulate_table(3, seed=0, one_sample=True)
    folder = simulate_studies(table, None, tmp_path / "one", seed=0)
    lines = (folder / "sdm_table.txt").read_text().splitlines()
    assert all(line.split("\t")[2] == "" for line in lines[1:])
    assert load_studies(folder).studies["n2"].isna().all()


def test_bad_inputs_are_named():
    table = simulate_table(3, seed=0)
    with pytest.raises(ValueError, match="sign must be"):
        TrueEffect(0, 0, 0, sign=2)
    with pytest.raises(ValueError, match="probability must lie"):
        TrueEffect(0, 0, 0, probability=1.5)
    with pytest.raises(ValueError, match="duplicate study name"):
        simulate_studyset(pd.concat([table, table]), None, seed=0)
    with pytest.raises(ValueError, match="modality"):
        simulate_studyset(table, [TrueEffect(0, 0, 0, modality="ReHo")], seed=0)
    with pytest.raises(ValueError, match="space must be one of"):
        simulate_studyset(table.assign(space="native"), None, seed=0)
    with pytest.raises(ValueError, match="lacks columns"):
        simulate_studyset(table.drop(columns="n_peaks"), None, seed=0)
    with pytest.raises(ValueError, match="n1 of study 'study02' must be a positive number"):
        simulate_studyset(table.assign(n1=[20, 0, 20]), None, seed=0)
    with pytest.raises(TypeError, match="DataFrame"):
        simulate_studyset(table.to_dict(), None, seed=0)
