"""The engines of the randomization null, chosen here and nowhere else.

Two engines relocate the study maps (docs/methods.md, section 5.5):

``permutation`` (default)
    Every randomization permutes each study's voxels: a random cyclic shift of the study's
    seeded random arrangement, pooled by the streaming Numba kernels of
    :mod:`daskmeta.stats.permutation`. The variance of every study is recomputed from its
    effect with SDM's model ``a + c effect^2``, so the maps must follow that model (recreated
    maps do; the engine checks it).
``reference``
    Independent uniform voxel draws pooled in NumPy (:mod:`daskmeta.stats.null`): for
    variance maps that do not follow SDM's model, and the tests' oracle.

Each engine turns the whole study stacks into a *source* (one graph task), and a block of
randomizations of a mean, jackknife or linear-model null reads that source. The analyses ask
:func:`null_blocks` for their blocks and never branch on the engine themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from numpy.typing import ArrayLike

from daskmeta.null.seeds import arrangement_seed, block_bounds, randomization_seeds
from daskmeta.stats.jackknife import jackknife_null_block
from daskmeta.stats.null import NullSummary, randomization_block
from daskmeta.stats.permutation import (
    ShuffledStack,
    jackknife_permutation_block,
    permutation_block,
    regression_permutation_block,
    shuffled_stack,
)
from daskmeta.stats.regression import regression_null_block
from daskmeta.stats.sdm_model import variance_model

#: The engines of the randomization null.
Engine = Literal["permutation", "reference"]
#: Their names, in the order of documentation.
ENGINES: tuple[str, ...] = get_args(Engine)
#: The engine analyses use unless told otherwise.
DEFAULT_ENGINE: Engine = "permutation"
#: How each engine relocates a study's voxels, in the words of a result's ``null`` attribute.
RELOCATION = {
    "permutation": "random permutation of each study's voxels",
    "reference": "uniform relocation of each study's voxels (with replacement)",
}
#: Names that earlier versions accepted, and what to use instead.
RETIRED_ENGINES = {
    "numba": "retired (independent draws, slower than 'permutation'); use 'permutation'",
    "numpy": "renamed 'reference'",
}


def check_engine(engine: object) -> Engine:
    """``engine`` if it names an engine, else a ValueError that lists the allowed ones."""
    if engine in ENGINES:
        return engine  # type: ignore[return-value]
    hint = f" ({engine!r} was {RETIRED_ENGINES[engine]})" if engine in RETIRED_ENGINES else ""
    raise ValueError(f"'engine' must be one of {', '.join(map(repr, ENGINES))}; "
                     f"{engine!r} was provided{hint}.")


Kind = Literal["mean", "jackknife", "regression"]


def whole_stacks(*arrays: da.Array) -> list[Delayed]:
    """Each (study, voxel) array as one delayed task holding the whole stack.

    Randomization blocks relocate over all voxels, so each needs the whole stack: it enters
    the graph once and each worker fetches it once, whatever the number of blocks.
    """
    return [da.asarray(a).rechunk(tuple(a.shape)).to_delayed().ravel()[0] for a in arrays]


def shuffled_studies(effect: np.ndarray, variance: np.ndarray, n1: np.ndarray | None,
                     n2: np.ndarray | None, seed: int, name: str) -> ShuffledStack:
    """The permutation engine's arranged stack of analysis ``name`` (a graph task).

    The variance model comes from the sample sizes ``n1, n2`` when given, else it is fitted
    from the maps; either way the variance maps are checked against it.
    """
    model = {} if n1 is None else dict(zip(("sampling", "constant"), variance_model(n1, n2),
                                           strict=True))
    return shuffled_stack(effect, arrangement_seed(seed, name), variance, **model)


def _delayed_sizes(sizes: tuple[ArrayLike, ArrayLike] | None) -> tuple[Delayed | None, Delayed | None]:
    if sizes is None:
        return None, None
    n1, n2 = (dask.delayed(np.asarray, pure=True)(a, dtype=np.float64) for a in sizes)
    return n1, n2


def arrangement(stack_e: Delayed, stack_v: Delayed, sizes: tuple[ArrayLike, ArrayLike] | None,
                seed: int, name: str) -> Delayed:
    """The permutation engine's arranged stack as one graph task (:func:`shuffled_studies`).

    ``stack_e, stack_v`` are the whole stacks (:func:`whole_stacks`); ``sizes`` the studies'
    ``(n1, n2)`` or None to fit the variance model. Pure: the mean, jackknife and
    linear-model graphs of one analysis share it.
    """
    n1, n2 = _delayed_sizes(sizes)
    return dask.delayed(shuffled_studies, pure=True)(stack_e, stack_v, n1, n2, seed, name)


def _stacks(effect: np.ndarray, variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return effect, variance


# One block of randomizations ``start..stop-1`` of each kind, per engine: the engine's source
# and the block's seeds in, a NullSummary (mean) or null histograms (jackknife, regression) out.

def _permutation_mean(stack: ShuffledStack, seeds: list, *_: Any) -> NullSummary:
    return permutation_block(stack, seeds)


def _permutation_jackknife(stack: ShuffledStack, seeds: list, *_: Any) -> np.ndarray:
    return jackknife_permutation_block(stack, seeds)


def _permutation_regression(stack: ShuffledStack, seeds: list, design: np.ndarray) -> np.ndarray:
    return regression_permutation_block(stack, design, seeds)


def _reference_mean(stacks: tuple[np.ndarray, np.ndarray], seeds: list, *_: Any) -> NullSummary:
    return randomization_block(*stacks, seeds, len(seeds))


def _reference_jackknife(stacks: tuple[np.ndarray, np.ndarray], seeds: list, *_: Any) -> np.ndarray:
    return jackknife_null_block(*stacks, seeds)


def _reference_regression(stacks: tuple[np.ndarray, np.ndarray], seeds: list,
                          design: np.ndarray) -> np.ndarray:
    return regression_null_block(*stacks, design, seeds)


_BLOCKS: dict[str, dict[str, Callable[..., Any]]] = {
    "permutation": {"mean": _permutation_mean, "jackknife": _permutation_jackknife,
                    "regression": _permutation_regression},
    "reference": {"mean": _reference_mean, "jackknife": _reference_jackknife,
                  "regression": _reference_regression},
}


def _block(kind: str, engine: str, source: Any, seed: int, name: str, start: int, stop: int,
           design: np.ndarray | None) -> Any:
    return _BLOCKS[engine][kind](source, randomization_seeds(seed, name, start, stop), design)


def null_blocks(
    kind: Kind,
    effect: da.Array,
    variance: da.Array,
    n_randomizations: int,
    seed: int,
    name: str,
    block_size: int,
    engine: Engine = DEFAULT_ENGINE,
    sample_sizes: tuple[ArrayLike, ArrayLike] | None = None,
    design: np.ndarray | None = None,
) -> list[Delayed]:
    """The blocks of an analysis' randomization null, one lazy task per block.

    Parameters
    ----------
    kind : {"mean", "jackknife", "regression"}
        What each randomization pools: the random-effects mean (a block returns a
        :class:`~daskmeta.stats.null.NullSummary`), the k leave-one-out means (null
        histograms, ``(k, N_HIST)``) or the linear model of ``design`` (null histograms of
        its SDM contrasts, ``(3, N_HIST)``).
    effect, variance : dask.array.Array, shape (study, voxel)
        The selected studies' maps.
    n_randomizations, seed, name, block_size
        Randomization ``b`` of analysis ``name`` draws from stream 0 of ``SeedSequence(seed,
        spawn_key=(crc32(name), b))`` (:func:`~daskmeta.null.seeds.randomization_seeds`);
        ``block_size`` randomizations per task.
    engine : {"permutation", "reference"}
        See the module's description. The three kinds of one analysis with the same
        ``seed`` and ``name`` relocate the studies identically.
    sample_sizes : (n1, n2), optional
        The permutation engine's variance model from the studies' sample sizes (``n2`` NaN
        for one-sample); without them it is fitted from the maps. Either way the maps are
        checked against it.
    design : ndarray, shape (study, 2), optional
        The regression's design ``[1, x]`` (``kind="regression"`` only).

    Returns
    -------
    list of dask.delayed.Delayed
        One task per block, in randomization order.
    """
    engine = check_engine(engine)
    if (design is None) == (kind == "regression"):
        raise ValueError(f"'design' is needed for, and only for, kind='regression'; got kind={kind!r}.")
    stack_e, stack_v = whole_stacks(effect, variance)
    token = dask.base.tokenize(stack_e, stack_v, n_randomizations, seed, name, block_size, engine,
                               sample_sizes, design)
    if engine == "permutation":
        source = arrangement(stack_e, stack_v, sample_sizes, seed, name)
    else:
        source = dask.delayed(_stacks, pure=True)(stack_e, stack_v)
    return [
        dask.delayed(_block, pure=True)(kind, engine, source, seed, name, start, stop, design,
                                        dask_key_name=f"randomization-{kind}-{name}-{token}-{start}")
        for start, stop in block_bounds(n_randomizations, block_size)
    ]
