"""The FWE calibration harness (daskmeta.testing.calibration; docs/methods.md, sections 5.3-5.4).

Fast tests hold its arithmetic on hand-made inputs: the FWE p formula, the leave-one-out
yardstick, the thresholds, one hand-made result, the summary. The slow test runs null
meta-analyses of random-peak studies recreated with the anisotropic kernel and checks that
neither correction is invalid (too many rejections at 0.05) and that the cluster-level one,
whose null recreates relocated peaks with the data's kernel, is not far more conservative than
a calibrated test (:func:`not_too_conservative`); the voxel-level one is, by design (section 5.3),
and its medians are printed.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from daskmeta.model.grid import load_mask
from daskmeta.null.randomization import _thresholds
from daskmeta.stats.labelling import label_clusters
from daskmeta.stats.null import NullSummary, histogram
from daskmeta.stats.pvalues import cluster_p_fwe, p_fwe
from daskmeta.testing.calibration import (
    COLUMNS,
    calibration_run,
    cluster_thresholds,
    fwe_p,
    leave_one_out_p,
    rejection_limit,
    replicate_rows,
    replicate_seeds,
    summarize,
)

#: Slow test: SLOW_REPLICATES null meta-analyses of SLOW_STUDIES studies (the issue's 20), with
#: SLOW_PERMUTATIONS randomizations each (smallest p 1/101), at anisotropy 1 (the issue's
#: setting): about 2.7 s of CPU per replicate on this project's 2-core machine.
SLOW_REPLICATES, SLOW_STUDIES, SLOW_PERMUTATIONS = 40, 20, 100
#: How far the median smallest p may lie above a calibrated test's (the leave-one-out
#: yardstick) before a correction counts as too conservative; pooled over both directions
#: (80 values at 40 replicates: the median of 80 uniform p has a standard error of about 0.056).
MAX_MEDIAN_EXCESS = 0.2


def not_too_conservative(summary: pd.DataFrame, kind: str = "cluster",
                         max_excess: float = MAX_MEDIAN_EXCESS) -> pd.DataFrame:
    """Rows of ``summary`` (:func:`summarize`) for ``kind`` whose median smallest p exceeds the
    yardstick's median by more than ``max_excess``, pooled over directions; empty when fine.

    Asserted for both corrections in the slow test: with the isotropic null of earlier versions
    the cluster correction's pooled excess at anisotropy 1 was 0.46 (median 0.965 against 0.502,
    benchmarks/README.md), and the voxel correction's about 0.5 while it came from relocated
    voxels; with the kernel bank (docs/methods.md, sections 5.3-5.4), about 0 for both.
    """
    rows = summary.xs((kind, "pooled"), level=("kind", "direction"), drop_level=False)
    return rows[rows["median_p"] - rows["yardstick_median"] > max_excess]


# -- the p formula ---------------------------------------------------------------------------

def test_fwe_p_counts_ties_as_beyond_and_gives_one_to_nothing():
    null = [0, 4, 4, 9, 2]
    assert fwe_p([4, 9, 10, 1, 0], null).tolist() == [4 / 6, 2 / 6, 1 / 6, 5 / 6, 1.0]
    assert fwe_p([-2.0, -5.0, 0.5, 0.0], [-1.0, -2.0, -3.0], tail="lower").tolist() == [
        3 / 4, 1 / 4, 1.0, 1.0]
    # largest z <= 0: nothing positive to correct
    assert fwe_p([-0.5, 0.0], [1.0, 2.0]).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="tail"):
        fwe_p(1, [1], tail="two")
    with pytest.raises(ValueError, match="at least one"):
        fwe_p(1, [])


def test_fwe_p_is_the_analysis_formula(rng):
    """The same numbers as cluster_p_fwe (export's cluster p) and p_fwe (the result's p_fwe)."""
    sizes = rng.integers(0, 50, 200)
    null = rng.integers(0, 50, 99)
    np.testing.assert_array_equal(fwe_p(sizes, null), cluster_p_fwe(sizes, null))
    z = rng.normal(0, 3, 200)
    max_z, min_z = rng.normal(3, 1, 99), rng.normal(-3, 1, 99)
    expected = p_fwe(z, max_z, min_z)
    positive = z > 0
    np.testing.assert_array_equal(fwe_p(z[positive], max_z), expected[positive])
    np.testing.assert_array_equal(fwe_p(z[~positive], min_z, "lower"), expected[~positive])


# -- the leave-one-out yardstick -------------------------------------------------------------

def test_leave_one_out_by_hand():
    assert leave_one_out_p([10, 27, 30, 0, 5]).tolist() == [0.6, 0.4, 0.2, 1.0, 0.8]
    # ties: both 7s see each other
    assert leave_one_out_p([7, 7, 3]).tolist() == [2 / 3, 2 / 3, 1.0]
    assert leave_one_out_p([-4.0, -6.0, -3.0, 1.0], tail="lower").tolist() == [0.5, 0.25, 0.75, 1.0]
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_p([3])


def test_leave_one_out_is_each_randomization_against_the_others(rng):
    null = rng.integers(0, 20, 60)  # many ties and some zeros
    brute = [fwe_p(null[b], np.delete(null, b)).item() for b in range(null.size)]
    np.testing.assert_allclose(leave_one_out_p(null), brute, rtol=0, atol=1e-15)
    z = -np.abs(rng.normal(size=60)).round(1)
    brute = [fwe_p(z[b], np.delete(z, b), "lower").item() for b in range(z.size)]
    np.testing.assert_allclose(leave_one_out_p(z, "lower"), brute, rtol=0, atol=1e-15)


def test_leave_one_out_without_ties_is_uniform_on_its_grid(rng):
    """Distinct values: the p-values are exactly 1/B, ..., B/B, an exact test's distribution."""
    null = rng.permutation(np.arange(1, 41))
    p = leave_one_out_p(null)
    np.testing.assert_allclose(np.sort(p), np.arange(1, 41) / 40)
    assert p.mean() == pytest.approx(41 / 80)
    assert np.mean(p <= 0.05) == 2 / 40


# -- thresholds and one hand-made result -----------------------------------------------------

def test_cluster_thresholds_are_the_null_s(rng):
    hist = histogram(rng.normal(size=200_000))
    summary = NullSummary(hist, np.zeros(1), np.zeros(1), np.zeros(1, int), np.zeros(1, int))
    for p in (0.005, 0.05, 0.0001):
        assert cluster_thresholds(hist, p) == _thresholds(summary, p)
    z_pos, z_neg = cluster_thresholds(hist, 0.005)
    assert 2.4 < z_pos < 2.8 and -2.8 < z_neg < -2.4


def _interior_voxel(mask, offset):
    """A mask voxel whose 26 neighbours are all in the mask, and their indices (cube of 27)."""
    lookup = mask.lookup
    for index in range(offset, mask.n_voxels):
        i, j, k = mask.ijk[index]
        cube = lookup[i - 1:i + 2, j - 1:j + 2, k - 1:k + 2]
        if cube.shape == (3, 3, 3) and (cube >= 0).all():
            return cube.ravel()
    raise AssertionError("no interior voxel")


def _hand_made_result(rng):
    mask = load_mask("gray_matter")
    z = np.zeros(mask.n_voxels)
    cube = _interior_voxel(mask, mask.n_voxels // 3)
    z[cube] = 4.0                       # a positive cluster of 27 voxels, largest z 4
    far = _interior_voxel(mask, 2 * mask.n_voxels // 3)
    z[far[13]] = 3.0                    # an isolated positive voxel
    z[far[[0, 1]]] = [-3.0, -5.0]       # a negative cluster of 2 (neighbours), smallest z -5
    z[far[26]] = 2.0                    # positive, below the threshold
    null = {"null_max_z": [3.0, 4.5, 5.0, 3.5, 6.0], "null_min_z": [-4.0, -6.0, -3.0, -5.0, -2.0],
            "null_max_cluster_pos": [10, 27, 30, 0, 5], "null_max_cluster_neg": [1, 2, 3, 0, 0]}
    result = xr.Dataset(
        {"z": ("voxel", z),
         "p_fwe": ("voxel", p_fwe(z, null["null_max_z"], null["null_min_z"])),
         "null_hist": ("bin", histogram(rng.normal(size=200_000))),
         **{name: ("randomization", np.asarray(values)) for name, values in null.items()}},
        attrs={"cluster_null": True, "voxel_p": 0.005, "mask": "gray_matter", "n_studies": 3,
               "permutations": 5, "preprocess": {"anisotropy": 1.0}})
    return result, mask


def test_replicate_rows_of_a_hand_made_result(rng):
    result, mask = _hand_made_result(rng)
    rows = replicate_rows(result, replicate=3, seed=7, n_peaks=11)
    assert list(rows.columns) == list(COLUMNS) and len(rows) == 4
    got = rows.set_index(["kind", "direction"])
    # the planted clusters, as labelled in the full volume (not the harness's own path)
    _, sizes = label_clusters(mask.to_volume(result.z.values >= got.loc[("cluster", "positive"),
                                                                        "threshold"], False))
    assert sizes.max() == got.loc[("cluster", "positive"), "observed"] == 27
    assert got.loc[("cluster", "negative"), "observed"] == 2
    assert got.loc[("cluster", "positive"), "p"] == 3 / 6      # null >= 27: 27, 30
    assert got.loc[("cluster", "negative"), "p"] == 3 / 6      # null >= 2: 2, 3
    assert got.loc[("voxel", "positive"), ["observed", "p"]].tolist() == [4.0, 4 / 6]
    assert got.loc[("voxel", "negative"), ["observed", "p"]].tolist() == [-5.0, 3 / 6]
    cluster = got.loc[("cluster", "positive")]
    assert cluster["yardstick_mean"] == pytest.approx(0.6)      # [0.6, 0.4, 0.2, 1, 0.8]
    assert cluster["yardstick_median"] == pytest.approx(0.6)
    assert cluster["yardstick_rejection"] == 0.0 and cluster["null_median"] == 10
    # [0.6, 0.2, 0.8, 0.4, 1.0]
    assert got.loc[("voxel", "negative"), "yardstick_median"] == pytest.approx(0.6)
    assert np.isnan(got.loc[("voxel", "positive"), "threshold"])
    assert set(rows["anisotropy"]) == {1.0} and set(rows["n_peaks"]) == {11}
    assert set(rows["replicate"]) == {3} and set(rows["permutations"]) == {5}


def test_replicate_rows_without_a_positive_voxel_or_cluster(rng):
    result, _ = _hand_made_result(rng)
    result["z"] = -np.abs(result.z)
    result["p_fwe"] = ("voxel", p_fwe(result.z.values, result.null_max_z, result.null_min_z))
    got = replicate_rows(result).set_index(["kind", "direction"])
    assert got.loc[("cluster", "positive"), ["observed", "p"]].tolist() == [0, 1.0]
    assert got.loc[("voxel", "positive"), "p"] == 1.0


def test_replicate_rows_needs_the_cluster_null(rng):
    result, _ = _hand_made_result(rng)
    result.attrs["cluster_null"] = False
    with pytest.raises(ValueError, match="cluster-extent null"):
        replicate_rows(result)


# -- the summary -----------------------------------------------------------------------------

def _frame(p_positive, p_negative, yardstick=0.5):
    rows = []
    for r, (pos, neg) in enumerate(zip(p_positive, p_negative, strict=True)):
        for direction, p in (("positive", pos), ("negative", neg)):
            for kind in ("cluster", "voxel"):
                rows.append({"replicate": r, "seed": 0, "n_studies": 20, "permutations": 19,
                             "anisotropy": 1.0, "voxel_p": 0.005, "n_peaks": 100, "kind": kind,
                             "direction": direction, "threshold": 2.6, "observed": 1.0,
                             "p": p if kind == "cluster" else 1.0, "null_median": 1.0,
                             "yardstick_mean": yardstick, "yardstick_median": yardstick + r / 100,
                             "yardstick_rejection": 0.05})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_summary_by_hand():
    summary = summarize(_frame([0.05, 0.5, 1.0, 0.1], [0.05, 0.05, 0.9, 0.3]))
    key = (20, 19, 1.0, 0.005, "cluster")
    positive, negative, pooled = (summary.loc[(*key, d)] for d in ("positive", "negative", "pooled"))
    assert positive["n"] == 4 and pooled["n"] == 8
    assert positive["mean_p"] == pytest.approx(1.65 / 4)
    assert positive["median_p"] == pytest.approx(0.3)
    assert negative["median_p"] == pytest.approx(0.175)
    assert positive["rejections"] == 1 and negative["rejections"] == 2 and pooled["rejections"] == 3
    assert negative["rate"] == 0.5
    # one-sided 95 % Clopper-Pearson: P(X <= 1 | n=4, upper) = 0.05
    assert stats.binom.cdf(1, 4, positive["rate_upper"]) == pytest.approx(0.05)
    assert positive["yardstick_mean"] == 0.5 and positive["yardstick_median"] == pytest.approx(0.515)
    assert positive["yardstick_rate"] == 0.05
    assert positive["rejection_limit"] == rejection_limit(4)
    assert pooled["rejection_limit"] == rejection_limit(8)
    voxel = summary.loc[(20, 19, 1.0, 0.005, "voxel", "pooled")]
    assert voxel["median_p"] == 1.0 and voxel["rejections"] == 0
    assert voxel["rate_upper"] == pytest.approx(1 - 0.05 ** (1 / 8))
    assert not_too_conservative(summary).empty   # cluster pooled median 0.2 vs ~0.515
    late = summarize(_frame([0.9] * 4, [0.95] * 4))
    assert len(not_too_conservative(late)) == 1
    with pytest.raises(ValueError, match="no rows"):
        summarize(_frame([], []))


def test_rejection_limit_is_the_binomial_quantile():
    for n in (20, 40, 80, 200):
        limit = rejection_limit(n)
        assert stats.binom.sf(limit, n, 0.05) < 0.001 <= stats.binom.sf(limit - 1, n, 0.05)


def test_replicate_seeds_depend_on_seed_and_replicate_only():
    assert replicate_seeds(0, 5) == replicate_seeds(0, 5)
    seeds = {replicate_seeds(s, r) for s in range(3) for r in range(20)}
    assert len(seeds) == 60 and all(len(set(words)) == 3 for words in seeds)


def test_a_small_run_is_deterministic():
    """Two runs with the same arguments give the same frame (3 studies, 5 randomizations)."""
    first = calibration_run(2, n_studies=3, permutations=5, anisotropy=0.0, seed=11)
    pd.testing.assert_frame_equal(first, calibration_run(2, 3, 5, 0.0, seed=11))
    assert list(first.columns) == list(COLUMNS) and len(first) == 8
    assert set(first["replicate"]) == {0, 1} and (first["permutations"] == 5).all()
    assert first["p"].between(1 / 6, 1).all()


# -- the real thing --------------------------------------------------------------------------

@pytest.mark.slow
def test_fwe_corrections_are_valid_on_null_meta_analyses():
    """No correction rejects a null meta-analysis more often than a valid test may (0.1 %).

    Random-peak studies recreated with the anisotropic kernel (anisotropy 1, the default and
    the issue's setting); the medians against the yardstick are printed. Both corrections must
    also be close to calibrated (:func:`not_too_conservative`): the cluster-level one (section
    5.4) and the voxel-level one from the same relocated-peak maps (section 5.3; from relocated
    voxels it had a median smallest p of 1.0).
    """
    start = time.perf_counter()
    frame = calibration_run(SLOW_REPLICATES, SLOW_STUDIES, SLOW_PERMUTATIONS, anisotropy=1.0, seed=1)
    summary = summarize(frame)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"\n{SLOW_REPLICATES} null meta-analyses in {time.perf_counter() - start:.0f} s\n"
              f"{summary.to_string(float_format='{:.3f}'.format)}")
    assert len(frame) == 4 * SLOW_REPLICATES
    assert frame["p"].between(1 / (1 + SLOW_PERMUTATIONS), 1).all()
    for (kind, direction), row in summary.droplevel([0, 1, 2, 3]).iterrows():
        if direction != "pooled":
            assert row["rejections"] <= row["rejection_limit"], (kind, direction, row.to_dict())
    for kind in ("cluster", "voxel"):
        too_conservative = not_too_conservative(summary, kind)
        assert too_conservative.empty, too_conservative.to_string()
