"""Threshold a voxel-wise result into clusters, peaks and the clusters table.

The rules are SDM's defaults (docs/methods.md, section 6): voxels with ``p < 0.005`` (one-tailed, of
z's own sign) in each direction separately, 26-connected clusters of at least 10 voxels
whose peak has ``|SDM-Z| >= 1``; each cluster reported by its maximum and local maxima at
least 8 mm apart, with its voxels counted per AAL region and Brodmann area (regions with
fewer than 10 voxels not listed).

This is a reporting layer: it reads the needed variables of a (possibly dask-backed)
result once, then works on NumPy vectors with the kernels of :mod:`daskmeta.stats.labelling`.

References
----------
Albajes-Eizagirre A, et al. Voxel-based meta-analysis via permutation of subject images
(PSI): theory and implementation for SDM. NeuroImage 2019;186:174-184.
Radua J, et al. A new meta-analytic method for neuroimaging studies that combines
reported peak coordinates and statistical parametric maps. Eur Psychiatry 2012;27:605-611.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from daskmeta.errors import plain
from daskmeta.model.grid import MASK_NAMES, Mask, ijk_to_mm, load_mask
from daskmeta.stats.labelling import MIN_PEAK_DISTANCE_MM, find_peaks, label_clusters

#: Spec section 6 defaults.
VOXEL_P = 0.005
PEAK_Z = 1.0
EXTENT = 10
#: docs/methods.md, section 4 (chosen here): a peak is flagged heterogeneous when the Q test p is below this.
HETEROGENEITY_P = 0.005

#: Columns of every clusters table, in order; ``i2`` and ``p_fwe`` follow ``region`` when
#: the result holds them.
COLUMNS: tuple[str, ...] = (
    "cluster", "direction", "peak_type", "x", "y", "z", "sdm_z", "p", "voxels",
    "breakdown", "region", "heterogeneity",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("i2", "p_fwe")
_DTYPES: dict[str, Any] = {
    "cluster": np.int64, "direction": str, "peak_type": str, "x": np.int64, "y": np.int64,
    "z": np.int64, "sdm_z": np.float64, "p": np.float64, "voxels": np.int64,
    "breakdown": str, "region": str, "heterogeneity": bool, "i2": np.float64,
    "p_fwe": np.float64,
}


@dataclass(frozen=True, eq=False)
class Thresholded:
    """Clusters of a thresholded result.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per peak (``peak_type`` ``'cluster'`` for the cluster maximum, first, then
        ``'sub'``): ``cluster, direction, peak_type, x, y, z, sdm_z, p, voxels, breakdown,
        region, heterogeneity`` (+ ``i2``, ``p_fwe`` where the result holds them).
    labels : ndarray of int32, shape (n_voxels,)
        Cluster of each mask voxel: ``+id`` for positive clusters, ``-id`` for negative
        ones, 0 outside reported clusters; ``id`` is the table's ``cluster``.
    mask : Mask
        The mask of the voxel vector.
    params : dict
        The thresholds used (``p``, ``peak_z``, ``extent``, ``min_distance_mm``).
    z : ndarray of float, shape (n_voxels,), optional
        The SDM-Z that was thresholded (drawn by :meth:`_repr_html_`).

    In a notebook, a ``Thresholded`` shows itself as a glass brain of its clusters and its
    table (:meth:`_repr_html_`).
    """

    table: pd.DataFrame
    labels: NDArray[np.int32]
    mask: Mask
    params: dict[str, float] = field(default_factory=dict)
    z: NDArray[np.float64] | None = None

    def to_tsv(self, path: str | PathLike[str]) -> None:
        """Write :attr:`table` as a tab-separated ``clusters.tsv`` (no index column)."""
        self.table.to_csv(path, sep="\t", index=False)

    def labels_volume(self) -> NDArray[np.int32]:
        """:attr:`labels` placed into a (91, 109, 91) volume."""
        return self.mask.to_volume(self.labels)

    def __repr__(self) -> str:
        n = int(self.table["cluster"].nunique()) if len(self.table) else 0
        return f"<Thresholded: {n} clusters, {len(self.table)} peaks, mask {self.mask.name!r}>"

    def glass_brain_png(self) -> bytes:
        """A PNG glass brain of the clusters: SDM-Z inside them (or their sign without ``z``)."""
        import io
        import warnings

        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from nilearn import plotting

        from daskmeta.io.nifti import to_image

        values = np.sign(self.labels).astype(np.float64) if self.z is None else np.where(
            self.labels != 0, self.z, 0.0)
        peak = float(np.max(np.abs(values))) or 1.0
        figure = Figure(figsize=(8, 3))
        FigureCanvasAgg(figure)
        rule = ", ".join(f"{k} {v:g}" for k, v in self.params.items() if k != "min_distance_mm")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*empty.*", category=UserWarning)
            plotting.plot_glass_brain(to_image(values, mask=self.mask.name), plot_abs=False, colorbar=True,
                                      cmap="RdBu_r", symmetric_cbar=True, threshold=1e-6, vmin=-peak,
                                      vmax=peak, figure=figure, title=f"clusters ({rule})")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        return buffer.getvalue()

    def _repr_html_(self) -> str:
        """Notebook display: a summary line, a glass brain of the clusters and the peaks table."""
        import base64
        import html

        image = base64.b64encode(self.glass_brain_png()).decode("ascii")
        n = int(self.table["cluster"].nunique()) if len(self.table) else 0
        return (f"<p><b>{n} cluster(s), {len(self.table)} peak(s)</b> "
                f"({html.escape(', '.join(f'{k} = {v:g}' for k, v in self.params.items()))}); "
                "red: SDM-Z &gt; 0, blue: SDM-Z &lt; 0.</p>"
                f'<img src="data:image/png;base64,{image}" alt="glass brain of the clusters">'
                + self.table.to_html(index=False, float_format=lambda v: f"{v:.4g}", max_rows=60))


def empty_table(optional: tuple[str, ...] = OPTIONAL_COLUMNS) -> pd.DataFrame:
    """A clusters table with no rows and the columns of :data:`COLUMNS` + ``optional``."""
    return _frame([], COLUMNS + tuple(optional))


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=list(columns))
    return table.astype({name: _DTYPES[name] for name in columns})


def _resolve_mask(result: xr.Dataset, mask: Mask | str | None) -> Mask:
    if isinstance(mask, Mask):
        return mask
    if mask is None:
        mask = result.attrs.get("mask")
        if mask is None:
            raise ValueError(
                "result.attrs['mask'] is missing: pass mask= (a Mask or one of "
                f"{MASK_NAMES}) to say which voxels the result covers"
            )
    if not isinstance(mask, str):
        raise TypeError(f"mask must be a Mask or a mask name; {type(mask).__name__} was provided")
    return load_mask(mask)  # type: ignore[arg-type]  # validated there


def _read(result: xr.Dataset, names: list[str], mask: Mask) -> dict[str, NDArray]:
    """Compute the variables ``names`` together (one pass over a shared dask graph)."""
    for name in names:
        dims = result[name].dims
        if dims != ("voxel",):
            raise ValueError(
                f"result[{name!r}] must have the single dimension 'voxel'; dims {dims} were "
                "provided (select one map first, e.g. result.sel(contrast=...))"
            )
    if result.sizes["voxel"] != mask.n_voxels:
        raise ValueError(
            f"result has {result.sizes['voxel']} voxels but mask {mask.name!r} has "
            f"{mask.n_voxels}; pass the mask the result was computed on"
        )
    computed = result[names].compute()
    return {name: np.asarray(computed[name].values, dtype=np.float64) for name in names}


def _validate(p: float, peak_z: float, extent: int, atlas: bool) -> None:
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1]; {p} was provided")
    if not (np.isfinite(peak_z) and peak_z >= 0):
        raise ValueError(f"peak_z must be a finite number >= 0; {peak_z} was provided")
    if isinstance(extent, bool) or not isinstance(extent, int | np.integer) or extent < 1:
        raise ValueError(f"extent must be an integer >= 1 (voxels); {plain(extent)!r} was provided")
    if not isinstance(atlas, bool):
        raise TypeError(f"atlas must be True or False; {plain(atlas)!r} was provided")


def threshold(
    result: xr.Dataset,
    p: float = VOXEL_P,
    peak_z: float = PEAK_Z,
    extent: int = EXTENT,
    mask: Mask | str | None = None,
    atlas: bool = True,
) -> Thresholded:
    """Clusters, peaks and the clusters table of a voxel-wise result.

    Parameters
    ----------
    result : xarray.Dataset
        Over the dimension ``voxel``, with variables ``z`` (SDM-Z) and ``p`` (one-tailed p
        of z's own sign), optionally ``i2``, ``p_q`` (heterogeneity Q test p) and ``p_fwe``.
        Variables may be dask-backed; those needed are computed once, together.
    p : float, default 0.005
        Voxel threshold: voxels with ``p < p`` are candidates (per direction).
    peak_z : float, default 1.0
        A cluster is kept only if its maximum |z| is at least this.
    extent : int, default 10
        A cluster is kept only if it has at least this many voxels.
    mask : Mask or str, optional
        The mask of the voxel vector; default ``load_mask(result.attrs['mask'])``.
    atlas : bool, default True
        Fill ``breakdown`` (AAL regions, then `` | `` and Brodmann areas, regions with
        fewer than 10 cluster voxels not listed) and ``region`` (AAL name at the peak);
        empty strings when False.

    Returns
    -------
    Thresholded
        ``.table`` (one row per peak), ``.labels`` (signed cluster id of each voxel).
        Cluster ids are 1-based: positive clusters by descending size (ties by peak |z|),
        then negative clusters likewise.

    Notes
    -----
    ``heterogeneity`` is ``p_q < 0.005`` at the peak (docs/methods.md, section 4, chosen here); False when the
    result has no ``p_q``. ``i2`` and ``p_fwe`` are the values at the peak voxel.
    """
    if not isinstance(result, xr.Dataset):
        raise TypeError(f"result must be an xarray.Dataset; {type(result).__name__} was provided")
    missing = [name for name in ("z", "p") if name not in result.data_vars]
    if missing:
        raise ValueError(f"result must hold the variables 'z' and 'p'; {missing} are missing")
    _validate(p, peak_z, extent, atlas)
    mask = _resolve_mask(result, mask)
    optional = tuple(name for name in OPTIONAL_COLUMNS if name in result.data_vars)
    names = ["z", "p", *optional] + (["p_q"] if "p_q" in result.data_vars else [])
    values = _read(result, names, mask)
    z, p_voxel = values["z"], values["p"]

    # Clusters kept in each direction, as (sign, volume labels, label, size, peak |z|).
    kept: list[tuple[int, NDArray[np.int32], int, int, float]] = []
    for sign in (1, -1):
        candidates = (p_voxel < p) & (sign * z > 0)
        labels_volume, sizes = label_clusters(mask.to_volume(candidates))
        voxel_labels = mask.from_volume(labels_volume)
        found = []
        for label in np.flatnonzero(sizes >= extent) + 1:
            height = float(np.max(sign * z[voxel_labels == label]))
            if height >= peak_z:
                found.append((sign, labels_volume, int(label), int(sizes[label - 1]), height))
        kept.extend(sorted(found, key=lambda c: (-c[3], -c[4])))

    atlases = None
    if atlas and kept:
        from daskmeta.inference.atlas import UNDEFINED, breakdown, format_breakdown, load_atlas

        atlases = (load_atlas("aal"), load_atlas("brodmann"))

    z_volume = mask.to_volume(z, fill=np.nan)
    signed = np.zeros(mask.n_voxels, dtype=np.int32)
    rows: list[dict[str, Any]] = []
    for cluster, (sign, labels_volume, label, size, _) in enumerate(kept, start=1):
        in_cluster = labels_volume == label
        signed[mask.from_volume(in_cluster)] = sign * cluster
        text = ""
        if atlases is not None:
            cluster_ijk = np.argwhere(in_cluster)
            # the Brodmann atlas labels only cortex: its unlabelled voxels are not a region
            text = " | ".join(
                format_breakdown([row for row in breakdown(cluster_ijk, a)
                                  if a.name == "aal" or row[0] != UNDEFINED])
                for a in atlases)
        peaks = find_peaks(z_volume, labels_volume, label, MIN_PEAK_DISTANCE_MM)
        for rank, (ijk, xyz) in enumerate(zip(peaks, ijk_to_mm(peaks), strict=True)):
            voxel = int(mask.lookup[tuple(ijk)])
            row: dict[str, Any] = {
                "cluster": cluster,
                "direction": "positive" if sign > 0 else "negative",
                "peak_type": "cluster" if rank == 0 else "sub",
                "x": int(round(xyz[0])), "y": int(round(xyz[1])), "z": int(round(xyz[2])),
                "sdm_z": z[voxel],
                "p": p_voxel[voxel],
                "voxels": size,
                "breakdown": text,
                "region": atlases[0].name_at(xyz) if atlases is not None else "",
                "heterogeneity": bool("p_q" in values and values["p_q"][voxel] < HETEROGENEITY_P),
            }
            row.update({name: values[name][voxel] for name in optional})
            rows.append(row)

    params = {"p": p, "peak_z": peak_z, "extent": extent, "min_distance_mm": MIN_PEAK_DISTANCE_MM}
    return Thresholded(_frame(rows, COLUMNS + optional), signed, mask, params, z)


def replicated(reference: NDArray, labels: NDArray) -> dict[int, bool]:
    """Whether each cluster of ``reference`` is found again in ``labels``.

    Both are signed voxel labels (+id positive, -id negative, 0 none), as
    :attr:`Thresholded.labels`. A reference cluster is found again when ``labels`` has a
    cluster of the same sign overlapping it by at least one voxel (docs/methods.md, section 7, chosen
    here). Keys are the signed reference labels, in order of ``abs``.
    """
    clusters = sorted({int(label) for label in np.unique(reference) if label != 0}, key=abs)
    found = {}
    for cluster in clusters:
        inside = labels[reference == cluster]
        found[cluster] = bool((inside > 0).any() if cluster > 0 else (inside < 0).any())
    return found
