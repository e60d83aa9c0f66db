"""Multimodal overlap of two mean analyses (docs/methods.md, section 10), lazy over voxels.

Composes the kernel :func:`daskmeta.stats.multimodal.multimodal_p` with
``xarray.apply_ufunc(..., dask="parallelized")``: one task per voxel chunk, each reading the
two (small) null histograms whole, so building the overlap computes nothing. Clusters and
tables come from :func:`daskmeta.inference.thresholding.threshold`, once for same-direction overlaps and
once for opposite-direction ones.

References
----------
Radua J, Romeo M, Mataix-Cols D, Fusar-Poli P (2013). A general approach for combining voxel-
based meta-analyses conducted in different neuroimaging modalities. Curr Med Chem 20:462-466.
Clopper CJ, Pearson ES (1934). The use of confidence or fiducial limits illustrated in the case
of the binomial. Biometrika 26:404-413.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from daskmeta import __version__
from daskmeta.io.nifti import with_mask
from daskmeta.stats.multimodal import DEFAULT_LEVEL, MultimodalP, multimodal_p

__all__ = ["METHOD", "multimodal"]

#: How ``p`` of a multimodal result is computed (stored in its attrs).
METHOD = (
    "union bound p_mm = p1 + p2 - p1 * p2 of the two analyses' one-tailed randomization "
    "p-values, each replaced by the upper one-sided Clopper-Pearson bound of its null count "
    "(Radua et al. 2013; Clopper & Pearson 1934); z is the smaller |z|"
)
_REQUIRED = {"z": ("voxel",), "p": ("voxel",), "null_hist": ("bin",)}


def _check(result: xr.Dataset, label: str) -> str:
    if not isinstance(result, xr.Dataset):
        raise TypeError(f"{label} must be an xarray.Dataset (a mean result); "
                        f"{type(result).__name__} was provided")
    name = str(result.attrs.get("name", label))
    for variable, dims in _REQUIRED.items():
        if variable not in result.data_vars:
            raise ValueError(f"analysis {name!r} has no variable {variable!r}; multimodal needs the "
                             "z, p and null_hist of a mean result (daskmeta.analyses.means.mean)")
        if result[variable].dims != dims:
            raise ValueError(f"analysis {name!r}: {variable!r} must have dims {dims}; "
                             f"{result[variable].dims} were provided (select one map first)")
    if "mask" not in result.attrs:
        raise ValueError(f"analysis {name!r} has no attrs['mask']; set the mask it was computed on")
    return name


def _hist(result: xr.Dataset) -> xr.Variable:
    """The null histogram as one block along ``bin`` (the kernel needs it whole)."""
    hist = result["null_hist"].variable
    if hist.chunks is not None and len(hist.chunks[0]) > 1:
        hist = hist.chunk({"bin": -1})
    return hist


def _overlap(z_a: np.ndarray, p_a: np.ndarray, hist_a: np.ndarray,
             z_b: np.ndarray, p_b: np.ndarray, hist_b: np.ndarray, level: float) -> MultimodalP:
    n_a = int(np.sum(hist_a, dtype=np.int64))
    n_b = int(np.sum(hist_b, dtype=np.int64))
    return multimodal_p(z_a, p_a, n_a, z_b, p_b, n_b, level=level)


def multimodal(a: xr.Dataset, b: xr.Dataset, name: str = "multimodal") -> xr.Dataset:
    """Voxels abnormal in two analyses, in the same or opposite directions (lazy).

    At each voxel the two one-tailed randomization p-values are made conservative (the upper
    95% Clopper-Pearson bound of each null count) and combined by the union bound
    ``p_mm = p_a + p_b - p_a * p_b``, the probability that at least one of the two findings is
    a false positive (docs/methods.md, section 10; :func:`daskmeta.stats.multimodal.multimodal_p`). The
    height of the overlap is the smaller ``|z|``.

    Parameters
    ----------
    a, b : xarray.Dataset
        Mean results (:func:`daskmeta.analyses.means.mean`) on the same mask: ``z`` and ``p`` over
        ``voxel``, ``null_hist`` over ``bin``, ``attrs['mask']`` and ``attrs['name']``. They may
        be Dask-backed; nothing is computed here.
    name : str, default 'multimodal'
        Name of the overlap analysis.

    Returns
    -------
    xarray.Dataset
        Over ``voxel``: ``z`` and ``p`` (same-direction overlap: positive z where both are
        increased, negative where both are decreased; 0 and 1 elsewhere), ``z_opposite`` and
        ``p_opposite`` (opposite directions: positive where ``a`` is increased and ``b``
        decreased, negative the reverse; 0 and 1 elsewhere), and the inputs' ``z_a``, ``z_b``.
        ``attrs``: ``type='multimodal'``, ``name``, ``of`` (the two analyses' names),
        ``mask``, ``level``, ``method``, ``n_studies`` and ``permutations`` (of ``a``, ``b``),
        ``daskmeta_version``.

    Raises
    ------
    ValueError
        If either input lacks ``z``, ``p``, ``null_hist`` or its mask, or the two differ in
        mask or number of voxels.

    See Also
    --------
    overlap_tables : clusters of the overlap.

    References
    ----------
    Radua J et al. (2013). Curr Med Chem 20:462-466.
    Clopper CJ, Pearson ES (1934). Biometrika 26:404-413.
    """
    name_a, name_b = _check(a, "a"), _check(b, "b")
    mask_a, mask_b = a.attrs["mask"], b.attrs["mask"]
    if mask_a != mask_b:
        raise ValueError(f"analyses {name_a!r} and {name_b!r} use different masks ({mask_a!r} and "
                         f"{mask_b!r}); run both on the same mask to overlap them")
    if a.sizes["voxel"] != b.sizes["voxel"]:
        raise ValueError(f"analyses {name_a!r} and {name_b!r} have {a.sizes['voxel']} and "
                         f"{b.sizes['voxel']} voxels; both must cover the same mask voxels")

    # Variables, not DataArrays: the voxel vectors are matched by position, like the masks.
    fields = xr.apply_ufunc(
        _overlap,
        a["z"].variable, a["p"].variable, _hist(a),
        b["z"].variable, b["p"].variable, _hist(b),
        input_core_dims=[[], [], ["bin"], [], [], ["bin"]],
        output_core_dims=[[] for _ in MultimodalP._fields],
        kwargs={"level": DEFAULT_LEVEL},
        dask="parallelized",
        output_dtypes=[np.float64] * len(MultimodalP._fields),
    )
    result = xr.Dataset(
        {**dict(zip(MultimodalP._fields, fields, strict=True)),
         "z_a": a["z"].variable, "z_b": b["z"].variable}
    )
    result.attrs = {
        "type": "multimodal", "name": name, "of": [name_a, name_b], "mask": mask_a,
        "level": DEFAULT_LEVEL, "method": METHOD,
        "n_studies": [int(r.attrs.get("n_studies", -1)) for r in (a, b)],
        "permutations": [int(r.attrs.get("permutations", -1)) for r in (a, b)],
        "daskmeta_version": __version__,
    }
    return with_mask(result)


