"""Addressable randomness of the randomization nulls.

Randomization ``b`` of analysis ``name`` draws from ``SeedSequence(seed, spawn_key=(crc32(name),
b))`` (stream 0: voxel relocations; 1: peak relocations of the cluster-extent null; 2: the
permutation engine's arrangement), so every randomization is the same whatever the block
size, the worker count, the order of completion or a retry (docs/methods.md,
section 12).
"""

from __future__ import annotations

import zlib

import numpy as np


def analysis_key(name: str) -> int:
    """A stable 32-bit key of an analysis name (part of every randomization's seed)."""
    return zlib.crc32(name.encode("utf-8"))


def randomization_seeds(
    seed: int, name: str, start: int, stop: int, stream: int = 0
) -> list[np.random.SeedSequence]:
    """The seed sequences of randomizations ``start..stop-1`` of analysis ``name``.

    ``stream`` 0 feeds the voxel relocations, 1 the peak relocations of the cluster null.
    """
    key = analysis_key(name)
    tail = (stream,) if stream else ()
    return [np.random.SeedSequence(int(seed), spawn_key=(key, b, *tail)) for b in range(start, stop)]


def relocation_draws(seed: int, name: str, start: int, stop: int, n_peaks: int,
                     n_positions: int) -> np.ndarray:
    """The positions every peak of randomizations ``start..stop-1`` moves to (cluster-extent null).

    Randomization ``b`` draws ``default_rng(seed sequence b, stream 1).integers(0, n_positions,
    n_peaks)``, peaks study after study: mask voxels for the isotropic kernel
    (:func:`~daskmeta.null.cluster_extent.relocated_peaks`, which draws them study by study, the
    same numbers), bank centres for the data's kernel. Shape ``(stop - start, n_peaks)``, int64.
    """
    out = np.empty((stop - start, n_peaks), dtype=np.int64)
    for row, sequence in enumerate(randomization_seeds(seed, name, start, stop, stream=1)):
        out[row] = np.random.default_rng(sequence).integers(0, n_positions, n_peaks)
    return out


def block_bounds(n_randomizations: int, block_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each block."""
    if n_randomizations < 1:
        raise ValueError(f"permutations must be >= 1; {n_randomizations} was provided")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1; {block_size} was provided")
    return [(s, min(s + block_size, n_randomizations)) for s in range(0, n_randomizations, block_size)]


#: Stream of an analysis's seed that arranges the studies for the permutation engine
#: (0: voxel relocations, 1: peak relocations).
ARRANGEMENT_STREAM = 2


def arrangement_seed(seed: int, name: str) -> np.random.SeedSequence:
    """The seed sequence of the permutation engine's arrangements of analysis ``name``."""
    return randomization_seeds(seed, name, 0, 1, stream=ARRANGEMENT_STREAM)[0]
