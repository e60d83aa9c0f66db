"""Whole-brain statistical maps (t- or z-maps) as study inputs: header checks and sampling.

A study may give its unthresholded statistical map instead of (or besides) its peaks
(docs/methods.md, section 3.8). Readers check every map with :func:`inspect_statmap` while
loading, so a bad image fails before anything is computed or written; recreation reads the
map's values at the analysis voxels with :func:`sample_statmap`, one chunk of voxels and one
image at a time.

Header rules (chosen here; each failure is an :class:`~daskmeta.errors.InputError` naming
the file):

- the file must parse as NIfTI-1 or NIfTI-2 and hold one real-valued 3-D volume (a 4-D or
  5-D image whose extra dimensions are all 1 is squeezed);
- **space**: the sform is used when its code is set, else the qform (nibabel's rule). Its
  code must be ``mni_152`` (4), ``aligned`` (2) or ``scanner`` (1); ``talairach`` (3),
  ``template`` (5, a template other than MNI) and images without either code are refused.
  The affine must then be a plausible MNI grid: axis-aligned (no rotation or shear, any axis
  may be flipped), voxels of 1 to 3 mm on each axis (:data:`VOXEL_MM`), and voxel centres
  spanning at least the MNI brain's core box :data:`MNI_CORE_BOX` (x -60..60, y -90..60,
  z -40..70 mm), which a grid whose origin is not at MNI (0, 0, 0) or that covers only
  part of the brain does not;
- **values**: at least one finite non-zero value (all-NaN or all-zero maps are refused) and
  no infinite value;
- **degrees of freedom** of a t-map: the header's intent ``t test`` with its dof in
  ``intent_p1``. A dof that disagrees with the study table's sample sizes (``n1 + n2 - 2``,
  or ``n1 - 1`` for a one-sample study) is an error naming both; without intent or dof the
  table's sample sizes give the dof, with a :class:`~daskmeta.errors.DaskmetaWarning`; with
  neither it is an error. An intent of another statistic (``z score``, ``F test``, ...) on a
  map declared as t is an error. A z-map (NiMARE's ``images.z``) may have intent ``z score``
  or none; its dof always comes from the sample sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daskmeta.errors import InputError, plain
from daskmeta.io._notes import note
from daskmeta.model.grid import GRID_AFFINE, ijk_to_mm
from daskmeta.model.studyset import MAP_STATS

#: Accepted sform/qform codes (NIfTI ``xform`` codes) and their names.
ACCEPTED_XFORM_CODES = {1: "scanner", 2: "aligned", 4: "mni_152"}
#: Smallest and largest voxel size (mm) of an accepted grid, each axis.
VOXEL_MM = (1.0, 3.0)
#: Box (mm, SPM-MNI) that the voxel centres of a whole-brain MNI grid must span.
MNI_CORE_BOX = np.array([[-60.0, 60.0], [-90.0, 60.0], [-40.0, 70.0]])
#: NIfTI intent codes of a t and a z statistic.
INTENT_T, INTENT_Z = 3, 5
#: Largest difference between the header's dof and the table's that counts as agreement.
DOF_TOLERANCE = 1e-3


class StatMapHeader(NamedTuple):
    """What :func:`inspect_statmap` learnt about a statistical map.

    Attributes
    ----------
    path : str
        Absolute path of the image.
    stat : {'t', 'z'}
        The statistic it holds.
    dof : float
        Degrees of freedom of the statistic (from the header or the sample sizes).
    shape : tuple of int
        Its 3-D shape.
    affine : ndarray, shape (4, 4)
        Voxel -> MNI mm affine (the sform, else the qform).
    """

    path: str
    stat: str
    dof: float
    shape: tuple[int, int, int]
    affine: NDArray[np.float64]


def _load(path: str | Path):
    """The NIfTI image at ``path``; :class:`InputError` naming it otherwise."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputError("statistical map not found", path, None, "map")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for a file it cannot parse
        raise InputError(f"does not parse as a NIfTI image ({type(exc).__name__}: {exc})",
                         path, None, "map") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"is a {type(img).__name__}, not a NIfTI image; save the map as "
                         ".nii or .nii.gz", path, None, "map")
    return img


def _shape3(img, path: str | Path) -> tuple[int, int, int]:
    shape = tuple(int(n) for n in img.shape)
    if len(shape) < 3:
        raise InputError(f"is a {len(shape)}-D image of shape {shape}; expected one 3-D map",
                         path, None, "map")
    if any(n != 1 for n in shape[3:]):
        raise InputError(f"is a {len(shape)}-D image of shape {shape} ({int(np.prod(shape[3:]))} "
                         "volumes); give one 3-D statistical map per study", path, None, "map")
    return shape[:3]


def _affine(img, path: str | Path) -> NDArray[np.float64]:
    """The image's voxel -> mm affine after the space rules of the module docstring."""
    import nibabel as nib

    header = img.header
    sform, s_code = header.get_sform(coded=True)
    qform, q_code = header.get_qform(coded=True)
    affine, code, which = (sform, int(s_code), "sform") if s_code else (qform, int(q_code), "qform")
    if not code:
        raise InputError("has neither sform nor qform code set, so its space is unknown; set the "
                         "sform code to 4 (MNI_152) if the map is in MNI space", path, None, "map")
    if code not in ACCEPTED_XFORM_CODES:
        label = nib.nifti1.xform_codes.label.get(code, f"code {code}")
        raise InputError(
            f"{which} code {code} ({label}) is not MNI; statistical maps must be in MNI space "
            f"(codes accepted: {', '.join(f'{c} ({n})' for c, n in ACCEPTED_XFORM_CODES.items())})",
            path, None, "map")
    affine = np.asarray(affine, dtype=np.float64)
    linear = affine[:3, :3]
    sizes = np.abs(np.diag(linear))
    off = np.abs(linear - np.diag(np.diag(linear)))
    if (off > DOF_TOLERANCE * max(1.0, float(sizes.max()))).any():
        raise InputError(f"the {which} is rotated or sheared ({plain(linear.round(4))}); an MNI "
                         "grid is axis-aligned: resample the map to an MNI template first",
                         path, None, "map")
    low, high = VOXEL_MM
    if ((sizes < low * 0.99) | (sizes > high * 1.01)).any():
        raise InputError(f"voxel size {plain(sizes.round(4))} mm is not that of an MNI grid "
                         f"({low:g} to {high:g} mm on each axis)", path, None, "map")
    shape = _shape3(img, path)
    corners = np.array([[0, 0, 0], np.array(shape) - 1], dtype=np.float64)
    mm = corners @ linear.T + affine[:3, 3]
    lo, hi = mm.min(axis=0), mm.max(axis=0)
    if (lo > MNI_CORE_BOX[:, 0] + 1e-6).any() or (hi < MNI_CORE_BOX[:, 1] - 1e-6).any():
        span = ", ".join(f"{a} {a0:g}..{a1:g}" for a, a0, a1 in zip("xyz", lo, hi, strict=True))
        core = ", ".join(f"{a} {a0:g}..{a1:g}" for a, (a0, a1) in zip("xyz", MNI_CORE_BOX,
                                                                      strict=True))
        raise InputError(f"its voxels span {span} mm, which does not cover the brain in MNI space "
                         f"({core}); the map is not in MNI space or is cropped", path, None, "map")
    return affine


def _check_values(img, path: str | Path) -> None:
    kind = img.header.get_data_dtype().kind
    if kind not in "fiub":
        raise InputError(f"its data type {img.header.get_data_dtype()} is not real-valued; a "
                         "statistical map holds real numbers", path, None, "map")
    data = np.asanyarray(img.dataobj)
    finite = np.isfinite(data)
    if (~finite & ~np.isnan(data)).any():
        raise InputError(f"holds {int((~finite & ~np.isnan(data)).sum())} infinite values; a "
                         "statistical map must be finite (NaN marks voxels outside its mask)",
                         path, None, "map")
    if not (finite & (data != 0)).any():
        raise InputError("holds no finite non-zero value (all NaN or all zero)", path, None, "map")


def _table_dof(n1: float | None, n2: float | None) -> float | None:
    if n1 is None or not np.isfinite(n1):
        return None
    if n2 is None or not np.isfinite(n2):
        return float(n1) - 1.0
    return float(n1) + float(n2) - 2.0


def _sizes_text(n1: float | None, n2: float | None) -> str:
    if n2 is None or not np.isfinite(n2):
        return f"n1 - 1 with n1 = {plain(n1):g}"
    return f"n1 + n2 - 2 with n1 = {plain(n1):g}, n2 = {plain(n2):g}"


def _dof(img, path: Path, n1: float | None, n2: float | None, stat: str,
         log: list[str] | None) -> float:
    import nibabel as nib

    header = img.header
    code = int(header["intent_code"])
    label = nib.nifti1.intent_codes.label.get(code, f"code {code}")
    table = _table_dof(n1, n2)
    if stat == "z":
        if code not in (0, INTENT_Z):
            raise InputError(f"the header's intent is {label!r}, not 'z score', but the map is "
                             "declared a z-map", path, None, "intent_code")
        if table is None:
            raise InputError("a z-map needs the study's sample sizes (n1, n2) for its degrees "
                             "of freedom", path, None, "n1")
        return table
    if code not in (0, INTENT_T):
        hint = " (declare it a z-map: map_stat z, or NiMARE images.z)" if code == INTENT_Z else ""
        raise InputError(f"the header's intent is {label!r}, not 't test', but the map is "
                         f"declared a t-map{hint}", path, None, "intent_code")
    header_dof = float(header["intent_p1"]) if code == INTENT_T else np.nan
    if np.isfinite(header_dof) and header_dof > 0:
        if table is not None and abs(header_dof - table) > DOF_TOLERANCE:
            raise InputError(
                f"the header's degrees of freedom ({plain(header_dof):g}, intent_p1) disagree "
                f"with the study table's ({table:g} = {_sizes_text(n1, n2)}); correct the sample "
                "sizes or the map", path, None, "intent_p1")
        return header_dof
    missing = "no intent 't test'" if code != INTENT_T else "no degrees of freedom (intent_p1)"
    if table is None:
        raise InputError(f"the t-map's header has {missing} and the study has no sample sizes, "
                         "so its degrees of freedom are unknown; set the intent "
                         "(img.header.set_intent('t test', (dof,))) or give n1 (and n2)",
                         path, None, "intent_p1")
    message = (f"{path}: the t-map's header has {missing}; degrees of freedom {table:g} taken "
               f"from the study table ({_sizes_text(n1, n2)})")
    note([] if log is None else log, message)
    return table


def inspect_statmap(path: str | Path, n1: float | None = None, n2: float | None = None,
                    stat: str = "t", log: list[str] | None = None) -> StatMapHeader:
    """Check a statistical map and return its header facts (rules in the module docstring).

    Reads the header and, once, the data (one 3-D volume) to refuse all-NaN, all-zero and
    infinite maps.

    Parameters
    ----------
    path : str or Path
        The NIfTI file.
    n1, n2 : float, optional
        The study's sample sizes (``n2`` NaN or None for a one-sample study); None when the
        table gives none.
    stat : {'t', 'z'}
        What the map holds: ``t`` (default) or ``z``.
    log : list of str, optional
        Ingest log; a dof taken from the sample sizes is recorded here as well as warned.

    Returns
    -------
    StatMapHeader

    Raises
    ------
    InputError
        Naming the file, for any rule of the module docstring that the map breaks.

    Warns
    -----
    DaskmetaWarning
        When a t-map's dof comes from the sample sizes (no intent or dof in the header).
    """
    path = Path(path).absolute()
    if stat not in MAP_STATS:
        raise InputError(f"map_stat must be one of {MAP_STATS}; {plain(stat)!r} was provided",
                         path, None, "map_stat")
    img = _load(path)
    shape = _shape3(img, path)
    affine = _affine(img, path)
    dof = _dof(img, path, n1, n2, stat, log)
    _check_values(img, path)
    return StatMapHeader(str(path), stat, float(dof), shape, affine)


def sample_statmap(path: str | Path, ijk: ArrayLike) -> NDArray[np.float64]:
    """A statistical map's values at voxels of the MNI152 2 mm grid.

    When the image's affine is the grid's (:data:`~daskmeta.model.grid.GRID_AFFINE`) its
    voxels are read directly; otherwise the map is interpolated trilinearly
    (:func:`scipy.ndimage.map_coordinates`, order 1) at the voxels' positions in the
    image's voxel space. A position outside the image's voxel centres is NaN; so is an
    interpolated value that a NaN voxel contributes to (with a non-zero weight).

    Parameters
    ----------
    path : str or Path
        The NIfTI file, already checked by :func:`inspect_statmap`.
    ijk : array-like of int, shape (n, 3)
        Voxel indices on the MNI152 2 mm grid.

    Returns
    -------
    ndarray of float64, shape (n,)

    Notes
    -----
    Reads the image on every call (one image in memory at a time); a pure function of
    ``path``, the file's content and ``ijk``.
    """
    from scipy.ndimage import map_coordinates

    ijk = np.asarray(ijk, dtype=np.float64).reshape(-1, 3)
    img = _load(path)
    shape = _shape3(img, path)
    data = np.asarray(img.dataobj).astype(np.float64).reshape(shape)  # our own copy
    affine = np.asarray(img.affine, dtype=np.float64)
    out = np.full(len(ijk), np.nan)
    if np.allclose(affine, GRID_AFFINE, atol=1e-6):
        index = np.rint(ijk).astype(np.int64)
        inside = np.all((index >= 0) & (index < np.array(shape)), axis=1)
        out[inside] = data[tuple(index[inside].T)]
        return out
    mm = ijk_to_mm(ijk) if len(ijk) else np.zeros((0, 3))
    inverse = np.linalg.inv(affine)
    position = mm @ inverse[:3, :3].T + inverse[:3, 3]
    nearest = np.rint(position)
    position = np.where(np.abs(position - nearest) < 1e-6, nearest, position)
    inside = np.all((position >= 0) & (position <= np.array(shape) - 1), axis=1)
    points = position[inside].T
    missing = np.isnan(data)
    data[missing] = 0.0
    values = map_coordinates(data, points, order=1, mode="nearest", prefilter=False)
    if missing.any():
        touched = map_coordinates(missing.astype(np.float64), points, order=1, mode="nearest",
                                  prefilter=False)
        values[touched > 0] = np.nan
    out[inside] = values
    return out
