"""Stereotactic coordinate transforms: MNI and Talairach, into SPM's MNI space.

Everything daskmeta analyses lies in SPM's MNI space, the space of the MNI152 2 mm grid
(docs/methods.md, section 1.6). This module holds Lancaster's icbm2tal affines, Brett's
piecewise-linear ``mni2tal`` and the mapping of the peak-file space tokens to SPM-MNI.

All functions are vectorised NumPy: they take points as an ``(n, 3)`` array (a single
``(3,)`` point is accepted and returned with the same shape) and never touch files.

References
----------
Lancaster JL, Tordesillas-Gutierrez D, Martinez M, et al. (2007). Bias between MNI and
Talairach coordinates analyzed using the ICBM-152 brain template. Hum Brain Mapp
28:1194-1205 (the ``icbm_spm2tal``, ``icbm_fsl2tal`` and ``icbm_other2tal`` affines).
Brett M, Christoff K, Cusack R, Lancaster J (2001). Using the Talairach atlas with the MNI
template. NeuroImage 13:S85 (``mni2tal.m`` / ``tal2mni.m``).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.errors import plain

IcbmKind = Literal["spm", "fsl", "other"]
#: Software that produced the MNI coordinates, as in Lancaster's three affines.
ICBM_KINDS: tuple[str, ...] = get_args(IcbmKind)

SpaceToken = Literal["spm_mni", "fsl_mni", "other_mni", "other_tal", "spm_brett", "fsl_brett"]
#: Space tokens of SDM peak file names ``STUDY.SOFTWARE_SPACE.txt`` (docs/methods.md, section 1.2).
SPACE_TOKENS: tuple[str, ...] = get_args(SpaceToken)

#: Lancaster 2007 ``icbm_spm2tal``: SPM-MNI -> Talairach, homogeneous 4x4.
ICBM_SPM: NDArray[np.float64] = np.array(
    [
        [0.9254, 0.0024, -0.0118, -1.0207],
        [-0.0048, 0.9316, -0.0871, -1.7667],
        [0.0152, 0.0883, 0.8924, 4.0926],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
#: Lancaster 2007 ``icbm_fsl2tal``: FSL-MNI -> Talairach, homogeneous 4x4.
ICBM_FSL: NDArray[np.float64] = np.array(
    [
        [0.9464, 0.0034, -0.0026, -1.0680],
        [-0.0083, 0.9479, -0.0580, -1.0239],
        [0.0053, 0.0617, 0.9010, 3.1883],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
#: Lancaster 2007 ``icbm_other2tal`` (pooled SPM and FSL): MNI -> Talairach, 4x4.
ICBM_OTHER: NDArray[np.float64] = np.array(
    [
        [0.9357, 0.0029, -0.0072, -1.0423],
        [-0.0065, 0.9396, -0.0726, -1.3940],
        [0.0103, 0.0752, 0.8967, 3.6475],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
ICBM2TAL: dict[str, NDArray[np.float64]] = {"spm": ICBM_SPM, "fsl": ICBM_FSL, "other": ICBM_OTHER}

#: Brett's ``mni2tal`` for MNI z >= 0 (no translation).
BRETT_UPPER: NDArray[np.float64] = np.array(
    [[0.99, 0.0, 0.0], [0.0, 0.9688, 0.0460], [0.0, -0.0485, 0.9189]]
)
#: Brett's ``mni2tal`` for MNI z < 0 (no translation).
BRETT_LOWER: NDArray[np.float64] = np.array(
    [[0.99, 0.0, 0.0], [0.0, 0.9688, 0.0420], [0.0, -0.0485, 0.8390]]
)

_SPM_FROM_TAL = np.linalg.inv(ICBM_SPM)
#: Affines from each MNI/Talairach space to SPM-MNI (docs/methods.md, section 1.6, token table).
TO_SPM_MNI: dict[str, NDArray[np.float64]] = {
    "spm_mni": np.eye(4),
    "fsl_mni": _SPM_FROM_TAL @ ICBM_FSL,
    "other_mni": _SPM_FROM_TAL @ ICBM_OTHER,
    "other_tal": _SPM_FROM_TAL,
}


def _points(xyz: ArrayLike) -> NDArray[np.float64]:
    points = np.asarray(xyz, dtype=np.float64)
    if points.shape[-1:] != (3,) or points.ndim not in (1, 2):
        raise ValueError(f"xyz must have shape (n, 3) or (3,); shape {points.shape} was provided")
    return points


def _apply_affine(affine: NDArray[np.float64], xyz: ArrayLike) -> NDArray[np.float64]:
    points = _points(xyz)
    return points @ affine[:3, :3].T + affine[:3, 3]


def _check(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}; {plain(value)!r} was provided")


def mni_to_tal(xyz: ArrayLike, kind: IcbmKind = "spm") -> NDArray[np.float64]:
    """Lancaster's icbm2tal: MNI coordinates to Talairach.

    Parameters
    ----------
    xyz : array_like, shape (n, 3) or (3,)
        MNI coordinates in mm.
    kind : {'spm', 'fsl', 'other'}
        The software whose MNI template the coordinates refer to: ``icbm_spm2tal``,
        ``icbm_fsl2tal`` or the pooled ``icbm_other2tal``.

    Returns
    -------
    ndarray, same shape as ``xyz``
        Talairach coordinates in mm.

    References
    ----------
    Lancaster et al. (2007), Hum Brain Mapp 28:1194, Table and Appendix (the three affines).

    Examples
    --------
    >>> mni_to_tal([0.0, 0.0, 0.0], "spm")  # the translation column of icbm_spm
    array([-1.0207, -1.7667,  4.0926])
    """
    _check(kind, ICBM_KINDS, "kind")
    return _apply_affine(ICBM2TAL[kind], xyz)


def tal_to_mni(xyz: ArrayLike, kind: IcbmKind = "spm") -> NDArray[np.float64]:
    """Inverse of :func:`mni_to_tal`: Talairach coordinates to MNI of the given software.

    Parameters
    ----------
    xyz : array_like, shape (n, 3) or (3,)
        Talairach coordinates in mm.
    kind : {'spm', 'fsl', 'other'}
        Which of Lancaster's affines to invert.

    Returns
    -------
    ndarray, same shape as ``xyz``
        MNI coordinates in mm.
    """
    _check(kind, ICBM_KINDS, "kind")
    return _apply_affine(np.linalg.inv(ICBM2TAL[kind]), xyz)


def brett_mni2tal(xyz: ArrayLike) -> NDArray[np.float64]:
    """Brett's piecewise-linear MNI -> Talairach transform.

    Points with MNI ``z >= 0`` use the upper matrix, the others the lower one.

    Parameters
    ----------
    xyz : array_like, shape (n, 3) or (3,)
        MNI coordinates in mm.

    Returns
    -------
    ndarray, same shape as ``xyz``
        Talairach coordinates in mm.

    References
    ----------
    Brett et al. (2001), NeuroImage 13:S85; ``mni2tal.m``.

    Examples
    --------
    >>> brett_mni2tal([10.0, 12.0, 14.0]).round(4)
    array([ 9.9   , 12.2696, 12.2826])
    """
    points = _points(xyz)
    upper = points[..., 2:3] >= 0
    return np.where(upper, points @ BRETT_UPPER.T, points @ BRETT_LOWER.T)


def brett_tal2mni(xyz: ArrayLike) -> NDArray[np.float64]:
    """Inverse of :func:`brett_mni2tal`; the matrix is chosen by the sign of Talairach z.

    Parameters
    ----------
    xyz : array_like, shape (n, 3) or (3,)
        Talairach coordinates produced by Brett's ``mni2tal``, in mm.

    Returns
    -------
    ndarray, same shape as ``xyz``
        MNI coordinates in mm.

    References
    ----------
    Brett et al. (2001), NeuroImage 13:S85; ``tal2mni.m`` (Talairach ``z < 0`` uses the
    inverse of the lower matrix).
    """
    points = _points(xyz)
    upper = points[..., 2:3] >= 0
    return np.where(
        upper, points @ np.linalg.inv(BRETT_UPPER).T, points @ np.linalg.inv(BRETT_LOWER).T
    )


def to_spm_mni(xyz: ArrayLike, token: SpaceToken) -> NDArray[np.float64]:
    """Coordinates reported in the space ``token`` converted to SPM-MNI (docs/methods.md, section 1.6).

    ============  ==============================================
    token         to SPM-MNI
    ============  ==============================================
    spm_mni       identity
    fsl_mni       ``inv(icbm_spm) @ icbm_fsl``
    other_mni     ``inv(icbm_spm) @ icbm_other``
    other_tal     ``inv(icbm_spm)``
    spm_brett     inverse Brett
    fsl_brett     inverse Brett, then ``inv(icbm_spm) @ icbm_fsl``
    ============  ==============================================

    Parameters
    ----------
    xyz : array_like, shape (n, 3) or (3,)
        Coordinates in mm as reported.
    token : str
        One of :data:`SPACE_TOKENS`.

    Returns
    -------
    ndarray, same shape as ``xyz``
        SPM-MNI coordinates in mm.

    References
    ----------
    Lancaster et al. (2007); Brett et al. (2001).
    """
    _check(token, SPACE_TOKENS, "token")
    if token == "spm_mni":
        return _points(xyz).copy()
    if token == "spm_brett":
        return brett_tal2mni(xyz)
    if token == "fsl_brett":
        return _apply_affine(TO_SPM_MNI["fsl_mni"], brett_tal2mni(xyz))
    return _apply_affine(TO_SPM_MNI[token], xyz)
