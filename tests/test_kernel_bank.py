"""The cluster-extent null with the data's kernel: the kernel bank (docs/methods.md, section 5.4).

The bank's patches are the recreation's kernel (:func:`peak_kernels`) at its centres; the
certified null (:func:`bank_cluster_block`) gives the cluster sizes of the NumPy/SciPy reference
(:func:`bank_cluster_block_reference`) for the same seeds, at thresholds set exactly at voxels'
z values and at the reference example's thresholds; the mean analysis runs it for anisotropic
study maps.
"""

from __future__ import annotations

import numpy as np
import pytest

from daskmeta.model.grid import load_mask
from daskmeta.null import cells
from daskmeta.null import kernel_bank as kb
from daskmeta.null.cluster_extent import flat_peaks
from daskmeta.null.seeds import relocation_draws
from daskmeta.stats.labelling import largest_cluster
from daskmeta.stats.peak_kernel import kernel_radius, peak_kernels, sigma_from_fwhm
from daskmeta.stats.sdm_model import variance_model

N1 = np.array([20.0, 35.0, 12.0, 50.0, 18.0, 25.0, 40.0])
N2 = np.array([22.0, np.nan, 14.0, 45.0, np.nan, 25.0, 38.0])
CLBP_THRESHOLDS = (1.243, -0.9810000000000001)  # the voxel null's p < 0.005 thresholds of the example


@pytest.fixture(scope="module")
def bank():
    return kb.kernel_bank("gray_matter", 20.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def clbp():
    from daskmeta.analyses.recreate import peak_effects
    from daskmeta.io import load_studies

    studies = load_studies("examples/clbp")
    return (peak_effects(studies).astype(np.float64), studies.studies["n1"].to_numpy(dtype=np.float64),
            studies.studies["n2"].to_numpy(dtype=np.float64))


def _peak_g(counts, seed=11):
    gen = np.random.default_rng(seed)
    peak_g = np.full((len(counts), max(counts)), np.nan)
    for study, count in enumerate(counts):
        peak_g[study, :count] = gen.choice([-1, 1], count) * (0.5 + gen.exponential(0.7, count))
    return peak_g


def test_bank_centres_are_a_fixed_uniform_sample():
    centres = kb.bank_centres(179_890)
    assert len(centres) == kb.BANK_SIZE == len(np.unique(centres))
    assert np.all(np.diff(centres) > 0)
    np.testing.assert_array_equal(centres, kb.bank_centres(179_890))  # a property of the mask
    # uniform over the voxel vector: each tenth holds about a tenth (chi-square, 9 df, p > 0.001)
    counts = np.bincount(centres * 10 // 179_890, minlength=10)
    expected = kb.BANK_SIZE / 10
    assert ((counts - expected) ** 2 / expected).sum() < 27.9
    np.testing.assert_array_equal(kb.bank_centres(50), np.arange(50))  # small masks: every voxel


def test_bank_patches_are_the_recreation_kernel(bank):
    """Each patch: the voxels peak_kernels reaches, its virtual distance to 1/255 of the radius."""
    mask = load_mask("gray_matter")
    graph, node_of = kb.lattice(1.0)
    rows = np.array([0, 1, 777, 2048, kb.BANK_SIZE - 1])
    expected = peak_kernels(mask.ijk[bank.centres[rows]], mask.ijk, 20.0, 1.0, graph, node_of)
    sigma, radius = sigma_from_fwhm(20.0), kernel_radius(20.0)
    for row, values in zip(rows, expected, strict=True):
        voxels, kernel = bank.patch(row)
        np.testing.assert_array_equal(voxels, np.flatnonzero(values))
        distance = np.sqrt(-2 * sigma**2 * np.log(values[voxels]))
        stored = np.sqrt(-2 * sigma**2 * np.log(kernel))
        assert np.abs(stored - distance).max() <= radius / 255 / 2 + 1e-9
        assert kernel[voxels == bank.centres[row]] == 1.0  # the centre is its own peak
    assert bank.levels[0] == 1.0 and bank.levels[-1] == pytest.approx(1e-4, rel=1e-9)
    # the runs are the patches' maximal stretches of consecutive voxels within a grid plane
    for row in rows:
        runs = slice(bank.run_start[row], bank.run_start[row + 1])
        voxel, length = np.asarray(bank.run_voxel[runs]), np.asarray(bank.run_length[runs])
        plane_first, plane_last = mask.ijk[voxel, 0], mask.ijk[voxel + length - 1, 0]
        np.testing.assert_array_equal(plane_first, plane_last)
        assert np.all((np.diff(voxel) > length[:-1]) | (plane_first[1:] != plane_first[:-1]))
        np.testing.assert_array_equal(bank.run_offset[runs], np.cumsum(length) - length)
    assert bank.run_start[0] == 0 and bank.run_start[-1] == len(bank.run_voxel)
    assert bank.start[-1] == len(bank.code) == np.asarray(bank.run_length).sum()
    sizes = np.diff(bank.start)
    # the anisotropic kernel is narrower than the isotropic one (12,761 voxels on average)
    assert 5000 < sizes.mean() < 10_000


def test_patch_kernel_lookup_equals_patch(bank):
    from daskmeta.stats._cell_null_jit import patch_kernel

    arrays = [np.asarray(a) for a in bank[1:]]
    for row in (3, 1000, 4000):
        voxels, kernel = bank.patch(row)
        probe = np.unique(np.concatenate([voxels, voxels + 1, voxels - 1, [0, 179_889]]))
        dense = np.zeros(179_890 + 2)
        dense[voxels] = kernel
        got = [patch_kernel(*arrays, row, v) for v in probe]
        np.testing.assert_array_equal(got, dense[probe])


def test_bank_is_cached_on_disk_and_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DASKMETA_CACHE", str(tmp_path))
    build = kb.kernel_bank.__wrapped__
    first = build("gray_matter", 20.0, 0.5, 1.0, size=6)
    names = sorted(p.name for p in (tmp_path / "kernel_bank").iterdir())
    assert len(names) == 2 and names[0] == ".lock"
    assert sorted(p.name for p in (tmp_path / "kernel_bank" / names[1]).iterdir()) == sorted(
        f"{field}.npy" for field in kb.KernelBank._fields)
    assert isinstance(first.code, np.memmap)
    fresh = kb.build_bank("gray_matter", 20.0, 0.5, 1.0, size=6)
    for field in kb.KernelBank._fields:
        np.testing.assert_array_equal(getattr(first, field), getattr(fresh, field))
    # a different kernel is a different bank; no temporary folder is left behind
    build("gray_matter", 16.0, 0.5, 1.0, size=6)
    names = sorted(p.name for p in (tmp_path / "kernel_bank").iterdir())
    assert len(names) == 3 and names[0] == ".lock" and not any(n.endswith(".tmp") for n in names)


@pytest.mark.parametrize("thresholds", [(1.0, -0.8), (0.4, -0.4), (40.0, -40.0)])
def test_bank_cluster_block_equals_reference(bank, thresholds):
    peak_g = _peak_g([5, 0, 14, 1, 9, 3, 22])
    args = (peak_g, N1, N2, 3, "bank-cluster", 4, 9, "gray_matter", 20.0, 1.0, 1.0, thresholds)
    got = kb.bank_cluster_block(*args)
    expected = kb.bank_cluster_block_reference(*args)
    for field in expected._fields:  # extremes included (clipped at the thresholds)
        if getattr(expected, field) is None:  # the voxel null's fields of a cluster block
            assert getattr(got, field) is None
            continue
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
        assert getattr(got, field).dtype == getattr(expected, field).dtype
    if thresholds[0] < 10:
        assert got.max_cluster_pos.min() > 0 and got.max_cluster_neg.min() > 0


def test_bank_cluster_block_at_thresholds_on_voxel_values(bank):
    """Thresholds set exactly at voxels' z: the certificate must send them to the exact path."""
    mask = load_mask("gray_matter")
    peak_g = _peak_g([6, 2, 9, 4, 7, 1, 5], seed=4)
    g, study_of = flat_peaks(peak_g)
    sampling, constant = variance_model(N1, N2)
    centre = relocation_draws(8, "exact", 0, 1, len(g), len(bank.centres))[0]
    z = kb.bank_relocated_z(centre, g, study_of, sampling, constant, bank, mask.n_voxels)
    positive, negative = np.sort(z[z > 0]), np.sort(z[z < 0])
    for z_pos, z_neg in ((positive[len(positive) // 2], negative[len(negative) // 3]),
                         (positive[-30], negative[5])):
        args = (peak_g, N1, N2, 8, "exact", 0, 1, "gray_matter", 20.0, 1.0, 1.0, (z_pos, z_neg))
        got = kb.bank_cluster_block(*args)
        assert got.max_cluster_pos[0] == largest_cluster(z >= z_pos, mask) > 0
        assert got.max_cluster_neg[0] == largest_cluster(z <= z_neg, mask) > 0
        assert got.max_z[0] == z.max() and got.min_z[0] == z.min()
    # a threshold above the map's maximum: the threshold is recorded (an upper bound)
    args = (peak_g, N1, N2, 8, "exact", 0, 1, "gray_matter", 20.0, 1.0, 1.0,
            (positive[-1] + 0.5, negative[0] - 0.5))
    got = kb.bank_cluster_block(*args)
    assert got.max_z[0] == positive[-1] + 0.5 and got.min_z[0] == negative[0] - 0.5
    assert got.max_cluster_pos[0] == got.max_cluster_neg[0] == 0


def test_bank_cluster_block_clbp(bank, clbp):
    """The reference example: many randomizations, both directions; blocks split anywhere."""
    peak_g, n1, n2 = clbp
    args = (peak_g, n1, n2, 1, "clbp-mean", 0, 12, "gray_matter", 20.0, 1.0, 1.0, CLBP_THRESHOLDS)
    got = kb.bank_cluster_block(*args)
    expected = kb.bank_cluster_block_reference(*args)
    np.testing.assert_array_equal(got.max_cluster_pos, expected.max_cluster_pos)
    np.testing.assert_array_equal(got.max_cluster_neg, expected.max_cluster_neg)
    # the extremes of each map (voxel-level FWE, docs/methods.md 5.3), bit for bit
    np.testing.assert_array_equal(got.max_z, expected.max_z)
    np.testing.assert_array_equal(got.min_z, expected.min_z)
    assert (got.max_z > CLBP_THRESHOLDS[0]).all() and len(np.unique(got.max_z)) == 12
    assert (got.max_cluster_pos > 0).all() and len(np.unique(got.max_cluster_pos)) > 8
    halves = [kb.bank_cluster_block(*args[:5], a, b, *args[7:]) for a, b in ((0, 5), (5, 12))]
    np.testing.assert_array_equal(np.concatenate([h.max_cluster_pos for h in halves]), got.max_cluster_pos)
    # the data's kernel is narrower than the isotropic one: smaller null clusters
    from daskmeta.null.cluster_extent import cluster_null_block

    iso = cluster_null_block(peak_g, n1, n2, 1, "clbp-mean", 0, 12, "gray_matter", 20.0, CLBP_THRESHOLDS)
    assert np.median(got.max_cluster_pos) < np.median(iso.max_cluster_pos)


@pytest.mark.parametrize("case", ["no peaks", "zero effects", "nan sample size", "odd thresholds"])
def test_bank_cluster_block_degenerate_cases(bank, case):
    gen = np.random.default_rng(2)
    peak_g = gen.normal(0.0, 1.0, (4, 6))
    peak_g[1, 3:] = np.nan
    n1, n2 = N1[:4].copy(), N2[:4].copy()
    thresholds = (0.5, -0.5)
    if case == "no peaks":
        peak_g[:] = np.nan
    elif case == "zero effects":
        peak_g[2] = 0.0
    elif case == "nan sample size":  # not certifiable: the reference
        n1[0] = np.nan
    elif case == "odd thresholds":
        thresholds = (-np.inf, np.inf)
    args = (peak_g, n1, n2, 9, "degenerate", 0, 3, "gray_matter", 20.0, 1.0, 1.0, thresholds)
    got = kb.bank_cluster_block(*args)
    expected = kb.bank_cluster_block_reference(*args)
    np.testing.assert_array_equal(got.max_cluster_pos, expected.max_cluster_pos)
    np.testing.assert_array_equal(got.max_cluster_neg, expected.max_cluster_neg)
    if case == "odd thresholds":  # every voxel passes both
        assert got.max_cluster_pos[0] == expected.max_cluster_pos[0] > 100_000


def test_cell_bank_holds_the_patches(bank):
    """Cell-major records give back each centre's patch: the same voxels and codes."""
    bank_cells = kb.cell_bank("gray_matter", 20.0, 1.0, 1.0)
    coarse = cells.coarse_cells("gray_matter")
    words = np.asarray(bank_cells.cell_record).view(np.uint32)[:, 7]
    for row in (0, 17, 2048, kb.BANK_SIZE - 1):
        voxels, kernel = bank.patch(row)
        entries = range(int(bank_cells.cell_first[row]), int(bank_cells.cell_first[row + 1]))
        got_voxels, got_codes = [], []
        for m in entries:
            bits = [b for b in range(27) if (int(words[m]) >> b) & 1]
            assert bits and len(bits) <= 27
            got_voxels += [coarse.voxel[bank_cells.cell_id[m], b] for b in bits]
            codes = [int(bank_cells.cell_record[m, b]) for b in bits]
            assert min(codes) == bank_cells.cell_code[m]  # the largest kernel of the entry
            got_codes += codes
        order = np.argsort(got_voxels)
        np.testing.assert_array_equal(np.asarray(got_voxels)[order], voxels)
        np.testing.assert_array_equal(bank.levels[np.asarray(got_codes)[order]], kernel)
        assert len(set(bank_cells.cell_id[list(entries)])) == len(entries)  # one entry per cell


def _screen_one_cell(u_code, g, study_of, sampling, constant, thresholds):
    """The screen of a one-cell bank whose centre ``p`` reaches the cell at code ``u_code[p]``."""
    from daskmeta.stats import _screen_jit as jit

    levels = kb.quantized(np.ones(1), 20.0)[1]
    n = len(g)
    taus, growth = cells.screen_grid(g, study_of, sampling, constant)
    inv_tau = 1.0 / (sampling[:, None] + taus[None, :])
    candidate = np.zeros(2, np.uint8)
    jit.screen_cells(np.arange(n), np.zeros(n, np.int64), np.zeros(1, np.int64), g, study_of,
                     sampling, constant, *thresholds,
                     np.arange(n + 1), np.zeros(n, np.int32), np.asarray(u_code, np.uint8), levels,
                     inv_tau, inv_tau.sum(0), taus, growth, np.zeros((2, 8)), np.empty(2, np.int64),
                     np.empty((n, 2), np.int64), np.empty((n, 2)), np.empty((1, len(taus), 3)),
                     candidate)
    return bool(candidate[0]), levels


def test_screen_bound_holds_for_any_effects_and_tau2():
    """docs/methods.md 5.4: no voxel of a cell the screen rules out can pass, whatever each study's
    effect within its kernel-scaled range and whatever tau2 the random-effects fit picks.

    Random studies (one- and two-sample, peaks of both signs, some beyond the variance model's
    turning point), a one-cell bank; the largest random-effects z over sampled effects and tau2
    (including DerSimonian-Laird's) must be flagged, and a threshold far above it must not.
    """
    gen = np.random.default_rng(7)
    for trial in range(60):
        k = int(gen.integers(2, 9))
        n1 = gen.integers(8, 90, k).astype(float)
        n2 = np.where(gen.random(k) < 0.3, np.nan, gen.integers(8, 90, k).astype(float))
        sampling, constant = variance_model(n1, n2)
        counts = gen.integers(0, 4, k)
        study_of = np.repeat(np.arange(k), counts)
        g = gen.choice([-1.0, 1.0], len(study_of)) * gen.uniform(0.05, 3.5, len(study_of))
        code = gen.integers(0, 256, len(study_of))
        levels = kb.quantized(np.ones(1), 20.0)[1]
        value = levels[code] * g
        upper = np.array([max([0.0, *value[study_of == s][value[study_of == s] > 0]]) for s in range(k)])
        lower = np.array([min([0.0, *value[study_of == s][value[study_of == s] < 0]]) for s in range(k)])
        y = gen.uniform(lower, upper, (4000, k))
        y[:8] = np.where(np.arange(8)[:, None] % 2 == 0, upper, lower)  # corners
        y[8] = 0.0
        v = sampling + constant * y**2
        w = 1.0 / v
        mu = (w * y).sum(1) / w.sum(1)
        q = (w * (y - mu[:, None]) ** 2).sum(1)
        tau_dl = np.maximum(0.0, (q - (k - 1)) / (w.sum(1) - (w**2).sum(1) / w.sum(1)))
        best_pos, best_neg = 0.0, 0.0
        for tau2 in [tau_dl, *np.array([0.0, 1e-3, 0.01, 0.05, 0.2, 1.0, 5.0])[:, None]]:
            ws = 1.0 / (v + np.broadcast_to(tau2, (len(y),))[:, None])
            z = (ws * y).sum(1) / np.sqrt(ws.sum(1))
            best_pos, best_neg = max(best_pos, z.max()), min(best_neg, z.min())
        if best_pos > 0:
            assert _screen_one_cell(code, g, study_of, sampling, constant, (best_pos, -1e9))[0], trial
            assert not _screen_one_cell(code, g, study_of, sampling, constant, (2 * best_pos + 0.2, -1e9))[0]
        if best_neg < 0:
            assert _screen_one_cell(code, g, study_of, sampling, constant, (1e9, best_neg))[0], trial


def test_screen_rules_out_only_cells_without_passing_voxels(bank, clbp):
    """The reference example: at thresholds across the null z range, every voxel that passes lies
    in a flagged cell; at the example's thresholds most cells are ruled out."""
    peak_g, n1, n2 = clbp
    mask = load_mask("gray_matter")
    g, study_of = flat_peaks(peak_g)
    sampling, constant = variance_model(n1, n2)
    cell_of = cells.coarse_cells("gray_matter").cell_of
    for centre in relocation_draws(5, "screen", 0, 3, len(g), len(bank.centres)):
        z = kb.bank_relocated_z(centre, g, study_of, sampling, constant, bank, mask.n_voxels)
        for q in (0.5, 0.9, 0.99, 0.999, 1.0):
            thresholds = (float(np.quantile(z[z > 0], q)), float(np.quantile(z[z < 0], 1 - q)))
            flagged = kb.screen_candidates(centre, g, study_of, sampling, constant, thresholds,
                                           "gray_matter", 20.0, 1.0, 1.0)
            passing = (z >= thresholds[0]) | (z <= thresholds[1])
            assert flagged[cell_of[passing]].all()
        flagged = kb.screen_candidates(centre, g, study_of, sampling, constant, CLBP_THRESHOLDS,
                                       "gray_matter", 20.0, 1.0, 1.0)
        assert 0 < flagged.mean() < 0.2


def test_tau_grid_bounds_the_growth():
    taus, growth = cells.tau_grid(0.16, 0.02)
    assert taus[0] == 0 and np.isclose(taus[-1], 0.16 - 2 * 0.02) and growth[-1] == 1
    assert np.all(np.diff(taus) > 0) and np.all(growth[:-1] <= cells.SCREEN_WIDEN) and np.all(growth >= 1)
    # between points, (A + t_j)^2 / (A + t)^2 (alpha + t) / (alpha + t_j) stays within the growth
    for j in range(len(taus) - 1):
        t = np.linspace(taus[j], taus[j + 1], 50)
        h = ((0.16 + taus[j]) / (0.16 + t)) ** 2 * (0.02 + t) / (0.02 + taus[j])
        assert h.max() <= growth[j] * (1 + 1e-12)
    t = np.linspace(taus[-1], 50, 200)
    assert (((0.16 + taus[-1]) / (0.16 + t)) ** 2 * (0.02 + t) / (0.02 + taus[-1])).max() <= 1 + 1e-12
    taus, growth = cells.tau_grid(0.05, 0.03)  # A <= 2 alpha: the bound only falls beyond tau2 = 0
    np.testing.assert_array_equal(taus, [0.0])
    np.testing.assert_array_equal(growth, [1.0])
