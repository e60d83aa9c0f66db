"""Small-study effects at the peaks of an analysis: extraction, Egger's test, funnel plots.

Spec section 9. :func:`extract` is SDM's ``extract``: each study's ``effect`` and
``variance`` at given MNI points, read from the study-map stack without loading it (only the
chunks that hold the requested voxels are computed). :func:`egger_at_peaks` runs it at the
main peak of every cluster of a clusters table, tests funnel-plot asymmetry with
:func:`~daskmeta.stats.egger.egger_test`, pools the studies with
:func:`~daskmeta.stats.random_effects.dersimonian_laird`, draws one funnel plot per cluster and
returns the table (:mod:`daskmeta.report.publication_bias` draws the plots and writes ``egger.tsv``).

The statistics are the NumPy kernels of :mod:`daskmeta.stats`; this module composes them with
the study maps (xarray/Dask); it writes no file.

References
----------
Egger M, Davey Smith G, Schneider M, Minder C (1997). Bias in meta-analysis detected by a
simple, graphical test. BMJ 315:629-634, doi:10.1136/bmj.315.7109.629.
Sterne JAC, Sutton AJ, Ioannidis JPA, et al. (2011). Recommendations for examining and
interpreting funnel plot asymmetry in meta-analyses of randomised controlled trials. BMJ
343:d4002, doi:10.1136/bmj.d4002 (tests are advised only with at least 10 studies).
Radua J, Mataix-Cols D, et al. (2012). A new meta-analytic method for neuroimaging studies
that combines reported peak coordinates and statistical parametric maps. Eur Psychiatry
27:605-611 (SDM, its ``extract`` tool and funnel plots at peaks).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from daskmeta.errors import plain
from daskmeta.model.grid import Mask, in_grid, load_mask, mm_to_ijk

__all__ = ["EGGER_COLUMNS", "EGGER_P", "MIN_STUDIES_EGGER", "Funnel", "egger_at_peaks", "extract"]

#: Columns of the table returned by :func:`egger_at_peaks` (and of ``egger.tsv``), in order.
EGGER_COLUMNS: tuple[str, ...] = (
    "cluster", "direction", "x", "y", "z", "k", "pooled_effect", "egger_intercept", "egger_se",
    "egger_t", "egger_df", "egger_p", "bias_suggested", "funnel", "note",
)
_DTYPES: dict[str, Any] = {
    "cluster": np.int64, "direction": str, "k": np.int64, "pooled_effect": np.float64,
    "egger_intercept": np.float64, "egger_se": np.float64, "egger_t": np.float64,
    "egger_df": "Int64", "egger_p": np.float64, "bias_suggested": "boolean", "funnel": str,
    "note": str,
}
#: Egger et al. (1997): asymmetry (bias) is suggested when the intercept's two-sided p is below this.
EGGER_P = 0.05
#: Egger's regression has ``k - 2`` degrees of freedom.
MIN_STUDIES_EGGER = 3
#: Sterne et al. (2011) advise against asymmetry tests with fewer studies than this.
ADVISED_STUDIES = 10
#: Columns a clusters table must have (those of :func:`daskmeta.inference.thresholding.threshold`).
REQUIRED_CLUSTER_COLUMNS: tuple[str, ...] = ("cluster", "direction", "peak_type", "x", "y", "z")


@functools.cache
def _mask_tree(mask: Mask) -> cKDTree:
    """A k-d tree of the mask voxels' mm coordinates, built once per mask."""
    return cKDTree(mask.xyz)


def _mask_of(maps: xr.Dataset) -> Mask:
    """The :class:`Mask` of the maps' voxel vector, checked against its length."""
    name = maps.attrs.get("mask")
    if name is None:
        raise ValueError(
            "maps.attrs['mask'] is missing: 'maps' must be the study-maps Dataset of "
            "daskmeta.recreate (or read back from the store), which records its mask."
        )
    mask = name if isinstance(name, Mask) else load_mask(name)
    if maps.sizes.get("voxel") != mask.n_voxels:
        raise ValueError(
            f"'maps' has {maps.sizes.get('voxel')} voxels but its mask {mask.name!r} has "
            f"{mask.n_voxels}; extract needs the full voxel vector of the mask, not a subset."
        )
    return mask


def _study_positions(maps: xr.Dataset, studies: Sequence[str] | None) -> NDArray[np.int64]:
    """Positions along ``study`` of the selected names, in the order given."""
    names = [str(name) for name in maps["study"].values]
    if studies is None:
        return np.arange(len(names))
    if isinstance(studies, str):
        raise TypeError(f"'studies' must be a list of study names, not a string; got {plain(studies)!r}.")
    studies = [str(name) for name in studies]
    duplicated = sorted({name for name in studies if studies.count(name) > 1})
    if duplicated:
        raise ValueError(f"'studies' lists {duplicated} more than once; give each study once.")
    position = {name: n for n, name in enumerate(names)}
    missing = [name for name in studies if name not in position]
    if missing:
        shown = names if len(names) <= 10 else [*names[:10], "..."]
        raise ValueError(
            f"'studies' names {missing}, which are not in the maps; the maps hold {shown}."
        )
    return np.array([position[name] for name in studies], dtype=np.int64)


def _nearest_voxels(
    mask: Mask, xyz_mm: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Voxel-vector position and distance (mm) of the mask voxel nearest to each point.

    A point whose rounded grid voxel is in the mask uses that voxel (the convention of
    :func:`daskmeta.model.grid.mm_to_ijk` everywhere else); the others, off the grid or outside the
    mask, take the nearest mask voxel centre by a k-d tree query.
    """
    voxel = np.full(len(xyz_mm), -1, dtype=np.int64)
    ijk = mm_to_ijk(xyz_mm)
    on_grid = in_grid(ijk)
    voxel[on_grid] = mask.lookup[tuple(ijk[on_grid].T)]
    outside = voxel < 0
    if outside.any():
        voxel[outside] = _mask_tree(mask).query(xyz_mm[outside])[1]
    distance = np.linalg.norm(mask.xyz[voxel] - xyz_mm, axis=1)
    return voxel, distance


def extract(
    maps: xr.Dataset, xyz_mm: ArrayLike, studies: Sequence[str] | None = None
) -> xr.Dataset:
    """Each study's effect and variance at the mask voxels nearest to MNI points (SDM ``extract``).

    Parameters
    ----------
    maps : xarray.Dataset
        Study maps with ``effect`` and ``variance`` of dims ``(study, voxel)`` and the mask
        name in ``attrs['mask']``, as returned by :func:`daskmeta.recreate`; Dask- or
        NumPy-backed.
    xyz_mm : array_like, shape (n, 3)
        SPM-MNI coordinates in mm (a single point may be given with shape ``(3,)``).
    studies : sequence of str, optional
        Names of the studies to read, in the order wanted; default all of them.

    Returns
    -------
    xarray.Dataset
        ``effect`` and ``variance`` of dims ``(point, study)``, in the maps' dtype and computed
        (NumPy-backed). Coordinates along ``point``: ``x, y, z`` (mm) and ``i, j, k`` of the
        voxel used, ``voxel`` (its position in the voxel vector), ``distance_mm`` from the
        requested point to that voxel's centre, and ``requested_x, requested_y, requested_z``;
        along ``study``: the names and the maps' study coordinates. ``attrs['mask']`` is kept.

    Raises
    ------
    ValueError
        If ``xyz_mm`` is not ``(n, 3)`` and finite, a study name is unknown or repeated, or the
        maps lack their mask or do not span it.
    TypeError
        If ``studies`` is a single string.

    Notes
    -----
    A point inside the mask uses the voxel that contains it (distance at most ``sqrt(3)`` mm
    on the 2 mm grid); a point outside the mask uses the nearest mask voxel, and a large
    ``distance_mm`` says the value was not read where it was asked for. Only the voxels
    wanted are selected (``isel``) before one compute, so with Dask-backed maps only the
    chunks that hold them are read or recreated, never the whole stack.

    References
    ----------
    Spec section 9 (SDM ``extract``); Radua et al. (2012).

    Examples
    --------
    >>> values = extract(maps, [[-42, 24, 10], [0, -60, 30]])  # doctest: +SKIP
    >>> values.effect.sel(study="study01").values  # doctest: +SKIP
    """
    points = np.asarray(xyz_mm, dtype=np.float64)
    if points.ndim == 1:
        points = points[np.newaxis]
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(
            f"'xyz_mm' must have shape (n, 3), one MNI x, y, z row per point; got shape "
            f"{np.shape(xyz_mm)}."
        )
    if not np.all(np.isfinite(points)):
        raise ValueError("'xyz_mm' must be finite; a NaN or infinite coordinate was provided.")
    for variable in ("effect", "variance"):
        if variable not in maps or maps[variable].dims != ("study", "voxel"):
            raise ValueError(
                f"'maps' must hold '{variable}' with dims ('study', 'voxel'), as returned by "
                "daskmeta.recreate."
            )
    mask = _mask_of(maps)
    positions = _study_positions(maps, studies)
    voxel, distance = _nearest_voxels(mask, points)

    selected = maps[["effect", "variance"]]
    selected = selected.drop_vars([name for name, coord in selected.coords.items()
                                   if "voxel" in coord.dims])
    values = (selected.isel(study=positions, voxel=voxel)
              .rename({"voxel": "point"})
              .transpose("point", "study")
              .compute())
    ijk, xyz = mask.ijk[voxel], mask.xyz[voxel]
    return values.assign_coords(
        point=np.arange(len(points)),
        voxel=("point", voxel),
        **{name: ("point", ijk[:, n]) for n, name in enumerate("ijk")},
        **{name: ("point", xyz[:, n]) for n, name in enumerate("xyz")},
        distance_mm=("point", distance),
        **{f"requested_{name}": ("point", points[:, n]) for n, name in enumerate("xyz")},
    ).assign_attrs(mask=mask.name)


def _mm_text(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _empty_egger_table() -> pd.DataFrame:
    table = pd.DataFrame({name: pd.Series(dtype=object) for name in EGGER_COLUMNS})
    return table.astype({**_DTYPES, "x": np.int64, "y": np.int64, "z": np.int64})


def _cluster_peaks(clusters: pd.DataFrame) -> pd.DataFrame:
    """The main-peak rows of a clusters table, validated."""
    if not isinstance(clusters, pd.DataFrame):
        raise TypeError(f"'clusters' must be a pandas DataFrame; got {type(clusters).__name__}.")
    missing = [name for name in REQUIRED_CLUSTER_COLUMNS if name not in clusters.columns]
    if missing:
        raise ValueError(
            f"'clusters' lacks the columns {missing}; expected a clusters table with "
            f"{list(REQUIRED_CLUSTER_COLUMNS)}, as written by daskmeta.inference.thresholding."
        )
    peaks = clusters[clusters["peak_type"] == "cluster"]
    repeated = sorted(peaks["cluster"][peaks["cluster"].duplicated()].unique().tolist())
    if repeated:
        raise ValueError(
            f"'clusters' has more than one main peak (peak_type 'cluster') for cluster(s) "
            f"{repeated}; each cluster needs exactly one."
        )
    return peaks.reset_index(drop=True)


def _peak_row(
    effect: NDArray[np.float64], variance: NDArray[np.float64], names: list[str]
) -> tuple[dict[str, Any], list[str], NDArray[np.bool_]]:
    """Egger and the pooled effect at one peak; the notes; which studies were usable."""
    from daskmeta.stats.egger import egger_test
    from daskmeta.stats.random_effects import dersimonian_laird

    usable = np.isfinite(effect) & np.isfinite(variance) & (variance > 0)
    notes = []
    if not usable.all():
        left_out = [name for name, ok in zip(names, usable, strict=True) if not ok]
        notes.append(f"left out {len(left_out)} studies without a finite effect and positive "
                     f"variance here: {', '.join(left_out)}")
    effect, variance = effect[usable], variance[usable]
    k = int(usable.sum())
    row: dict[str, Any] = {"k": k, "pooled_effect": np.nan, "egger_intercept": np.nan,
                           "egger_se": np.nan, "egger_t": np.nan, "egger_df": pd.NA,
                           "egger_p": np.nan, "bias_suggested": pd.NA}
    if k >= 2:
        row["pooled_effect"] = float(dersimonian_laird(effect, variance).effect)
    else:
        notes.append(f"the random-effects mean needs at least 2 studies; k = {k}, no funnel plot")
    precision = 1.0 / np.sqrt(variance)
    if k < MIN_STUDIES_EGGER:
        notes.append(f"Egger's test needs at least {MIN_STUDIES_EGGER} studies; k = {k}")
    elif np.ptp(precision) == 0:
        notes.append("all studies have the same variance here, so Egger's regression on "
                     "precision is undefined")
    else:
        result = egger_test(effect, variance)
        row.update(egger_intercept=float(result.intercept), egger_se=float(result.intercept_se),
                   egger_t=float(result.t), egger_df=int(result.df), egger_p=float(result.p))
        if np.isfinite(result.p):
            row["bias_suggested"] = bool(result.p < EGGER_P)
        if not np.isfinite(result.t):
            notes.append("the studies lie exactly on Egger's regression line (e.g. all effects 0 "
                         "here), so its residual variance is 0 and t is "
                         + ("undefined" if np.isnan(result.t) else "infinite"))
        if k < ADVISED_STUDIES:
            notes.append(f"k = {k} < {ADVISED_STUDIES}: Egger's test has low power "
                         "(Sterne et al. 2011)")
    return row, notes, usable


class Funnel(NamedTuple):
    """What a funnel plot at one cluster's peak shows (see :func:`egger_at_peaks`)."""

    cluster: int
    title: str
    effect: NDArray[np.float64]
    variance: NDArray[np.float64]
    pooled_effect: float
    labels: list[str]


def egger_at_peaks(
    maps: xr.Dataset,
    clusters: pd.DataFrame,
    studies: Sequence[str],
    analysis: str = "",
) -> tuple[pd.DataFrame, list[Funnel]]:
    """Egger's test and the pooled effect at the main peak of every cluster (no files).

    Parameters
    ----------
    maps : xarray.Dataset
        The study maps, as for :func:`extract`.
    clusters : pandas.DataFrame
        A clusters table (:func:`daskmeta.inference.thresholding.threshold`) with at least the
        columns ``cluster, direction, peak_type, x, y, z``; the rows with ``peak_type ==
        'cluster'`` (one per cluster) are tested, sub-peaks are ignored.
    studies : sequence of str
        The studies of the analysis, whose maps were pooled.
    analysis : str, default ''
        Name of the analysis, for the funnel plots' titles.

    Returns
    -------
    table : pandas.DataFrame
        One row per cluster with the columns of :data:`EGGER_COLUMNS`: ``cluster, direction,
        x, y, z`` of the peak; ``k`` studies with a value there; ``pooled_effect`` (the
        DerSimonian-Laird mean); ``egger_intercept, egger_se, egger_t, egger_df, egger_p``;
        ``bias_suggested`` (``egger_p < 0.05``, missing where not tested); ``funnel`` (the
        file name :func:`daskmeta.report.publication_bias.publication_bias` gives its plot,
        empty where there is none to draw) and ``note``.
    funnels : list of Funnel
        The values of each funnel plot to draw (clusters with a pooled effect).

    Raises
    ------
    ValueError
        If ``clusters`` lacks a required column or has two main peaks for one cluster, or as
        :func:`extract`.

    Notes
    -----
    With fewer than 3 studies (Egger's t has ``k - 2`` degrees of freedom) or equal
    variances at a peak (the precision does not vary), the Egger columns are missing and
    ``note`` says why; with fewer than 2 the pooled effect and the funnel plot are also
    missing. Studies without a finite value at the peak are left out and named in ``note``.
    Sterne et al. (2011) advise asymmetry tests only with at least 10 studies; a note says so
    below that. Asymmetry may come from publication bias, but also from heterogeneity or
    chance: ``bias_suggested`` flags, it does not prove.

    References
    ----------
    Egger et al. (1997), BMJ 315:629; Sterne et al. (2011), BMJ 343:d4002; docs/methods.md,
    section 9.
    """
    if isinstance(studies, str) or studies is None:
        raise TypeError(f"'studies' must be a list of study names; got {plain(studies)!r}.")
    peaks = _cluster_peaks(clusters)
    if len(peaks) == 0:
        return _empty_egger_table(), []
    names = [str(name) for name in studies]
    values = extract(maps, peaks[["x", "y", "z"]].to_numpy(dtype=np.float64), names)
    effect = values["effect"].values.astype(np.float64)
    variance = values["variance"].values.astype(np.float64)
    rows, funnels = [], []
    for n, peak in enumerate(peaks.itertuples(index=False)):
        row, notes, usable = _peak_row(effect[n], variance[n], names)
        distance = float(values["distance_mm"].values[n])
        if distance > 0:
            notes.insert(0, f"values read at the nearest mask voxel, {distance:.1f} mm from the peak")
        peak_text = ", ".join(_mm_text(float(c)) for c in (peak.x, peak.y, peak.z))
        funnel = ""
        if np.isfinite(row["pooled_effect"]):
            title = f"cluster {peak.cluster} ({peak.direction}), peak MNI ({peak_text})"
            funnel = f"funnel_cluster{peak.cluster}.png"
            funnels.append(Funnel(
                int(peak.cluster), f"{analysis}: {title}" if analysis else title,
                effect[n][usable], variance[n][usable], float(row["pooled_effect"]),
                [name for name, ok in zip(names, usable, strict=True) if ok]))
        rows.append({"cluster": peak.cluster, "direction": peak.direction, "x": peak.x,
                     "y": peak.y, "z": peak.z, **row, "funnel": funnel, "note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=list(EGGER_COLUMNS)).astype(_DTYPES), funnels
