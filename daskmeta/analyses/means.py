"""Analyses over study maps: the random-effects mean (docs/methods.md, sections 4 and 5).

Each analysis composes the pure kernels (:mod:`daskmeta.stats`) with Dask graphs and
returns a lazy ``xarray.Dataset`` with daskmeta's public variable names: nothing is computed until
the result is written or ``.compute()`` is called.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from daskmeta import __version__
from daskmeta.analyses.recreate import VOXEL_CHUNK
from daskmeta.io.nifti import with_mask
from daskmeta.model.studyset import query_studies
from daskmeta.null.engines import DEFAULT_ENGINE, RELOCATION, Engine, check_engine
from daskmeta.null.randomization import (
    DEFAULT_BLOCK,
    UNCORRECTED_PERMUTATIONS,
    null_summary,
    summary_arrays,
    voxel_null_size,
)
from daskmeta.stats.pvalues import p_from_histogram, p_fwe
from daskmeta.stats.random_effects import dersimonian_laird

#: Outputs of the pooling kernel, in order.
POOLED = ("effect", "variance", "z", "tau2", "q", "i2", "p_q", "q_z")
#: SDM's default number of randomizations for voxel-wise p-values (docs/methods.md, section 5.1).
DEFAULT_PERMUTATIONS = 50


def study_table(maps: xr.Dataset) -> pd.DataFrame:
    """The study-table columns carried as coordinates along ``study``."""
    columns = {name: coord.values for name, coord in maps.coords.items() if coord.dims == ("study",)}
    return pd.DataFrame(columns)


def select_studies(maps: xr.Dataset, where: str | None = None, studies: list[str] | None = None,
                   name: str = "analysis", minimum: int = 2) -> xr.Dataset:
    """Study maps of the studies an analysis selects, by a query on study columns or names."""
    table = study_table(maps)
    keep = np.ones(len(table), dtype=bool)
    if where:
        keep &= table.index.isin(query_studies(table, where, f"analysis {name!r}: ").index)
    if studies is not None:
        unknown = sorted(set(studies) - set(table["study"]))
        if unknown:
            raise ValueError(f"analysis {name!r}: unknown studies {unknown}")
        keep &= table["study"].isin(studies).to_numpy()
    if keep.sum() < minimum:
        raise ValueError(
            f"analysis {name!r} selects {int(keep.sum())} studies; it needs at least {minimum}"
            + (f" (where: {where!r})" if where else "")
        )
    return maps.isel(study=np.flatnonzero(keep))


def prepare_studies(maps: xr.Dataset, where: str | None = None, studies: list[str] | None = None,
                    name: str = "analysis", minimum: int = 2) -> xr.Dataset:
    """Selected study maps as Dask arrays with one chunk along ``study``, voxel chunks kept.

    The voxel ``x, y, z`` coordinates are dropped: results use ``z`` for SDM-Z.
    """
    selected = select_studies(maps, where, studies, name, minimum)
    selected = selected.drop_vars([c for c in ("x", "y", "z") if c in selected.coords])
    if selected.effect.chunks is None:
        return selected.chunk({"study": -1, "voxel": VOXEL_CHUNK})
    return selected.chunk({"study": -1})


def _pool(effect: np.ndarray, variance: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(dersimonian_laird(effect, variance, axis=-1))


def pool(maps: xr.Dataset) -> xr.Dataset:
    """Voxel-wise DerSimonian-Laird pooling of ``effect``/``variance`` over ``study`` (lazy)."""
    outputs = xr.apply_ufunc(
        _pool, maps.effect, maps.variance,
        input_core_dims=[["study"], ["study"]],
        output_core_dims=[[] for _ in POOLED],
        dask="parallelized",
        output_dtypes=[np.float64] * len(POOLED),
    )
    return xr.Dataset(dict(zip(POOLED, outputs, strict=True)))


def mean(
    maps: xr.Dataset,
    where: str | None = None,
    studies: list[str] | None = None,
    permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    name: str = "mean",
    block_size: int = DEFAULT_BLOCK,
    voxel_p: float | None = 0.005,
    engine: Engine = DEFAULT_ENGINE,
    uncorrected_permutations: int | None = UNCORRECTED_PERMUTATIONS,
) -> xr.Dataset:
    """Random-effects mean of study maps, judged against the randomization null (lazy).

    Parameters
    ----------
    maps : xarray.Dataset
        Study maps from :func:`daskmeta.recreate` or the store's ``studies`` group.
    where : str, optional
        Query on study columns selecting the studies, e.g. ``"modality == 'ReHo'"``.
    studies : list of str, optional
        Study names to keep (with ``where``, both must hold).
    permutations : int
        Randomizations of the null (docs/methods.md, section 5.1; default 50). Thousands give
        usable family-wise (``p_fwe``) and cluster-level corrected p-values.
    seed : int
        Seed of the null; with ``name`` it fixes every randomization.
    name : str
        The analysis name (part of each randomization's seed; the store group's name).
    block_size : int
        Randomizations per Dask task. Results do not depend on it.
    voxel_p : float or None
        Cluster-forming voxel threshold of the cluster-extent null, which relocates each
        study's peaks (see :func:`daskmeta.null.randomization.null_summary`); None skips it.
    engine : {"permutation", "reference"}
        The voxel null's relocation and implementation (:mod:`daskmeta.null.engines`).
        ``"permutation"`` (default): each randomization permutes every study's voxels (a
        random cyclic shift of a seeded random arrangement, :mod:`daskmeta.stats.permutation`;
        about 40x the reference's speed); the maps' variance must be SDM's model of their
        effect. ``"reference"``: independent uniform draws with replacement pooled in NumPy,
        for maps whose variance is not that model. Each engine is reproducible from ``seed``
        whatever the block size or workers; they differ draw by draw, not in distribution.
    uncorrected_permutations : int or None
        When the cluster-extent null runs, the voxel null (uncorrected ``p``, cluster-forming
        thresholds) runs only the first ``min(permutations, uncorrected_permutations)``
        randomizations, exactly as a run of that many would (default 1000, docs/methods.md,
        5.2); ``p_fwe`` and the cluster-level p use all ``permutations``. None: the voxel null
        runs all of them. Ignored without the cluster-extent null.

    Returns
    -------
    xarray.Dataset
        Over ``voxel``: ``effect, variance, z, p, p_fwe, tau2, q, i2, p_q, q_z``; the null
        summaries ``null_hist`` (dim ``bin``) and ``null_max_z, null_min_z,
        null_max_cluster_pos, null_max_cluster_neg`` (dim ``randomization``; the voxel null's
        ``null_max_z, null_min_z`` NaN beyond its ``uncorrected_permutations``), with the
        cluster-extent null also ``null_peak_max_z, null_peak_min_z``, the extremes that give
        ``p_fwe`` (docs/methods.md, 5.3; ``attrs["fwe_null"]`` says which null gave it);
        parameters in ``attrs``.

    References
    ----------
    DerSimonian R, Laird N (1986). Control Clin Trials 7:177.
    Radua J et al. (2012). Eur Psychiatry 27:605.
    """
    engine = check_engine(engine)
    if uncorrected_permutations is not None and int(uncorrected_permutations) < 1:
        raise ValueError("'uncorrected_permutations' must be at least 1 or None; "
                         f"{uncorrected_permutations!r} was provided.")
    selected = prepare_studies(maps, where, studies, name)
    pooled = pool(selected)
    n_studies = selected.sizes["study"]
    sizes = sample_sizes(selected)
    # the cluster-extent null relocates peaks: it needs every study's peaks and sample sizes,
    # so it is skipped when a study was given as a statistical map (docs/methods.md, 5.4)
    # (read from ``maps``: ``prepare_studies`` turns the study coordinates into Dask arrays)
    images = ("is_image" in maps.coords
              and bool(np.any(maps["is_image"].sel(study=selected.study.values).to_numpy())))
    peaks = ((selected.peak_g.data, *sizes)
             if sizes is not None and "peak_g" in selected and not images else None)
    summary = null_summary(
        selected.effect.data, selected.variance.data, permutations, seed, name,
        maps.attrs["mask"], block_size, voxel_p, peaks, float(maps.attrs.get("fwhm", 20.0)),
        engine=engine, sample_sizes=sizes, anisotropy=float(maps.attrs.get("anisotropy", 0.0)),
        beta=float(maps.attrs.get("beta", 1.0)), uncorrected=uncorrected_permutations,
    )
    null = {key: xr.DataArray(array, dims=("bin",) if key == "null_hist" else ("randomization",))
            for key, array in summary_arrays(summary, permutations).items()}
    # voxel-level FWE from the cluster-extent null's maps (relocated peaks, smooth as the data's)
    # where it runs, else from the voxel null's (docs/methods.md, 5.3)
    cluster_null = voxel_p is not None and peaks is not None
    uncorrected = voxel_null_size(permutations, cluster_null, uncorrected_permutations)
    if cluster_null:
        extremes = null["null_peak_max_z"], null["null_peak_min_z"]
    else:
        del null["null_peak_max_z"], null["null_peak_min_z"]
        extremes = null["null_max_z"], null["null_min_z"]
    p = xr.apply_ufunc(
        p_from_histogram, pooled.z, null["null_hist"], input_core_dims=[[], ["bin"]],
        dask="parallelized", output_dtypes=[np.float64],
    )
    fwe = xr.apply_ufunc(
        p_fwe, pooled.z, *extremes,
        input_core_dims=[[], ["randomization"], ["randomization"]],
        dask="parallelized", output_dtypes=[np.float64],
    )
    result = pooled.assign(p=p, p_fwe=fwe, **null)
    result.attrs = {
        "type": "mean", "name": name, "n_studies": int(n_studies),
        "studies": [str(s) for s in selected.study.values],
        "where": where or "", "permutations": int(permutations), "seed": int(seed),
        # randomizations of the voxel null: the uncorrected p and the cluster-forming thresholds
        "uncorrected_permutations": int(uncorrected),
        "voxel_p": float(voxel_p) if voxel_p is not None else -1.0,
        # whether null_max_cluster_* hold the cluster-extent null (it needs peaks and sizes)
        "cluster_null": bool(cluster_null),
        # the null whose per-randomization extremes give p_fwe
        "fwe_null": "relocated peaks" if cluster_null else "relocated voxels",
        "mask": maps.attrs["mask"],
        "preprocess": {key: maps.attrs.get(key) for key in ("fwhm", "anisotropy", "beta", "kernel")},
        "studies_hash": maps.attrs.get("studies_hash", ""),
        "null": RELOCATION[engine] + "; one null pooled over voxels and randomizations",
        "null_engine": engine,
        "daskmeta_version": __version__,
    }
    return with_mask(result)


def sample_sizes(selected: xr.Dataset) -> tuple[Any, Any] | None:
    """``(n1, n2)`` of the selected studies (``n2`` NaN for one-sample), or None without ``n1``.

    They give the permutation engine's variance model exactly (docs/methods.md, sections 2-3).
    """
    if "n1" not in selected.coords:
        return None
    n2 = selected["n2"].data if "n2" in selected.coords else np.full(selected.sizes["study"], np.nan)
    return selected["n1"].data, n2
