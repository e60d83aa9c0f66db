"""Fast randomization null of the mean: compressed study tables and a fused kernel (spec 5).

The NumPy reference (:func:`daskmeta.stats.null.randomization_block`) draws a source voxel
for every study and voxel with ``numpy.random.Generator.integers``, gathers ``(k, V)`` effect
and variance stacks and pools them with several ``(k, V)`` temporaries. The fast engine
computes the same null distribution with less work, from two facts of the algebra:

1. **The variance is a function of the effect** (spec section 3): for study ``s``,
   ``variance = a_s + c_s * effect^2`` with ``a_s = 1/n1 + 1/n2`` (``1/n`` one-sample) and
   ``c_s`` from :func:`~daskmeta.stats.effect_size.variance_constant`. Only the effect is read;
   the variance is recomputed in float64.
2. **The relocation null depends only on each study's distribution of values**: every null
   voxel is an independent draw of one value per study, whatever the voxel it came from.
   So each study is stored as a compressed table (:class:`StudyTables`): its zero voxels
   (36-100 % of a recreated map) collapse to one entry and its nonzero values follow in
   voxel order. A uniform source voxel ``u`` reads entry ``max(u - n_zero + 1, 0)``: the
   same distribution as reading voxel ``u`` of the map, from a table about 4x smaller.

The kernel (:mod:`daskmeta.stats._null_jit`, Numba) fuses drawing, gathering, DL pooling
(float64, the reference's arithmetic) and the summaries chunk by chunk, with no ``(k, V)``
temporary. Random streams are counter-based SplitMix64, keyed per randomization by
``seed_sequence.generate_state(1, numpy.uint64)``: the same seeds give bit-identical results
whatever the block size, the number of workers, and whether Numba is installed (without it,
:func:`fast_randomization_block` runs a NumPy version of the same stream, slower).

The fast engine's null is *equal in distribution* to the reference's, not equal draw for
draw (different random streams); ``tests/test_fast_null.py`` checks the distributions
against each other and the pooling arithmetic exactly.

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
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.stats.effect_size import degrees_of_freedom, sampling_term, variance_constant
from daskmeta.stats.null import N_HIST, NullSummary, histogram
from daskmeta.stats.random_effects import _pooled_z

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "VARIANCE_RTOL",
    "Engine",
    "StudyTables",
    "check_engine",
    "fast_randomization_block",
    "fast_relocate",
    "numba_available",
    "pooled_z",
    "randomization_keys",
    "select_kernel",
    "study_groups",
    "study_tables",
    "uniform_draws",
    "validated_model",
    "variance_model",
]

#: Engines of the mean's randomization null: permutations of seeded arrangements (default,
#: :mod:`daskmeta.stats.permutation`), independent draws with the fused kernel, or
#: independent draws with the NumPy reference.
Engine = Literal["permutation", "numba", "numpy"]
#: The default engine.
DEFAULT_ENGINE: Engine = "permutation"
ENGINES: tuple[str, ...] = get_args(Engine)
#: Largest relative gap allowed between a study's variance map and ``a + c effect^2``
#: (float32 storage rounds to about 6e-8).
VARIANCE_RTOL = 1e-5
#: Table bytes per study group. The kernel draws a group's studies chunk by chunk, so the
#: group's tables stay near the core while the per-voxel sums (32 bytes a voxel) stream
#: through once per group. Measured on this project's machine (32 MB L3): 200 studies
#: (37 MB of tables) run 2-3x faster in 2 MB groups than in one group.
GROUP_BYTES = 2 * 2**20
#: Tables up to this size form one group (they stay in the last-level cache anyway, and
#: every extra group streams the sums once more: 24 studies, 4.5 MB, are 15 % slower in
#: three groups).
SINGLE_GROUP_BYTES = 8 * 2**20

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def check_engine(engine: str) -> Engine:
    """``engine`` if it is one of :data:`ENGINES`, else a ValueError naming the choices."""
    if engine not in ENGINES:
        raise ValueError(f"'engine' must be one of {set(ENGINES)}; {engine!r} was provided.")
    return engine  # type: ignore[return-value]


class StudyTables(NamedTuple):
    """Each study's distribution of effects, compressed, with its variance model.

    Attributes
    ----------
    values : ndarray of float32 or float64, shape (sum of table sizes,)
        Study ``s``'s table ``values[offsets[s]:offsets[s] + 1 + n_voxels - n_zero[s]]``:
        a 0 followed by the study's nonzero effects in voxel order (the stack's dtype).
    offsets : ndarray of int64, shape (n_studies,)
        Start of each study's table.
    n_zero : ndarray of int64, shape (n_studies,)
        Voxels of each study whose effect is exactly 0.
    sampling, constant : ndarray of float64, shape (n_studies,)
        ``a_s`` and ``c_s`` of ``variance = a_s + c_s * effect^2``.
    n_voxels : int
        Voxels of the mask (the range of the uniform source draws).
    """

    values: NDArray[np.floating]
    offsets: NDArray[np.int64]
    n_zero: NDArray[np.int64]
    sampling: NDArray[np.float64]
    constant: NDArray[np.float64]
    n_voxels: int

    @property
    def n_studies(self) -> int:
        """Number of studies."""
        return int(self.sampling.shape[0])


def variance_model(n1: ArrayLike, n2: ArrayLike | None = None) -> tuple[NDArray[np.float64], ...]:
    """``(a, c)`` of ``variance(g) = a + c g^2`` per study from its sample sizes (spec 2-3).

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


def study_tables(
    effect: ArrayLike,
    variance: ArrayLike | None = None,
    sampling: ArrayLike | None = None,
    constant: ArrayLike | None = None,
) -> StudyTables:
    """Compress a (study, voxel) effect stack into :class:`StudyTables` for the fast null.

    Parameters
    ----------
    effect : array_like, shape (n_studies, n_voxels)
        Study effects over the mask; float32 is kept as float32 (the tables are read, all
        arithmetic is float64), other dtypes become float64. Must be finite.
    variance : array_like, optional
        The study variance maps, same shape. With ``sampling``/``constant`` they are checked
        against the model; without, the model is fitted from them (least squares of
        variance on effect^2 per study) and checked.
    sampling, constant : array_like, shape (n_studies,), optional
        ``a_s`` and ``c_s`` (:func:`variance_model`). Give both, or give ``variance``.

    Returns
    -------
    StudyTables

    Raises
    ------
    ValueError
        For bad shapes, non-finite effects, fewer than 2 studies, a model that is not positive,
        or a variance map farther than :data:`VARIANCE_RTOL` (relative) from the model: such
        maps need the NumPy reference (``engine="numpy"``).
    """
    effect, sampling, constant = validated_model(effect, variance, sampling, constant)
    k, n_voxels = effect.shape
    dtype = effect.dtype
    tables, n_zero = [], np.empty(k, dtype=np.int64)
    for s in range(k):
        nonzero = effect[s][effect[s] != 0]
        n_zero[s] = n_voxels - nonzero.size
        tables.append(np.concatenate([np.zeros(1, dtype=dtype), nonzero]))
    sizes = np.array([t.size for t in tables], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return StudyTables(np.concatenate(tables), offsets, n_zero, sampling, constant, int(n_voxels))


def validated_model(
    effect: ArrayLike,
    variance: ArrayLike | None = None,
    sampling: ArrayLike | None = None,
    constant: ArrayLike | None = None,
) -> tuple[NDArray[np.floating], NDArray[np.float64], NDArray[np.float64]]:
    """The checked effect stack (float32 kept, else float64) and its variance model ``a, c``.

    The checks and the fitting of :func:`study_tables` (see there), shared by the engines
    that read only the effect.
    """
    effect = np.asarray(effect)
    if effect.ndim != 2 or effect.shape[0] < 2 or effect.shape[1] < 1:
        raise ValueError(
            "'effect' must be a (study, voxel) array with at least 2 studies and 1 voxel; "
            f"got shape {effect.shape}."
        )
    if effect.shape[1] >= 2**31:
        raise ValueError(f"the fast null supports fewer than 2**31 voxels; got {effect.shape[1]}.")
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
            f"a={sampling[bad[0]]!r}, c={constant[bad[0]]!r}."
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
                f"at most {VARIANCE_RTOL:g} allowed). The fast null needs the variance model of "
                "recreated maps (spec section 3); use engine='numpy' for other maps."
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
        from daskmeta.stats import _null_jit as _null_kernel
    except ImportError as error:
        warnings.warn(
            f"numba is not available ({error}); the fast null runs its NumPy version (same "
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
    two 32 x 32-bit products; ``n < 2^32``): :func:`daskmeta.stats._null_jit.position`.
    """
    r = np.asarray(counters, dtype=np.uint64) * _GAMMA + np.uint64(key)
    r = (r ^ (r >> np.uint64(30))) * _MIX1
    r = (r ^ (r >> np.uint64(27))) * _MIX2
    r ^= r >> np.uint64(31)
    high, low = r >> np.uint64(32), r & np.uint64(0xFFFFFFFF)
    n64 = np.uint64(n)
    return ((high * n64 + ((low * n64) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)


def _numpy_maps(tables: StudyTables, keys: NDArray[np.uint64]) -> NDArray[np.float64]:
    """The NumPy version of the kernel's stream and pooling (same numbers, (k, V) temporaries)."""
    k, n = tables.n_studies, tables.n_voxels
    counter = np.arange(1, k * n + 1, dtype=np.uint64).reshape(k, n)
    shift = (tables.n_zero - 1)[:, None]
    z = np.empty((keys.size, n), dtype=np.float64)
    for b, key in enumerate(keys):
        u = uniform_draws(key, counter, n)
        position = np.maximum(u - shift, 0) + tables.offsets[:, None]
        y = tables.values[position].astype(np.float64)
        variance = tables.sampling[:, None] + tables.constant[:, None] * (y * y)
        z[b] = _pooled_z(y, variance)
    return z


def study_groups(tables: StudyTables, group_bytes: int = GROUP_BYTES,
                 single_bytes: int = SINGLE_GROUP_BYTES) -> NDArray[np.int64]:
    """First study of each group of consecutive studies whose tables fit ``group_bytes``.

    One group when all tables fit ``single_bytes``. The number of studies is appended, so
    group ``g`` is ``groups[g]:groups[g + 1]``. Results do not depend on the grouping (each
    voxel's sums run over the studies in order).
    """
    sizes = np.diff(np.append(tables.offsets, tables.values.size)) * tables.values.itemsize
    if sizes.sum() <= single_bytes:
        return np.array([0, tables.n_studies], dtype=np.int64)
    groups, total = [0], 0
    for s, size in enumerate(sizes):
        if total and total + size > group_bytes:
            groups.append(s)
            total = 0
        total += int(size)
    return np.array([*groups, tables.n_studies], dtype=np.int64)


def _run_kernel(kernel: ModuleType, tables: StudyTables, keys: NDArray[np.uint64],
                keep_maps: bool) -> tuple[NullSummary, NDArray[np.float64] | None]:
    n = keys.size
    hist = np.zeros(N_HIST, dtype=np.int64)
    max_z = np.empty(n, dtype=np.float64)
    min_z = np.empty(n, dtype=np.float64)
    maps = np.empty((n, tables.n_voxels) if keep_maps else (1, 0), dtype=np.float64)
    groups = study_groups(tables, GROUP_BYTES, SINGLE_GROUP_BYTES)
    kernel.randomizations(tables.values, tables.offsets, tables.n_zero - 1, tables.n_voxels,
                          tables.sampling, tables.constant, groups, keys, hist, max_z, min_z, maps,
                          keep_maps)
    zeros = np.zeros(n, dtype=np.int64)
    return NullSummary(hist, max_z, min_z, zeros, zeros.copy()), maps if keep_maps else None


def fast_relocate(
    tables: StudyTables, seed_sequences: Sequence[np.random.SeedSequence], jit: bool | None = None
) -> NDArray[np.float64]:
    """The z maps of the fast engine's randomizations, shape (n_randomizations, n_voxels).

    For tests and diagnostics (memory grows with the number of randomizations);
    :func:`fast_randomization_block` summarizes without storing maps.
    """
    keys = randomization_keys(seed_sequences)
    kernel = _kernel(jit)
    if kernel is None:
        return _numpy_maps(tables, keys)
    return _run_kernel(kernel, tables, keys, keep_maps=True)[1]


def fast_randomization_block(
    tables: StudyTables, seed_sequences: Sequence[np.random.SeedSequence], jit: bool | None = None
) -> NullSummary:
    """Summaries of one block of randomizations with the fused kernel.

    Parameters
    ----------
    tables : StudyTables
        From :func:`study_tables`.
    seed_sequences : sequence of numpy.random.SeedSequence
        One per randomization (``randomization_seeds(seed, name, start, stop)``); each
        randomization depends only on its own seed, so blocks can be cut anywhere.
    jit : bool or None
        None: the Numba kernel when Numba imports, else its NumPy version (identical
        numbers); False: the NumPy version; True: Numba or ImportError.

    Returns
    -------
    NullSummary
        Histogram of all null z (bins of :mod:`daskmeta.stats.null`), max and min z per
        randomization; cluster maxima are zeros (the cluster null relocates peaks).

    Notes
    -----
    Cost: about ``n_studies * n_voxels`` x (one SplitMix64 word, one table read, one float64
    division and four additions) per randomization, and a few ``(n_studies, 256)`` buffers;
    ``benchmarks/permutations.py`` measures it against the memory bound.

    References
    ----------
    Radua et al. (2012); spec section 5.
    """
    keys = randomization_keys(seed_sequences)
    kernel = _kernel(jit)
    if kernel is not None:
        return _run_kernel(kernel, tables, keys, keep_maps=False)[0]
    n = keys.size
    hist = np.zeros(N_HIST, dtype=np.int64)
    max_z = np.empty(n, dtype=np.float64)
    min_z = np.empty(n, dtype=np.float64)
    for b in range(n):
        z = _numpy_maps(tables, keys[b:b + 1])[0]
        hist += histogram(z)
        max_z[b], min_z[b] = z.max(), z.min()
    zeros = np.zeros(n, dtype=np.int64)
    return NullSummary(hist, max_z, min_z, zeros, zeros.copy())


def pooled_z(
    effect: ArrayLike, sampling: ArrayLike, constant: ArrayLike, jit: bool | None = None
) -> NDArray[np.float64]:
    """SDM-Z of given study maps with the fast engine's pooling (variance from the model).

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
        As in :func:`fast_randomization_block`.

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
