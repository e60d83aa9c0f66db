"""SDM-PSI on Dask: multiple imputation of study maps, subject-image permutation, TFCE, FWE.

docs/methods.md, section 14. :func:`impute` returns the imputed study maps as a lazy
``(imputation, study, voxel)`` Dataset; :func:`psi` pools them (DerSimonian-Laird per
imputation, Rubin's rules across imputations), computes TFCE, and judges both against the
maxima of a permutation null of subject images (:mod:`daskmeta.null.psi`).

The graph: the censored maximum-likelihood fit runs per chunk of voxels (all studies of a
voxel at once); its maps are smoothed whole (one task per map); each study's draws are one
task over the whole mask for up to 50 imputations (their uniform fields, spatially smoothed,
then each voxel's CDF built once and inverted at every imputation). The same
``seed`` always gives the same imputations, whatever the chunks or workers: the field of
study ``s`` in imputation ``m`` draws from ``SeedSequence(seed, spawn_key=(crc32("impute"),
crc32(s), m))``.

References
----------
Albajes-Eizagirre A, Solanes A, Vieta E, Radua J (2019). Voxel-based meta-analysis via
permutation of subject images (PSI): theory and implementation for SDM. NeuroImage 186:174-184.
Albajes-Eizagirre A, Solanes A, Radua J (2019). Meta-analysis of non-statistically
significant unreported effects. Stat Methods Med Res 28:3741-3754.
Rubin DB (1987). Multiple Imputation for Nonresponse in Surveys. Wiley.
Smith SM, Nichols TE (2009). Threshold-free cluster enhancement. NeuroImage 44:83-98.
"""

from __future__ import annotations

import zlib

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import norm

from daskmeta import __version__
from daskmeta.analyses.means import prepare_studies, study_table
from daskmeta.analyses.recreate import VOXEL_CHUNK
from daskmeta.io.nifti import with_mask
from daskmeta.model.grid import GRID_SHAPE, load_mask
from daskmeta.null.psi import chunked_extremes, pool_imputations, psi_z_chunk, stack_chunks, study_key
from daskmeta.null.psi_regression import observed_model, permuted_model_z
from daskmeta.null.seeds import block_bounds
from daskmeta.stats.censored import censored_ml
from daskmeta.stats.imputation import coherent_uniforms, smooth_map, truncated_draws_many
from daskmeta.stats.pvalues import p_fwe
from daskmeta.stats.regression import rescale
from daskmeta.stats.sdm_model import variance_model
from daskmeta.stats.subject_images import SUBJECT_FWHM
from daskmeta.stats.tfce import EXTENT_EXPONENT, HEIGHT_EXPONENT, LEVEL_STEP, tfce

#: SDM-PSI's default numbers of imputations and permutations.
DEFAULT_IMPUTATIONS = 50
DEFAULT_PERMUTATIONS = 1000
#: Stream key of the imputations (the uniform fields).
IMPUTE_KEY = zlib.crc32(b"impute")
#: Most imputations of one study drawn by one task (its uniform fields, float64, and draws,
#: float32: about 2.2 MB per imputation on the grey-matter mask): each task builds the
#: study's CDF tables once, so fewer, larger tasks repeat less.
IMPUTATIONS_PER_TASK = 50


def _design(table: pd.DataFrame, regressors: list[str] | None, name: str) -> tuple[np.ndarray, list[str]]:
    """``[1, x_1, ...]`` with each regressor rescaled to [0, 1] (docs/methods.md, section 8)."""
    columns = [np.ones(len(table))]
    for column in regressors or []:
        if column not in table.columns:
            raise ValueError(f"analysis {name!r}: no study column {column!r} for the regression; "
                             f"columns: {sorted(c for c in table.columns if c != 'study')}")
        values = table[column].to_numpy(dtype=np.float64)
        if np.isnan(values).any():
            raise ValueError(f"analysis {name!r}: studies without {column!r}: "
                             f"{table['study'][np.isnan(values)].tolist()}; select them out with 'where'")
        columns.append(rescale(values)[0])
    return np.column_stack(columns), list(regressors or [])


def selected_table(maps: xr.Dataset, selected: xr.Dataset) -> pd.DataFrame:
    """The study table of the selected studies, read from ``maps`` (whose coordinates are in
    memory; ``prepare_studies`` makes the selection's coordinates Dask arrays)."""
    table = study_table(maps).set_index("study", drop=False)
    return table.loc[[str(s) for s in selected.study.values]].reset_index(drop=True)


def sizes_of(table: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(n1, n2)`` of the selected studies (``n2`` NaN for one-sample)."""
    if "n1" not in table.columns:
        raise ValueError(f"analysis {name!r}: SDM-PSI needs the studies' sample sizes (n1, n2)")
    n1 = table["n1"].to_numpy(dtype=np.float64)
    n2 = (table["n2"].to_numpy(dtype=np.float64) if "n2" in table.columns
          else np.full(len(table), np.nan))
    return n1, n2


def _ml_block(lower: np.ndarray, upper: np.ndarray, a: np.ndarray, c: np.ndarray,
              design: np.ndarray) -> np.ndarray:
    """Censored ML of one chunk of voxels: rows ``beta_0..beta_{p-1}, tau2``.

    The leave-one-out protection acts on the tested coefficient: the mean, or a linear
    model's first regressor (docs/methods.md, sections 14.1 and 14.5).
    """
    contrast = np.zeros(design.shape[1])
    contrast[min(1, design.shape[1] - 1)] = 1.0
    fit = censored_ml(lower.astype(np.float64), upper.astype(np.float64), a, c, design=design,
                      contrast=contrast)
    return np.concatenate([np.atleast_2d(fit.beta), fit.tau2[None]], axis=0)


def _smooth_rows(rows: np.ndarray, mask_name: str, fwhm: float) -> np.ndarray:
    """Each ML map smoothed with the study kernel's FWHM over the mask (one task)."""
    ijk = load_mask(mask_name).ijk
    smoothed = np.stack([smooth_map(row, ijk, fwhm, GRID_SHAPE) for row in rows])
    smoothed[-1] = np.maximum(smoothed[-1], 0.0)  # tau2
    return smoothed


def _draw_task(fit: np.ndarray, lower: np.ndarray, upper: np.ndarray, a: float, c: float,
               row: np.ndarray, sequences: list[np.random.SeedSequence], mask_name: str,
               fwhm: float) -> np.ndarray:
    """One study's imputed maps in several imputations, over the whole mask (float32).

    One uniform field per imputation (row ``m`` from ``sequences[m]``, see
    :func:`imputation_seed`); the study's discretised CDF is built once per voxel and
    inverted at every row (:func:`~daskmeta.stats.imputation.truncated_draws_many`).
    Returns shape ``(len(sequences), n_voxels)``; docs/methods.md, section 14.1.
    """
    mask = load_mask(mask_name)
    u = np.empty((len(sequences), mask.n_voxels))
    for m, sequence in enumerate(sequences):
        u[m] = coherent_uniforms(np.random.default_rng(sequence), GRID_SHAPE, mask.ijk, fwhm)
    mu = row @ fit[:-1]
    values = truncated_draws_many(mu, fit[-1], lower.astype(np.float64).ravel(),
                                  upper.astype(np.float64).ravel(), a, c, u)
    return values.astype(np.float32)


def imputation_seed(seed: int, study: str, imputation: int) -> np.random.SeedSequence:
    """The seed of study ``study``'s uniform field in imputation ``imputation``."""
    return np.random.SeedSequence(seed, spawn_key=(IMPUTE_KEY, study_key(study), imputation))


def impute(
    maps: xr.Dataset,
    imputations: int = DEFAULT_IMPUTATIONS,
    seed: int = 0,
    where: str | None = None,
    studies: list[str] | None = None,
    regressors: list[str] | None = None,
    name: str = "psi",
) -> xr.Dataset:
    """Multiply imputed study maps, lazy: dims ``(imputation, study, voxel)``.

    Parameters
    ----------
    maps : xarray.Dataset
        Study maps with ``effect_lower``, ``effect_upper`` and the sample sizes ``n1, n2``
        (from :func:`daskmeta.recreate` or the store).
    imputations : int
        Number of imputations (SDM-PSI's default 50).
    seed : int
        Fixes every draw; :func:`psi` with the same seed uses exactly these imputations.
    where, studies
        Select the studies, as :func:`daskmeta.mean`.
    regressors : list of str, optional
        Study columns of a linear model: the maximum-likelihood fit uses the design
        ``[1, x, ...]`` (each regressor rescaled to [0, 1]).
    name : str
        The analysis name (in errors and attributes).

    Returns
    -------
    xarray.Dataset
        ``effect`` (imputed Hedges g) and ``variance`` (``a + c effect^2``), float32, dims
        ``(imputation, study, voxel)``, each chunk every imputation and study of a chunk of
        voxels (:func:`~daskmeta.null.psi.stack_chunks`: the maps' voxel chunks when they are
        multiples of 4096 voxels and hold at most 64 MiB of the stack); ``ml_beta``
        (coefficient, voxel) and ``ml_tau2`` (voxel), the smoothed maximum-likelihood maps
        the draws came from.

    Notes
    -----
    Per voxel, the censored maximum-likelihood fit of the mean (or linear model) and tau2
    (with SDM-PSI's leave-one-out protection), smoothed with the kernel's FWHM; then, per
    study and imputation, the unknown voxels are drawn from the truncated normal within
    ``[effect_lower, effect_upper]`` by inverse CDF at a spatially coherent uniform field.
    Known voxels keep their value. docs/methods.md, section 14.1.
    """
    if imputations < 1:
        raise ValueError(f"'imputations' must be >= 1; {imputations} was provided")
    selected = prepare_studies(maps, where, studies, name, minimum=2)
    table = selected_table(maps, selected)
    n1, n2 = sizes_of(table, name)
    a, c = variance_model(n1, n2)
    design, regressors = _design(table, regressors, name)
    k, n_voxels = selected.sizes["study"], selected.sizes["voxel"]
    p = design.shape[1]
    mask_name = maps.attrs["mask"]
    fwhm = float(maps.attrs.get("fwhm", 20.0))
    lower, upper = selected.effect_lower.data, selected.effect_upper.data
    fit = da.map_blocks(_ml_block, lower, upper, a, c, design, dtype=np.float64,
                        chunks=((p + 1,), lower.chunks[1]))
    whole_fit = fit.rechunk((p + 1, n_voxels)).to_delayed().ravel()[0]
    smoothed = dask.delayed(_smooth_rows, pure=True)(whole_fit, mask_name, fwhm)
    per_study = [lower.rechunk((1, n_voxels)).to_delayed().ravel(),
                 upper.rechunk((1, n_voxels)).to_delayed().ravel()]
    names = [str(s) for s in selected.study.values]
    draws = []
    for s, study in enumerate(names):
        column = []
        for start, stop in block_bounds(imputations, IMPUTATIONS_PER_TASK):
            task = dask.delayed(_draw_task, pure=True)(
                smoothed, per_study[0][s], per_study[1][s], float(a[s]), float(c[s]), design[s],
                [imputation_seed(seed, study, m) for m in range(start, stop)], mask_name, fwhm)
            column.append(da.from_delayed(task, (stop - start, n_voxels), np.float32))
        draws.append(da.concatenate(column))
    # the layout the null reads: every imputation and study of a chunk of voxels (one step,
    # each draw task's output cut at the chunks' edges; no intermediate layout)
    layout = ((imputations,), (k,), stack_chunks(lower.chunks[1], imputations, k))
    effect = da.stack(draws, axis=1).rechunk(layout, method="tasks")
    variance = (a[None, :, None] + c[None, :, None] * effect.astype(np.float64) ** 2).astype(np.float32)
    smoothed_array = da.from_delayed(smoothed, (p + 1, n_voxels), np.float64)
    result = xr.Dataset(
        {"effect": (("imputation", "study", "voxel"), effect),
         "variance": (("imputation", "study", "voxel"), variance),
         "ml_beta": (("coefficient", "voxel"), smoothed_array[:-1]),
         "ml_tau2": (("voxel",), smoothed_array[-1])},
        coords={"imputation": np.arange(imputations), "coefficient": ["intercept", *regressors],
                **{key: value for key, value in selected.coords.items() if key != "voxel"
                   and "voxel" not in value.dims and "study" in value.dims},
                **{key: value for key, value in selected.coords.items() if value.dims == ("voxel",)}},
        attrs={"type": "impute", "name": name, "imputations": int(imputations), "seed": int(seed),
               "where": where or "", "regressors": list(regressors), "mask": mask_name,
               "fwhm": fwhm, "studies": names, "design": design.tolist(),
               "studies_hash": maps.attrs.get("studies_hash", ""), "daskmeta_version": __version__},
    )
    return with_mask(result)


#: Permutations per graph task.
DEFAULT_PSI_BLOCK = 10
#: Maps of :func:`psi` pooled over imputations, in the order of :class:`~daskmeta.null.psi.PooledMaps`.
POOLED_MAPS = ("effect", "variance", "z", "tau2", "i2", "q")


def _observed_block(effect: np.ndarray, variance: np.ndarray) -> np.ndarray:
    pooled = pool_imputations(effect.astype(np.float64), variance.astype(np.float64))
    return np.stack(list(pooled))


def _tfce_map(z: np.ndarray, mask_name: str) -> np.ndarray:
    return tfce(z, load_mask(mask_name))


def _normal_p(z: np.ndarray) -> np.ndarray:
    """One-tailed p of z in its own direction, normal reference."""
    return norm.sf(np.abs(z))


def _nbytes(chunk: np.ndarray, *after: object) -> int:
    """The bytes of a chunk of the stack (``after``: tasks it waits for, see :func:`psi`)."""
    return int(chunk.nbytes)


def _null_chunk(stack_bytes: int, function, *args) -> np.ndarray:
    """``function(*args)``: one voxel chunk of a block of the null, after the whole stack of
    ``stack_bytes`` exists (:func:`psi`)."""
    return function(*args)


def _voxel_chunks(maps: xr.Dataset) -> tuple[int, ...]:
    """The voxel chunks of the selected study maps (:func:`~daskmeta.analyses.means.prepare_studies`)."""
    chunks = maps.effect_lower.chunks
    return (chunks[-1] if chunks is not None
            else da.core.normalize_chunks(VOXEL_CHUNK, (maps.sizes["voxel"],))[0])


def _null_maxima(blocks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(blocks, axis=1)


def psi(
    maps: xr.Dataset,
    imputations: int = DEFAULT_IMPUTATIONS,
    permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    where: str | None = None,
    studies: list[str] | None = None,
    regressors: list[str] | None = None,
    name: str = "psi",
    block_size: int = DEFAULT_PSI_BLOCK,
) -> xr.Dataset:
    """SDM-PSI: imputation, subject-image permutation, TFCE and family-wise error (lazy).

    Parameters
    ----------
    maps : xarray.Dataset
        Study maps with bounds and sample sizes (:func:`daskmeta.recreate`, the store).
    imputations, seed, where, studies
        As :func:`impute`; the same ``seed`` uses exactly the imputations it returns.
    permutations : int
        Permutations of the subject images (SDM-PSI's default 1000); 0 computes the observed
        maps only.
    regressors : list of str, optional
        Study columns of a linear model (docs/methods.md, section 14.5): the first is tested
        (its coefficient over its rescaled [0, 1] range), any others are covariates of no
        interest; the null permutes the reduced model's residuals between studies
        (Freedman-Lane), the same permutation for every imputation and voxel.
    name : str
        The analysis name (part of every permutation's seed).
    block_size : int
        Permutations per graph task; results do not depend on it.

    Returns
    -------
    xarray.Dataset
        Over ``voxel``: ``effect, variance, z`` (Rubin-pooled random-effects mean and its
        z), ``p`` (normal reference, one-tailed in the direction of z), ``tau2, i2, q``
        (pooled heterogeneity), ``tfce`` (signed), ``p_fwe_voxel`` and ``p_fwe_tfce``
        (family-wise, from the permutation maxima by sign); over ``randomization``:
        ``null_max_z, null_min_z, null_max_tfce, null_min_tfce``.

    Notes
    -----
    The imputed stack is chunked by voxels only (:func:`impute`: every imputation and study
    of a chunk, ``M x k x chunk`` float32, 39 MB for 50 imputations, 12 studies and 16384
    voxels; at most 64 MiB where the chunk can be cut to fit). Each block of permutations is
    one task per voxel chunk, which reads that chunk only and returns the block's z maps
    over it ((P, chunk) float64), and one task that joins them and takes the maxima of z and
    TFCE (TFCE needs each permutation's whole map: (P, V) float64, 14 MB for a block of 10
    on the grey-matter mask). The null starts once the whole stack and the observed maps
    exist. No task holds the whole stack: a worker holds the chunks placed on it (the stack
    divided among the workers; a task it steals to balance the load fetches a copy of one
    chunk), and a null task adds its chunk, the studies' whole-mask subject noise (built once
    per process, at most 2 GiB: :mod:`daskmeta.null.psi`) and per-chunk buffers; the maps of
    at most a few blocks wait for their TFCE. Results do not depend on the chunks
    (docs/methods.md, section 14.3; benchmarks/README.md, SDM-PSI).

    References
    ----------
    Albajes-Eizagirre A et al. (2019). NeuroImage 186:174.
    Smith SM, Nichols TE (2009). NeuroImage 44:83.
    """
    if permutations < 0 or block_size < 1:
        raise ValueError(f"'permutations' must be >= 0 and 'block_size' >= 1; got "
                         f"{permutations} and {block_size}")
    regressors = list(regressors or [])
    imputed = impute(maps, imputations, seed, where, studies, regressors, name)
    mask_name = imputed.attrs["mask"]
    n_voxels = imputed.sizes["voxel"]
    effect = imputed.effect.data.rechunk({0: -1, 1: -1})  # as impute returns it
    variance = imputed.variance.data.rechunk({0: -1, 1: -1})
    design = np.asarray(imputed.attrs["design"], dtype=np.float64)
    if regressors:
        a, c = variance_model(*sizes_of(selected_table(maps, imputed), name))
        if len(a) <= design.shape[1]:
            raise ValueError(f"analysis {name!r}: a linear model with {len(regressors)} regressor(s) "
                             f"needs more than {design.shape[1]} studies; {len(a)} are selected")
        pooled = da.map_blocks(observed_model, effect, a, c, design, drop_axis=0,
                               chunks=((len(POOLED_MAPS),), effect.chunks[2]), dtype=np.float64)
    else:
        pooled = da.map_blocks(_observed_block, effect, variance, drop_axis=0,
                               chunks=((len(POOLED_MAPS),), effect.chunks[2]), dtype=np.float64)
    z = pooled[POOLED_MAPS.index("z")]
    z_whole = z.rechunk(n_voxels).to_delayed().ravel()[0]
    tfce_values = da.from_delayed(dask.delayed(_tfce_map, pure=True)(z_whole, mask_name),
                                  (n_voxels,), np.float64).rechunk(z.chunks)
    data = {key: (("voxel",), pooled[n]) for n, key in enumerate(POOLED_MAPS)}
    data["p"] = (("voxel",), da.map_blocks(_normal_p, z, dtype=np.float64))
    data["tfce"] = (("voxel",), tfce_values)
    if permutations:
        if not regressors:
            n1, n2 = sizes_of(selected_table(maps, imputed), name)
            sizes = [(int(x), int(y) if np.isfinite(y) else 0) for x, y in zip(n1, n2, strict=True)]
            names = [str(s) for s in imputed.study.values]
        # each voxel chunk of the stack and its first voxel. The null's tasks wait for the whole
        # stack and the observed maps (a task of each chunk's size, computed where it lies):
        # started on the first chunks, a worker would run every block of them before the others
        # were assembled, and their z maps would wait for each block's TFCE; and the observed
        # maps' float64 temporaries would come on top of the null's subject noise
        pieces = list(zip(effect.to_delayed(optimize_graph=False).ravel(),
                          np.cumsum((0, *effect.chunks[2]))[:-1].tolist(), strict=True))
        observed = pooled.to_delayed(optimize_graph=False).ravel()
        stack = dask.delayed(sum, pure=True)([dask.delayed(_nbytes, pure=True)(piece, done)
                                              for (piece, _), done in zip(pieces, observed, strict=True)])
        task = dask.delayed(_null_chunk, pure=True)
        blocks = []
        for start, stop in block_bounds(permutations, block_size):
            if regressors:
                z_chunks = [task(stack, permuted_model_z, piece, a, c, design, seed, name, start, stop)
                            for piece, _ in pieces]
            else:
                z_chunks = [task(stack, psi_z_chunk, piece, sizes, names, seed, name, start, stop, mask_name,
                                 begin)
                            for piece, begin in pieces]
            blocks.append(dask.delayed(chunked_extremes, pure=True)(z_chunks, mask_name))
        maxima = da.from_delayed(dask.delayed(_null_maxima, pure=True)(blocks), (4, permutations),
                                 np.float64)
        for row, key in enumerate(("null_max_z", "null_min_z", "null_max_tfce", "null_min_tfce")):
            data[key] = (("randomization",), maxima[row])
        data["p_fwe_voxel"] = (("voxel",), da.map_blocks(p_fwe, z, maxima[0], maxima[1], dtype=np.float64))
        data["p_fwe_tfce"] = (("voxel",), da.map_blocks(p_fwe, tfce_values, maxima[2], maxima[3],
                                                       dtype=np.float64))
    else:
        nothing = da.full((n_voxels,), np.nan, chunks=z.chunks)
        data["p_fwe_voxel"] = data["p_fwe_tfce"] = (("voxel",), nothing)
    chunks = _voxel_chunks(maps)
    if chunks != z.chunks[0]:  # the stack's chunks differ from the maps' (see stack_chunks)
        data = {key: (dims, value.rechunk(chunks) if dims == ("voxel",) else value)
                for key, (dims, value) in data.items()}
    coords = {key: value for key, value in imputed.coords.items()
              if key not in ("imputation", "coefficient", "study") and "study" not in value.dims}
    result = xr.Dataset(data, coords=coords)
    result.attrs = {
        "type": "psi", "name": name, "n_studies": int(imputed.sizes["study"]),
        "studies": [str(s) for s in imputed.study.values], "where": where or "",
        "imputations": int(imputations), "permutations": int(permutations), "seed": int(seed),
        "block_size": int(block_size), "mask": mask_name, "fwhm": imputed.attrs["fwhm"],
        "regressors": regressors, "design": imputed.attrs["design"],
        "model": "linear" if regressors else "mean",
        "tfce": {"E": EXTENT_EXPONENT, "H": HEIGHT_EXPONENT, "dh": LEVEL_STEP},
        "subject_fwhm": SUBJECT_FWHM,
        "studies_hash": maps.attrs.get("studies_hash", ""), "daskmeta_version": __version__,
    }
    return with_mask(result)
