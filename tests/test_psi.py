"""SDM-PSI on Dask: imputation, pooling, the permutation null, FWE (docs/methods.md, section 14).

The kernels have their own tests (test_censored, test_imputation, test_subject_images,
test_psi_group, test_rubin, test_tfce). Here: the graph uses them as documented, against
literal NumPy references written plainly in this file.
"""

from __future__ import annotations

import numpy as np
import pytest
from dask.callbacks import Callback
from scipy import stats

from daskmeta.analyses.psi import impute, psi
from daskmeta.analyses.recreate import recreate
from daskmeta.model.grid import load_mask
from daskmeta.null import psi as null_psi
from daskmeta.null.psi import CHUNK_VOXELS, _permutations, _study_noise, permuted_z
from daskmeta.stats.effect_size import hedges_j, variance_constant
from daskmeta.testing.simulate import TrueEffect, simulate_studies
from daskmeta.testing.synthetic import simulate_table


@pytest.fixture(scope="module")
def maps(make_studyset):
    studies = make_studyset(n_studies=4, peaks_per_study=4, seed=11)
    return recreate(studies, anisotropy=0.0).persist(scheduler="threads")


@pytest.fixture(scope="module")
def imputed(maps):
    return impute(maps, imputations=3, seed=1).compute(scheduler="threads")


def _dl(y, v):
    """DerSimonian-Laird over the first axis, written out."""
    w = 1 / v
    mu_fixed = (w * y).sum(0) / w.sum(0)
    q = (w * (y - mu_fixed) ** 2).sum(0)
    c = w.sum(0) - (w**2).sum(0) / w.sum(0)
    tau2 = np.maximum(0, (q - (y.shape[0] - 1)) / c)
    ws = 1 / (v + tau2)
    mu = (ws * y).sum(0) / ws.sum(0)
    return mu, 1 / ws.sum(0)


def _rubin_z(mus, variances):
    """Rubin's rules over the first axis, written out."""
    m = mus.shape[0]
    mean = mus.mean(0)
    total = variances.mean(0) + (1 + 1 / m) * mus.var(0, ddof=1)
    return mean / np.sqrt(total)


def test_imputations_lie_within_the_bounds_and_keep_known_values(maps, imputed):
    lower, upper = maps.effect_lower.values, maps.effect_upper.values
    effect = imputed.effect.values
    assert effect.shape == (3, 4, maps.sizes["voxel"])
    assert np.all(effect >= lower[None] - 1e-6) and np.all(effect <= upper[None] + 1e-6)
    known = (upper - lower) < 1e-6
    np.testing.assert_allclose(effect[:, known], np.broadcast_to(lower[known], effect[:, known].shape),
                               atol=1e-6)
    # imputations differ where the value is unknown, and are spatially coherent
    assert np.mean(effect[0] != effect[1]) > 0.5
    again = impute(maps, imputations=3, seed=1).effect.compute(scheduler="sync").values
    np.testing.assert_array_equal(again, effect)


def test_observed_maps_pool_exactly_the_imputations_of_impute(maps, imputed):
    result = psi(maps, imputations=3, permutations=0, seed=1).compute(scheduler="threads")
    assert np.isnan(result.p_fwe_tfce.values).all()
    y = imputed.effect.values.astype(np.float64)
    v = imputed.variance.values.astype(np.float64)
    pooled = [_dl(y[m], v[m]) for m in range(3)]
    z = _rubin_z(np.stack([p[0] for p in pooled]), np.stack([p[1] for p in pooled]))
    np.testing.assert_allclose(result.z.values, z, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.p.values, stats.norm.sf(np.abs(z)), rtol=1e-9, atol=1e-300)


def test_the_null_equals_a_literal_permutation_of_subject_images(imputed):
    """Build every subject image, permute it, run each study's group analysis plainly."""
    studies = [str(s) for s in imputed.study.values]
    sizes = [(int(n1), 0 if not np.isfinite(n2) else int(n2))
             for n1, n2 in zip(imputed.n1.values, imputed.n2.values, strict=True)]
    effects = imputed.effect.values
    z = permuted_z(effects, sizes, studies, 7, "lit", 2, 4, "gray_matter")
    voxels = np.random.default_rng(0).choice(effects.shape[2], 400, replace=False)
    for row, b in enumerate((2, 3)):
        g = np.empty((3, 4, voxels.size))
        for s, ((n1, n2), study) in enumerate(zip(sizes, studies, strict=True)):
            noise = _study_noise(n1, n2, study, 7, "gray_matter")[:, voxels].astype(np.float64)
            perm = _permutations(n1, n2, 7, "lit", study, b, b + 1)[0]
            df = n1 + n2 - 2 if n2 else n1 - 1
            j = float(hedges_j(df))
            for m in range(3):
                d = effects[m, s, voxels].astype(np.float64) / j
                images = noise.copy()
                images[:n1] += d  # the patients (every subject of a one-sample study)
                if n2:
                    patients, controls = images[perm == 1], images[perm == 0]
                    t = stats.ttest_ind(patients, controls, axis=0).statistic
                    g[m, s] = j * t * np.sqrt(1 / n1 + 1 / n2)
                else:
                    flipped = images * perm[:, None]
                    g[m, s] = j * flipped.mean(0) / flipped.std(0, ddof=1)
        a = np.array([1 / n1 + (1 / n2 if n2 else 0) for n1, n2 in sizes])
        c = np.array([variance_constant(n1 + n2 - 2 if n2 else n1 - 1) for n1, n2 in sizes])
        v = a[None, :, None] + c[None, :, None] * g**2
        pooled = [_dl(g[m], v[m]) for m in range(3)]
        expected = _rubin_z(np.stack([p[0] for p in pooled]), np.stack([p[1] for p in pooled]))
        np.testing.assert_allclose(z[row, voxels], expected, rtol=1e-5, atol=1e-5)  # float32 noise


def test_same_null_whatever_the_block_size(maps):
    one = psi(maps, imputations=2, permutations=4, seed=3, block_size=1)
    four = psi(maps, imputations=2, permutations=4, seed=3, block_size=4)
    a = one.null_max_tfce.compute(scheduler="threads").values
    b = four.null_max_tfce.compute(scheduler="threads").values
    np.testing.assert_array_equal(a, b)
    assert len(set(a.round(9))) == 4  # permutations differ from each other


def test_fwe_p_values_count_the_permutation_maxima(maps):
    result = psi(maps, imputations=2, permutations=5, seed=3, block_size=2).compute(scheduler="threads")
    z, tfce = result.z.values, result.tfce.values
    top = int(np.argmax(tfce))
    expected = (1 + np.sum(result.null_max_tfce.values >= tfce[top])) / 6
    assert result.p_fwe_tfce.values[top] == pytest.approx(expected)
    bottom = int(np.argmin(z))
    expected = (1 + np.sum(result.null_min_z.values <= z[bottom])) / 6
    assert result.p_fwe_voxel.values[bottom] == pytest.approx(expected)
    assert np.all(np.sign(tfce[np.abs(z) > 0.2]) == np.sign(z[np.abs(z) > 0.2]))


class _Results(Callback):
    """Records the name and shape of every task's ndarray result."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def _posttask(self, key, result, dsk, state, worker_id):
        name = key[0] if isinstance(key, tuple) else key
        if isinstance(result, np.ndarray):
            self.seen.append((str(name).rsplit("-", 1)[0], result.shape))


def test_null_tasks_read_one_voxel_chunk_and_the_chunks_change_nothing(maps, monkeypatch):
    """The imputed stack is laid out (M, k, voxel chunk) by impute; each null task reads one
    chunk, none the whole stack; narrower chunks give the same arrays, bit for bit, in the
    maps' chunks (docs/methods.md, section 14.3)."""
    kwargs = {"imputations": 2, "permutations": 3, "seed": 4, "block_size": 2}
    k, n_voxels = maps.sizes["study"], maps.sizes["voxel"]
    assert impute(maps, imputations=2, seed=4).effect.data.chunks == ((2,), (k,), maps.effect_lower.chunks[1])
    expected = psi(maps, **kwargs).compute(scheduler="threads")
    monkeypatch.setattr(null_psi, "STACK_CHUNK_BYTES", 2 * k * 4 * CHUNK_VOXELS)  # 4096-voxel chunks
    narrow = psi(maps, **kwargs)
    assert narrow.z.chunks == maps.effect_lower.chunks[1:]
    with _Results() as results:
        got = narrow.compute(scheduler="threads")
    stacks = [shape for _, shape in results.seen if len(shape) == 3 and shape[:2] == (2, k)]
    assert stacks and max(shape[2] for shape in stacks) == CHUNK_VOXELS  # never (M, k, V)
    z_chunks = [shape for name, shape in results.seen if name == "_null_chunk"]
    assert len(z_chunks) == 2 * -(-n_voxels // CHUNK_VOXELS)  # two blocks, every chunk
    assert {shape[0] for shape in z_chunks} == {2, 1} and max(s[1] for s in z_chunks) == CHUNK_VOXELS
    for key in expected.data_vars:
        np.testing.assert_array_equal(got[key].values, expected[key].values, err_msg=key)


@pytest.mark.slow
def test_planted_effect_survives_fwe_and_a_decoy_does_not(tmp_path):
    location, decoy = (-38.0, -26.0, 56.0), (40.0, 20.0, 40.0)
    effect = TrueEffect(*location, sign=1, probability=0.95, name="planted")
    table = simulate_table(8, seed=3, n_peaks_range=(2, 4))
    folder = simulate_studies(table, [effect], tmp_path / "studies", seed=3)
    from daskmeta.io import load_studies

    maps = recreate(load_studies(folder), anisotropy=0.0).persist(scheduler="threads")
    result = psi(maps, imputations=4, permutations=39, seed=2, block_size=13).compute(scheduler="threads")
    mask = load_mask("gray_matter")
    planted = int(np.argmin(((mask.xyz - location) ** 2).sum(1)))
    far = int(np.argmin(((mask.xyz - decoy) ** 2).sum(1)))
    assert result.p_fwe_tfce.values[planted] < 0.05, result.p_fwe_tfce.values[planted]
    assert result.p_fwe_tfce.values[far] > 0.05


@pytest.mark.slow
def test_daskmeta_run_writes_a_psi_analysis(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from daskmeta.app.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["simulate", str(tmp_path / "studies"), "--studies", "5",
                               "--seed", "2"]).exit_code == 0
    config = tmp_path / "a.yaml"
    config.write_text(yaml.safe_dump({
        "studies": str(tmp_path / "studies"), "store": str(tmp_path / "s.zarr"),
        "out": str(tmp_path / "out"), "preprocess": {"anisotropy": 0.0},
        "analyses": {"ps": {"type": "psi", "imputations": 2, "permutations": 3, "block_size": 2,
                            "threshold": {"fwe": "none", "p": 0.01, "extent": 5}},
                     "lm": {"type": "psi", "imputations": 2, "permutations": 3, "regressors": ["n1"],
                            "threshold": {"fwe": "none", "p": 0.05, "extent": 5}}}}))
    done = runner.invoke(app, ["run", str(config), "--scheduler", "threads"])
    assert done.exit_code == 0, done.output
    out = tmp_path / "out" / "ps"
    for name in ("z", "p", "tfce", "p_fwe_voxel", "p_fwe_tfce", "tau2", "i2", "q"):
        assert (out / f"{name}.nii.gz").is_file(), name
    text = (out / "summary.md").read_text()
    assert "2 imputations" in text and "3 permutations" in text and "E = 0.5" in text
    import pandas as pd

    table = pd.read_csv(out / "clusters.tsv", sep="\t")
    assert {"p_fwe_voxel", "p_fwe_tfce"} <= set(table.columns)
    text = (tmp_path / "out" / "lm" / "summary.md").read_text()
    assert "The effect of n1 was tested by a linear model" in text and "3 Freedman-Lane" in text


def test_image_studies_enter_psi_with_their_exact_values(tmp_path):
    """A study given as a t-map is known wherever its map has a value: imputation keeps it."""
    from daskmeta.io import load_studies
    from daskmeta.testing.statmaps import simulate_mixed_studies

    table = simulate_table(4, seed=6, n_peaks_range=(2, 4))
    folder = simulate_mixed_studies(table, [TrueEffect(-38.0, -26.0, 56.0)], tmp_path / "mixed",
                                    seed=6, n_maps=1)
    maps = recreate(load_studies(folder), anisotropy=0.0).persist(scheduler="threads")
    assert maps.is_image.values.tolist() == [True, False, False, False]
    effect = impute(maps, imputations=2, seed=4).effect.compute(scheduler="threads").values
    known = (maps.effect_upper.values[0] - maps.effect_lower.values[0]) < 1e-6
    assert known.mean() > 0.9  # the map covers the mask, apart from its own zeros
    np.testing.assert_allclose(effect[:, 0, known], np.broadcast_to(maps.effect.values[0, known],
                                                                    (2, int(known.sum()))), atol=1e-6)
    assert not np.allclose(effect[0, 1], effect[1, 1])  # a peak study is imputed afresh
