"""SDM's variance model of study maps and the pooling the null kernels share.

- the variance model: from the sample sizes, or fitted from the maps and checked against
  them (maps that do not follow it are refused, pointing at the reference engine);
- the kernels' pooling arithmetic is the reference's: fed a fixed source, z equals
  ``dersimonian_laird`` (to 1e-12 relative; in practice bit for bit), with and without Numba;
- the engine is chosen in one place, which refuses unknown and retired names.

``sdm_like_maps`` and ``_reference_null`` serve the permutation engine's tests too.
"""

from __future__ import annotations

import numpy as np
import pytest

from daskmeta.null.engines import ENGINES, check_engine
from daskmeta.null.randomization import randomization_seeds
from daskmeta.stats import sdm_model
from daskmeta.stats.effect_size import g_variance
from daskmeta.stats.null import relocate
from daskmeta.stats.random_effects import dersimonian_laird
from daskmeta.stats.sdm_model import pooled_z, validated_model, variance_model

#: Sample sizes of the synthetic studies; NaN n2 is a one-sample study.
N1 = np.array([20.0, 35.0, 12.0, 50.0, 18.0, 25.0, 40.0, 30.0])
N2 = np.array([22.0, np.nan, 14.0, 45.0, np.nan, 25.0, 38.0, 28.0])


def sdm_like_maps(rng, n_voxels=3000, null_study=True, dtype=np.float32):
    """Effects like recreated maps: mostly exact zeros, smooth-ish blobs of both signs.

    The last study is a null study (all zeros) when ``null_study``. Variance by the model.
    """
    k = N1.size
    effect = np.zeros((k, n_voxels))
    grid = np.arange(n_voxels)
    for s in range(k - int(null_study)):
        for centre in rng.integers(0, n_voxels, size=3):
            width = rng.uniform(40, 200)
            blob = rng.choice([-1, 1]) * rng.uniform(0.5, 1.5) * np.exp(-0.5 * ((grid - centre) / width) ** 2)
            effect[s] += np.where(np.abs(grid - centre) < 3 * width, blob, 0.0)
    effect = effect.astype(dtype)
    variance = g_variance(effect.astype(np.float64), N1[:, None], N2[:, None]).astype(dtype)
    return effect, variance


@pytest.fixture
def maps(rng):
    return sdm_like_maps(rng)


def seeds(start, stop, seed=7, name="fast"):
    return randomization_seeds(seed, name, start, stop)


# -- tables ---------------------------------------------------------------------------------


def test_model_fitted_from_the_maps_and_checked(maps):
    effect, variance = maps
    a, c = variance_model(N1, N2)
    kept, sampling, constant = validated_model(effect, variance)
    assert kept.dtype == np.float32
    np.testing.assert_allclose(sampling, a, rtol=1e-6)
    np.testing.assert_allclose(constant[:-1], c[:-1], rtol=1e-4)  # the null study has no slope
    wrong = variance.copy()
    wrong[2, 10] *= 1.5
    with pytest.raises(ValueError, match="study 2: its variance map is not a \\+ c \\* effect\\^2"):
        validated_model(effect, wrong, a, c)
    with pytest.raises(ValueError, match="engine='reference'"):
        validated_model(effect, np.full_like(variance, 0.1) + np.abs(effect))
    with pytest.raises(ValueError, match="finite"):
        validated_model(np.where(effect == effect.max(), np.nan, effect), variance, a, c)
    with pytest.raises(ValueError, match="at least 2 studies"):
        validated_model(effect[:1], variance[:1], a[:1], c[:1])


# -- pooling arithmetic ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("jit", [None, False])
def test_pooling_equals_dersimonian_laird_on_a_fixed_source(rng, dtype, jit):
    """Heterogeneous voxels (tau2 > 0), homogeneous ones, a null and a one-sample study."""
    k, n_voxels = N1.size, 2000
    effect = rng.normal(scale=rng.choice([0.05, 0.5, 1.5], size=n_voxels), size=(k, n_voxels))
    effect[:, :100] = 0.0
    effect[-1] = 0.0
    effect = effect.astype(dtype)
    a, c = variance_model(N1, N2)
    y = effect.astype(np.float64)
    reference = dersimonian_laird(y, a[:, None] + c[:, None] * y**2)
    assert 0.2 < np.mean(reference.tau2 > 0) < 0.9  # both branches of the kernel are used
    z = pooled_z(effect, a, c, jit=jit)
    np.testing.assert_allclose(z, reference.z, rtol=1e-12, atol=1e-300)


def test_pooling_near_the_heterogeneity_threshold(rng):
    """Voxels whose Q is within rounding of k - 1, where the one-pass shortcut must defer."""
    a, c = variance_model(N1, N2)
    k = N1.size
    effect = rng.normal(scale=0.4, size=(k, 50))
    # scale each voxel's deviations so that Q = k - 1 up to ~1e-15 (tau2 at its kink)
    v = a[:, None] + c[:, None] * effect**2
    for _ in range(30):
        q = dersimonian_laird(effect, v).q
        effect = effect.mean(0) + (effect - effect.mean(0)) * np.sqrt((k - 1) / q)
        v = a[:, None] + c[:, None] * effect**2
    reference = dersimonian_laird(effect, v)
    assert np.abs(reference.q - (k - 1)).max() < 1e-9
    np.testing.assert_allclose(pooled_z(effect, a, c), reference.z, rtol=1e-12)


# -- streams ---------------------------------------------------------------------------------


# -- distribution ---------------------------------------------------------------------------


def _reference_null(effect, variance, n_randomizations):
    y, v = effect.astype(np.float64), variance.astype(np.float64)
    return np.concatenate([relocate(y, v, np.random.default_rng(s), 1)[0]
                           for s in seeds(0, n_randomizations, name="reference")])




def test_fallback_without_numba(monkeypatch, rng):
    effect, _ = sdm_like_maps(rng, n_voxels=500)
    a, c = variance_model(N1, N2)
    expected = pooled_z(effect, a, c)
    monkeypatch.setattr(sdm_model, "_load_kernel", lambda: None)
    assert not sdm_model.numba_available()
    np.testing.assert_allclose(pooled_z(effect, a, c), expected, rtol=1e-12)
    with pytest.raises(ImportError, match="needs numba"):
        pooled_z(effect, a, c, jit=True)


def test_engines_are_chosen_in_one_place():
    assert ENGINES == ("permutation", "reference")
    assert check_engine("reference") == "reference"
    with pytest.raises(ValueError, match="must be one of 'permutation', 'reference'; 'cuda' was"):
        check_engine("cuda")
    with pytest.raises(ValueError, match="'numpy' was renamed 'reference'"):
        check_engine("numpy")
    with pytest.raises(ValueError, match="'numba' was retired"):
        check_engine("numba")
