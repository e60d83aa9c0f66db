"""The engines of the randomization null, chosen here and nowhere else.

Two engines relocate the study maps (docs/methods.md, "Randomization null and p-values"):

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

from typing import Literal, get_args

#: The engines of the randomization null.
Engine = Literal["permutation", "reference"]
#: Their names, in the order of documentation.
ENGINES: tuple[str, ...] = get_args(Engine)
#: The engine analyses use unless told otherwise.
DEFAULT_ENGINE: Engine = "permutation"
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
