"""SDM's variance model of study maps, and what the null kernels share (docs/methods.md, section 5).

In a recreated study map the variance is a function of the effect: for study ``s``,
``variance = a_s + c_s * effect^2`` with ``a_s = 1/n1 + 1/n2`` (``1/n`` one-sample) and ``c_s``
from :func:`~daskmeta.stats.effect_size.variance_constant` (docs/methods.md, sections 2-3).
The permutation engine (:mod:`daskmeta.stats.permutation`) therefore reads only the effect
and recomputes the variance in float64; :func:`validated_model` checks a stack against the
model first. :func:`pooled_z` is the same pooling on a fixed stack (the cluster-extent null
uses it), :func:`randomization_keys` and :func:`uniform_draws` give each randomization its
counter-based SplitMix64 stream, and :func:`select_kernel` picks the Numba or the NumPy
version of a kernel.

References
----------
Radua J et al. (2012). Eur Psychiatry 27:605-611 (randomization of voxel locations).
Steele GL, Lea D, Flood CH (2014). Fast splittable pseudorandom number generators. OOPSLA '14
(SplitMix64).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.errors import plain
from daskmeta.stats.effect_size import degrees_of_freedom, sampling_term, variance_constant
from daskmeta.stats.random_effects import _pooled_z

#: Largest relative gap allowed between a study's variance map and ``a + c effect^2``
#: (float32 storage rounds to about 6e-8).
VARIANCE_RTOL = 1e-5

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def variance_model(n1: ArrayLike, n2: ArrayLike | None = None) -> tuple[NDArray[np.float64], ...]:
    """``(a, c)`` of ``variance(g) = a + c g^2`` per study, from n1 and n2 (docs/methods.md, sections 2-3).

    ``a = 1/n1 + 1/n2`` (``1/n1`` where ``n2`` is NaN: one-sample) and ``c =
    variance_constant(df)``.
    """
    df = degrees_of_freedom(n1, n2)
    return sampling_term(n1, n2).astype(np.float64), variance_constant(df).astype(np.float64)


def _fit_model(effect: NDArray, variance: NDArray) -> tuple[float, float]:
    """Least-squares ``a, c`` of ``variance ~ a + c effect^2`` for one study."""
    x = effect.astype(np.float64) ** 2
    v = variance.astype(np.float64)
    spread = x - x.mean()
    denominator = float(spread @ spread)
    constant = float(spread @ (v - v.mean())) / denominator if denominator > 0 else 0.0
    return float(v.mean() - constant * x.mean()), constant


def validated_model(
    effect: ArrayLike,
    variance: ArrayLike | None = None,
    sampling: ArrayLike | None = None,
    constant: ArrayLike | None = None,
) -> tuple[NDArray[np.floating], NDArray[np.float64], NDArray[np.float64]]:
    """The checked effect stack (float32 kept, else float64) and its variance model ``a, c``.

    Parameters
    ----------
    effect : array_like, shape (n_studies, n_voxels)
        Study effects over the mask; float32 is kept as float32 (the kernels read it, all
        arithmetic is float64), other dtypes become float64. Must be finite.
    variance : array_like, optional
        The study variance maps, same shape. With ``sampling``/``constant`` they are checked
        against the model; without, the model is fitted from them (least squares of
        variance on effect^2 per study) and checked.
    sampling, constant : array_like, shape (n_studies,), optional
        ``a_s`` and ``c_s`` (:func:`variance_model`). Give both, or give ``variance``.

    Raises
    ------
    ValueError
        For bad shapes, non-finite effects, fewer than 2 studies, a model that is not
        positive, or a variance map farther than :data:`VARIANCE_RTOL` (relative) from the
        model: such maps need the NumPy reference (``engine="reference"``).
    """
    effect = np.asarray(effect)
    if effect.ndim != 2 or effect.shape[0] < 2 or effect.shape[1] < 1:
        raise ValueError(
            "'effect' must be a (study, voxel) array with at least 2 studies and 1 voxel; "
            f"got shape {effect.shape}."
        )
    if effect.shape[1] >= 2**31:
        raise ValueError(f"the null kernels support fewer than 2**31 voxels; got {effect.shape[1]}.")
    dtype = np.float32 if effect.dtype == np.float32 else np.float64
    effect = np.ascontiguousarray(effect, dtype=dtype)
    if not np.isfinite(effect).all():
        raise ValueError("'effect' holds NaN or infinite values; study maps must be finite.")
    k, n_voxels = effect.shape
    if variance is not None:
        variance = np.asarray(variance)
        if variance.shape != effect.shape:
            raise ValueError(
                f"'variance' must have the shape of 'effect' {effect.shape}; got {variance.shape}."
            )
    if sampling is None or constant is None:
        if variance is None:
            raise ValueError("give 'sampling' and 'constant' (see variance_model), or 'variance'.")
        fitted = np.array([_fit_model(effect[s], variance[s]) for s in range(k)])
        sampling, constant = fitted[:, 0], fitted[:, 1]
    sampling = np.asarray(sampling, dtype=np.float64).reshape(-1)
    constant = np.asarray(constant, dtype=np.float64).reshape(-1)
    if sampling.shape != (k,) or constant.shape != (k,):
        raise ValueError(
            f"'sampling' and 'constant' need one value per study ({k}); got {sampling.shape} "
            f"and {constant.shape}."
        )
    bad = np.flatnonzero(~((sampling > 0) & (constant >= 0) & np.isfinite(sampling + constant)))
    if bad.size:
        raise ValueError(
            f"study {int(bad[0])}: the variance model needs a > 0 and c >= 0; got "
            f"a={plain(sampling[bad[0]])!r}, c={plain(constant[bad[0]])!r}."
        )
    if variance is not None:
        _check_variance(effect, variance, sampling, constant)
    return effect, sampling, constant


def _check_variance(effect: NDArray, variance: NDArray, sampling: NDArray, constant: NDArray) -> None:
    for s in range(effect.shape[0]):
        y = effect[s].astype(np.float64)
        model = sampling[s] + constant[s] * (y * y)
        gap = np.abs(np.asarray(variance[s], dtype=np.float64) - model) / model
        worst = int(np.argmax(gap))
        if not gap[worst] <= VARIANCE_RTOL:
            raise ValueError(
                f"study {s}: its variance map is not a + c * effect^2 (a={sampling[s]:.6g}, "
                f"c={constant[s]:.6g}); voxel {worst} differs by {gap[worst]:.3g} (relative; "
                f"at most {VARIANCE_RTOL:g} allowed). The permutation engine needs the variance model "
                "of recreated maps (docs/methods.md, section 3); use engine='reference' for other maps."
            )


def randomization_keys(seed_sequences: Sequence[np.random.SeedSequence]) -> NDArray[np.uint64]:
    """One 64-bit stream key per randomization: ``seq.generate_state(1, numpy.uint64)[0]``."""
    seeds = list(seed_sequences)
    if not all(isinstance(s, np.random.SeedSequence) for s in seeds):
        raise TypeError(
            "'seed_sequences' must be a sequence of numpy.random.SeedSequence, one per "
            "randomization (see daskmeta.null.randomization.randomization_seeds)."
        )
    return np.array([s.generate_state(1, np.uint64)[0] for s in seeds], dtype=np.uint64)


@functools.cache
def _load_kernel() -> ModuleType | None:
    """The compiled kernels, or None (with a warning, once) when Numba cannot be imported."""
    try:
        from daskmeta.stats import _pooling_jit as _null_kernel
    except ImportError as error:
        warnings.warn(
            f"numba is not available ({error}); the null kernels run their NumPy versions (same "
            "numbers, several times slower). Install numba for speed.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return _null_kernel


def numba_available() -> bool:
    """Whether the Numba kernels can be used in this process."""
    return _load_kernel() is not None


def select_kernel(load: Callable[[], Any], jit: bool | None) -> Any:
    """The compiled kernels that ``load()`` returns (None without Numba), as ``jit`` asks.

    ``jit=False``: None (the NumPy version), without loading; ``True``: the kernels or an
    ImportError; ``None``: whichever is available.
    """
    if jit is False:
        return None
    kernel = load()
    if kernel is None and jit:
        raise ImportError("jit=True needs numba; install it or pass jit=None.")
    return kernel


def _kernel(jit: bool | None) -> ModuleType | None:
    return select_kernel(_load_kernel, jit)


def uniform_draws(key: np.uint64, counters: NDArray[np.uint64], n: int) -> NDArray[np.int64]:
    """The kernels' draws in ``[0, n)`` for these 1-based counters of stream ``key`` (NumPy).

    SplitMix64 of ``key + counter * GAMMA``, mapped by ``floor(r * n / 2^64)`` (exact, from
    two 32 x 32-bit products; ``n < 2^32``): :func:`daskmeta.stats._pooling_jit.uniform_index`.
    """
    r = np.asarray(counters, dtype=np.uint64) * _GAMMA + np.uint64(key)
    r = (r ^ (r >> np.uint64(30))) * _MIX1
    r = (r ^ (r >> np.uint64(27))) * _MIX2
    r ^= r >> np.uint64(31)
    high, low = r >> np.uint64(32), r & np.uint64(0xFFFFFFFF)
    n64 = np.uint64(n)
    return ((high * n64 + ((low * n64) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)


def pooled_z(
    effect: ArrayLike, sampling: ArrayLike, constant: ArrayLike, jit: bool | None = None
) -> NDArray[np.float64]:
    """SDM-Z of given study maps pooled as the null kernels pool (variance from the model).

    The kernel fed a fixed source instead of random draws: equals
    ``dersimonian_laird(effect, sampling + constant * effect**2).z`` (the tests hold it to
    1e-12 relative).

    Parameters
    ----------
    effect : array_like, shape (n_studies, n_voxels)
        Study effects (float32 or float64).
    sampling, constant : array_like, shape (n_studies,)
        The variance model (:func:`variance_model`).
    jit : bool or None
        None: the Numba kernel when Numba is installed, else NumPy (same numbers); True:
        the Numba kernel (ImportError without Numba); False: NumPy.

    Returns
    -------
    ndarray of float64, shape (n_voxels,)
    """
    effect = np.asarray(effect)
    effect = np.ascontiguousarray(effect, dtype=np.float32 if effect.dtype == np.float32 else np.float64)
    sampling = np.ascontiguousarray(sampling, dtype=np.float64)
    constant = np.ascontiguousarray(constant, dtype=np.float64)
    if effect.ndim != 2 or sampling.shape != (effect.shape[0],) or constant.shape != sampling.shape:
        raise ValueError(
            "'effect' must be (study, voxel) and 'sampling', 'constant' one value per study; got "
            f"{effect.shape}, {sampling.shape} and {constant.shape}."
        )
    kernel = _kernel(jit)
    if kernel is None:
        y = effect.astype(np.float64)
        return _pooled_z(y, sampling[:, None] + constant[:, None] * (y * y))
    out = np.empty(effect.shape[1], dtype=np.float64)
    kernel.pooled_maps(effect, sampling, constant, out)
    return out
