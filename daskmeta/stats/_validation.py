"""Input checks shared by the statistics kernels."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def check_study_arrays(effect: ArrayLike, variance: ArrayLike, axis: int) -> tuple[NDArray, NDArray]:
    """``effect`` and ``variance`` as arrays of one shape with a valid study ``axis``.

    Raises
    ------
    ValueError
        If the shapes differ, the arrays are 0-d or ``axis`` is out of range.
    """
    effect = np.asarray(effect)
    variance = np.asarray(variance)
    if effect.shape != variance.shape:
        raise ValueError(
            f"'effect' and 'variance' must have the same shape; got {effect.shape} and "
            f"{variance.shape}."
        )
    if effect.ndim == 0:
        raise ValueError("'effect' must have a study axis; a 0-d array was provided.")
    if not -effect.ndim <= axis < effect.ndim:
        raise ValueError(
            f"'axis' must be in [{-effect.ndim}, {effect.ndim - 1}] for {effect.ndim}-d "
            f"input; {axis} was provided."
        )
    return effect, variance
