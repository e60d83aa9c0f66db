"""Permutation null of the mean, each study's voxels permuted (docs/methods.md, section 5.5).

SDM relocates each study's voxels at random; daskmeta reads this as a random permutation
of the mask voxels or as independent uniform voxel draws (docs/methods.md, section 5.1). This
engine permutes, and makes the permutations cheap:

1. Once per analysis, each study's effects are put in a seeded uniformly random order
   (its *arrangement*, :class:`ShuffledStack`; ``numpy.random.Generator.permutation``).
2. Randomization ``b`` moves study ``s`` by a cyclic shift ``d_s`` (uniform on
   ``[0, V)``, independent across studies, from the randomization's own counter-based
   stream): voxel ``v`` gets entry ``(v - d_s) mod V`` of the arrangement.

A cyclic shift of a uniformly random arrangement is itself a uniformly random permutation, so
**every randomization is exactly the permutation null** (each study's map a uniform random
permutation of its values, independently across studies), and each voxel's k effects are
independent draws from the studies' value distributions, as under the draw null. What
randomizations share is the arrangement: two randomizations pair the same voxels of studies
``s`` and ``t`` only when their relative shifts ``d_t - d_s`` agree (probability ``1/V``
per study pair and pair of randomizations), the same expected overlap as independent draws
but clumped; means and tail counts over randomizations stay unbiased.

Cost: no random number and no gather per study-voxel. A randomization streams the (study,
voxel) stack once (contiguous runs per tile) and pools as it goes
(:mod:`daskmeta.stats._permutation_jit`); with the variance a function of the effect
(docs/methods.md, section 3.6) only the effect is read. ``benchmarks/permutations.py`` measures it against the
time of streaming the stack from memory.

References
----------
Radua J et al. (2012). Eur Psychiatry 27:605-611 (randomization of voxel locations).
Albajes-Eizagirre A, Solanes A, Radua J (2019). NeuroImage 186:174-184 (SDM's permutations).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.stats.null import N_HIST, NullSummary, histogram
from daskmeta.stats.random_effects import _pooled_z
from daskmeta.stats.sdm_model import (
    randomization_keys,
    select_kernel,
    uniform_draws,
    validated_model,
)

__all__ = [
    "PAD",
    "ShuffledStack",
    "jackknife_permutation_block",
    "jackknife_permutation_maps",
    "permutation_block",
    "permutation_maps",
    "permutation_shifts",
    "regression_permutation_block",
    "regression_permutation_maps",
    "permuted_effects",
    "shuffled_stack",
]

#: Entries repeated at the end of each row (the kernel's tile), so a tile reads one run.
PAD = 512


class ShuffledStack(NamedTuple):
    """Each study's effects in a seeded random arrangement, with its variance model.

    Attributes
    ----------
    values : ndarray of float32 or float64, shape (n_studies, n_voxels + PAD)
        Row ``s``: study ``s``'s effects in its arrangement, then the arrangement's first
        :data:`PAD` entries again (``values[s, n_voxels + i] == values[s, i]``).
    sampling, constant : ndarray of float64, shape (n_studies,)
        ``a_s`` and ``c_s`` of ``variance = a_s + c_s * effect^2``.
    n_voxels : int
        Voxels of the mask.
    """

    values: NDArray[np.floating]
    sampling: NDArray[np.float64]
    constant: NDArray[np.float64]
    n_voxels: int

    @property
    def n_studies(self) -> int:
        """Number of studies."""
        return int(self.sampling.shape[0])

    @property
    def arrangement(self) -> NDArray[np.floating]:
        """The arranged effects without the repeated entries, shape (n_studies, n_voxels)."""
        return self.values[:, : self.n_voxels]


def shuffled_stack(
    effect: ArrayLike,
    seed_sequence: np.random.SeedSequence,
    variance: ArrayLike | None = None,
    sampling: ArrayLike | None = None,
    constant: ArrayLike | None = None,
) -> ShuffledStack:
    """Arrange each study's effects in a seeded uniformly random order.

    Parameters
    ----------
    effect : array_like, shape (n_studies, n_voxels)
        Study effects (float32 kept, else float64; must be finite).
    seed_sequence : numpy.random.SeedSequence
        Seeds the arrangements (one ``Generator.permutation`` per study, in study order);
        ``daskmeta.null.randomization`` uses stream 2 of the analysis.
    variance, sampling, constant
        The variance model, given (``sampling``, ``constant``; see
        :func:`~daskmeta.stats.sdm_model.variance_model`), fitted from ``variance``, and
        checked against ``variance`` when given (as :func:`~daskmeta.stats.sdm_model.validated_model`).

    Returns
    -------
    ShuffledStack

    Raises
    ------
    ValueError
        As :func:`~daskmeta.stats.sdm_model.validated_model`.
    """
    if not isinstance(seed_sequence, np.random.SeedSequence):
        raise TypeError("'seed_sequence' must be a numpy.random.SeedSequence.")
    effect, sampling, constant = validated_model(effect, variance, sampling, constant)
    k, n_voxels = effect.shape
    rng = np.random.default_rng(seed_sequence)
    values = np.empty((k, n_voxels + PAD), dtype=effect.dtype)
    for s in range(k):
        values[s, :n_voxels] = effect[s, rng.permutation(n_voxels)]
    _repeat_head(values, n_voxels)
    return ShuffledStack(values, sampling, constant, int(n_voxels))


def _repeat_head(values: NDArray, n_voxels: int) -> None:
    """Fill the last PAD entries of each row with its first ones (wrapping for tiny masks)."""
    values[:, n_voxels:] = values[:, np.arange(PAD) % n_voxels]


def permutation_shifts(stack: ShuffledStack, keys: ArrayLike) -> NDArray[np.int64]:
    """Each randomization's cyclic shift of each study, shape (n_keys, n_studies).

    Shift ``s`` of key ``key`` is draw ``s + 1`` of the key's SplitMix64 stream mapped to
    ``[0, n_voxels)`` (:func:`~daskmeta.stats.sdm_model.uniform_draws`), as in the kernel.
    """
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
    counters = np.arange(1, stack.n_studies + 1, dtype=np.uint64)
    return np.stack([uniform_draws(key, counters, stack.n_voxels) for key in keys]) if keys.size \
        else np.empty((0, stack.n_studies), dtype=np.int64)


def permuted_effects(stack: ShuffledStack, seed_sequences: Sequence[np.random.SeedSequence]
                     ) -> NDArray[np.floating]:
    """The relocated study maps of each randomization, shape (n, n_studies, n_voxels).

    Randomization ``b`` puts entry ``(v - d_bs) mod V`` of study ``s``'s arrangement at
    voxel ``v``. For tests and diagnostics (memory grows with ``n``).
    """
    shifts = permutation_shifts(stack, randomization_keys(seed_sequences))
    voxels = np.arange(stack.n_voxels)
    arranged = stack.arrangement
    return np.stack([
        np.stack([arranged[s, (voxels - d[s]) % stack.n_voxels] for s in range(stack.n_studies)])
        for d in shifts
    ]) if len(shifts) else np.empty((0, stack.n_studies, stack.n_voxels), dtype=arranged.dtype)


@functools.cache
def _load_kernel() -> SimpleNamespace | None:
    """The compiled kernels (the mean's and the variants' in one namespace), or None."""
    try:
        from daskmeta.stats import _permutation_jit as _permutation_kernel
        from daskmeta.stats import _variants_jit as _permutation_variants
    except ImportError as error:
        warnings.warn(
            f"numba is not available ({error}); the permutation null runs its NumPy version "
            "(same numbers, many times slower). Install numba for speed.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return SimpleNamespace(**{name: getattr(module, name)
                              for module in (_permutation_kernel, _permutation_variants)
                              for name in dir(module) if not name.startswith("__")})


def _kernel(jit: bool | None) -> SimpleNamespace | None:
    return select_kernel(_load_kernel, jit)


def _numpy_z(stack: ShuffledStack, seed_sequences: Sequence[np.random.SeedSequence]
             ) -> NDArray[np.float64]:
    maps = []
    for sequence in seed_sequences:
        y = permuted_effects(stack, [sequence])[0].astype(np.float64)
        variance = stack.sampling[:, None] + stack.constant[:, None] * (y * y)
        maps.append(_pooled_z(y, variance))
    return np.array(maps).reshape(len(maps), stack.n_voxels)


def _run(kernel: SimpleNamespace, stack: ShuffledStack, keys: NDArray[np.uint64], keep_maps: bool
         ) -> tuple[NullSummary, NDArray[np.float64]]:
    n = keys.size
    hist = np.zeros(N_HIST, dtype=np.int64)
    max_z = np.empty(n, dtype=np.float64)
    min_z = np.empty(n, dtype=np.float64)
    maps = np.empty((n, stack.n_voxels) if keep_maps else (1, 0), dtype=np.float64)
    if kernel.TILE != PAD:
        raise RuntimeError(f"kernel tile {kernel.TILE} != PAD {PAD}")
    kernel.permutations(stack.values, stack.n_voxels, stack.sampling, stack.constant, keys, hist,
                        max_z, min_z, maps, keep_maps)
    zeros = np.zeros(n, dtype=np.int64)
    return NullSummary(hist, max_z, min_z, zeros, zeros.copy()), maps


def permutation_maps(stack: ShuffledStack, seed_sequences: Sequence[np.random.SeedSequence],
                     jit: bool | None = None) -> NDArray[np.float64]:
    """SDM-Z maps of the randomizations, shape (n_randomizations, n_voxels).

    For tests and diagnostics; :func:`permutation_block` summarizes without storing maps.
    ``jit`` as in :func:`permutation_block`.
    """
    keys = randomization_keys(seed_sequences)
    kernel = _kernel(jit)
    if kernel is None:
        return _numpy_z(stack, seed_sequences)
    return _run(kernel, stack, keys, keep_maps=True)[1]


def permutation_block(stack: ShuffledStack, seed_sequences: Sequence[np.random.SeedSequence],
                      jit: bool | None = None) -> NullSummary:
    """Summaries of one block of permutation randomizations.

    Parameters
    ----------
    stack : ShuffledStack
        From :func:`shuffled_stack`.
    seed_sequences : sequence of numpy.random.SeedSequence
        One per randomization; its first 64-bit word keys the shifts, so each randomization
        depends only on its own seed and blocks can be cut anywhere.
    jit : bool or None
        None: the Numba kernel when Numba imports, else the NumPy version (same numbers);
        False: NumPy; True: Numba or ImportError.

    Returns
    -------
    NullSummary
        Histogram of all null z, max and min z per randomization; cluster maxima are zeros
        (the cluster null relocates peaks).

    Notes
    -----
    Cost per randomization: ``n_studies`` shift draws, one streaming read of the stack, one
    float64 division and five other operations per study-voxel, then z, histogram and
    max/min per voxel. See :mod:`daskmeta.stats._permutation_jit`.
    """
    keys = randomization_keys(seed_sequences)
    kernel = _kernel(jit)
    if kernel is not None:
        return _run(kernel, stack, keys, keep_maps=False)[0]
    n = keys.size
    hist = np.zeros(N_HIST, dtype=np.int64)
    max_z = np.empty(n, dtype=np.float64)
    min_z = np.empty(n, dtype=np.float64)
    for b, sequence in enumerate(seed_sequences):
        z = _numpy_z(stack, [sequence])[0]
        hist += histogram(z)
        max_z[b], min_z[b] = z.max(), z.min()
    zeros = np.zeros(n, dtype=np.int64)
    return NullSummary(hist, max_z, min_z, zeros, zeros.copy())


# -- leave-one-out (jackknife) ---------------------------------------------------------------


def _numpy_jackknife_z(stack: ShuffledStack, seed_sequences: Sequence[np.random.SeedSequence]
                       ) -> NDArray[np.float64]:
    from daskmeta.stats.jackknife import leave_one_out

    maps = []
    for sequence in seed_sequences:
        y = permuted_effects(stack, [sequence])[0].astype(np.float64)
        variance = stack.sampling[:, None] + stack.constant[:, None] * (y * y)
        maps.append(leave_one_out(y, variance).z)
    return np.array(maps).reshape(len(maps), stack.n_studies, stack.n_voxels)


def _check_jackknife(stack: ShuffledStack) -> None:
    if stack.n_studies < 3:
        raise ValueError(
            f"a leave-one-out analysis needs at least 3 studies; {stack.n_studies} were provided")


def _jackknife_run(stack: ShuffledStack, seed_sequences: Sequence[np.random.SeedSequence],
                   jit: bool | None, keep_maps: bool
                   ) -> tuple[NDArray[np.int64], NDArray[np.float64] | None]:
    """Histograms (k, N_HIST) of the leave-one-out runs and, with ``keep_maps``, their maps."""
    _check_jackknife(stack)
    hist = np.zeros((stack.n_studies, N_HIST), dtype=np.int64)
    kernel = _kernel(jit)
    if kernel is None:
        maps = _numpy_jackknife_z(stack, seed_sequences)
        for i in range(stack.n_studies):
            hist[i] += histogram(maps[:, i])
        return hist, maps if keep_maps else None
    keys = randomization_keys(seed_sequences)
    maps = np.empty((keys.size, stack.n_studies, stack.n_voxels) if keep_maps else (1, 1, 0))
    kernel.jackknife_permutations(stack.values, stack.n_voxels, stack.sampling, stack.constant,
                                  keys, hist, maps, keep_maps)
    return hist, maps if keep_maps else None


def jackknife_permutation_maps(stack: ShuffledStack,
                               seed_sequences: Sequence[np.random.SeedSequence],
                               jit: bool | None = None) -> NDArray[np.float64]:
    """z maps of the k leave-one-out runs of each randomization, shape (n, k, n_voxels).

    Row ``[b, i]`` pools randomization ``b``'s relocated maps (those of
    :func:`permutation_maps`) without study ``i``. For tests and diagnostics.
    """
    return _jackknife_run(stack, seed_sequences, jit, keep_maps=True)[1]


def jackknife_permutation_block(stack: ShuffledStack,
                                seed_sequences: Sequence[np.random.SeedSequence],
                                jit: bool | None = None) -> NDArray[np.int64]:
    """Null histograms of the k leave-one-out runs over a block of randomizations.

    All runs share each randomization's relocation (the permutations of
    :func:`permutation_block`, same seeds, same shifts); run ``i`` pools it without study
    ``i``. The kernel takes each run's sums as the full sums minus study ``i``'s terms and
    decides ``tau2 = 0`` from them with a margin that bounds the rounding; other voxels are
    pooled again from their effects, so z agrees with
    :func:`daskmeta.stats.jackknife.leave_one_out` of the relocated maps to about 1e-12
    (not bit for bit; the NumPy fallback computes that function).

    Returns
    -------
    ndarray of int64, shape (n_studies, N_HIST)
        Row ``i``: counts of the null z of the run without study ``i``.
    """
    return _jackknife_run(stack, seed_sequences, jit, keep_maps=False)[0]


# -- meta-regression ---------------------------------------------------------------------------


def _regressor_of(stack: ShuffledStack, design: ArrayLike) -> NDArray[np.float64]:
    """The regressor ``x`` of a ``[1, x]`` design with one row per study (checked)."""
    design = np.asarray(design, dtype=np.float64)
    if design.shape != (stack.n_studies, 2) or not np.all(design[:, 0] == 1.0):
        raise ValueError(
            f"the permutation engine fits designs [1, x] with one row per study, shape "
            f"({stack.n_studies}, 2) and a first column of ones; got shape {design.shape}. "
            "Use engine='reference' for other designs.")
    x = np.ascontiguousarray(design[:, 1])
    if not np.all(np.isfinite(x)) or np.ptp(x) == 0 or stack.n_studies < 3:
        raise ValueError("the regressor must be finite and vary, with at least 3 studies.")
    return x


def _contrast_matrix(contrasts: Mapping[str, ArrayLike]) -> NDArray[np.float64]:
    matrix = np.array([np.asarray(c, dtype=np.float64) for c in contrasts.values()], ndmin=2)
    if matrix.shape[1:] != (2,) or not np.all(np.isfinite(matrix)) or not np.all(matrix.any(1)):
        raise ValueError("each contrast must be a finite, non-zero vector of length 2.")
    return matrix


def _numpy_regression_z(stack: ShuffledStack, design: NDArray[np.float64],
                        contrasts: Mapping[str, ArrayLike],
                        seed_sequences: Sequence[np.random.SeedSequence]) -> NDArray[np.float64]:
    from daskmeta.stats.regression import linear_contrasts, meta_regression

    maps = []
    for sequence in seed_sequences:
        y = permuted_effects(stack, [sequence])[0].astype(np.float64)
        variance = stack.sampling[:, None] + stack.constant[:, None] * (y * y)
        fitted = linear_contrasts(meta_regression(y, variance, design), contrasts)
        maps.append([c.z for c in fitted.values()])
    return np.array(maps).reshape(len(maps), len(contrasts), stack.n_voxels)


def _regression_run(stack: ShuffledStack, design: ArrayLike,
                    seed_sequences: Sequence[np.random.SeedSequence],
                    contrasts: Mapping[str, ArrayLike] | None, jit: bool | None, keep_maps: bool
                    ) -> tuple[NDArray[np.int64], NDArray[np.float64] | None]:
    """Histograms (n_contrasts, N_HIST) and, with ``keep_maps``, the contrast z maps."""
    from daskmeta.stats.regression import SDM_CONTRASTS

    contrasts = SDM_CONTRASTS if contrasts is None else contrasts
    x = _regressor_of(stack, design)
    matrix = _contrast_matrix(contrasts)
    hist = np.zeros((len(matrix), N_HIST), dtype=np.int64)
    kernel = _kernel(jit)
    if kernel is None:
        maps = _numpy_regression_z(stack, np.asarray(design, np.float64), contrasts,
                                   seed_sequences)
        for r in range(len(matrix)):
            hist[r] += histogram(maps[:, r])
        return hist, maps if keep_maps else None
    keys = randomization_keys(seed_sequences)
    maps = np.empty((keys.size, len(matrix), stack.n_voxels) if keep_maps else (1, 1, 0))
    kernel.regression_permutations(stack.values, stack.n_voxels, stack.sampling, stack.constant,
                                   x, matrix, keys, hist, maps, keep_maps)
    return hist, maps if keep_maps else None


def regression_permutation_maps(
    stack: ShuffledStack, design: ArrayLike, seed_sequences: Sequence[np.random.SeedSequence],
    contrasts: Mapping[str, ArrayLike] | None = None, jit: bool | None = None,
) -> NDArray[np.float64]:
    """Contrast z maps of each randomization's meta-regression, shape (n, n_contrasts, V).

    For tests and diagnostics; see :func:`regression_permutation_block`.
    """
    return _regression_run(stack, design, seed_sequences, contrasts, jit, keep_maps=True)[1]


def regression_permutation_block(
    stack: ShuffledStack, design: ArrayLike, seed_sequences: Sequence[np.random.SeedSequence],
    contrasts: Mapping[str, ArrayLike] | None = None, jit: bool | None = None,
) -> NDArray[np.int64]:
    """Null histograms of the contrasts of a ``[1, x]`` meta-regression (docs/methods.md, section 8).

    Each randomization relocates every study's map by the permutations of
    :func:`permutation_block` (each study keeps its covariate) and fits, per voxel, the
    random-effects meta-regression of :func:`daskmeta.stats.regression.meta_regression`
    (method-of-moments tau2). The kernel solves the 2 x 2 normal equations in closed form
    from six running sums per voxel and refits the voxels where tau2 may be positive; z
    agrees with ``meta_regression`` + ``linear_contrasts`` to about 1e-10 (LAPACK solves
    there, closed forms here).

    Parameters
    ----------
    stack : ShuffledStack
        From :func:`shuffled_stack`.
    design : array_like, shape (n_studies, 2)
        ``[1, x]``, usually ``x`` rescaled to [0, 1] or a 0/1 group code.
    seed_sequences : sequence of numpy.random.SeedSequence
        One per randomization.
    contrasts : mapping of str to length-2 vectors, optional
        Default :data:`daskmeta.stats.regression.SDM_CONTRASTS` (``0``, ``1``, ``1m0``).
    jit : bool or None
        As in :func:`permutation_block` (the NumPy fallback computes ``meta_regression``).

    Returns
    -------
    ndarray of int64, shape (n_contrasts, N_HIST)
    """
    return _regression_run(stack, design, seed_sequences, contrasts, jit, keep_maps=False)[0]
