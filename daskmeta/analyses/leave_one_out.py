"""Leave-one-out jackknife of a mean analysis as one graph (docs/methods.md, section 7).

All k leave-one-out analyses share one graph with a leading ``left_out`` dimension: the
observed runs come from :func:`daskmeta.stats.jackknife.leave_one_out` per voxel chunk,
and one randomization null per run from blocks of relocations shared by all runs: with the
default ``"permutation"`` engine, the permutations of :func:`daskmeta.mean` (same seeds, same
relocations) pooled k times by a Numba kernel; with ``"reference"``, NumPy draws.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from daskmeta import __version__
from daskmeta.analyses.means import POOLED, prepare_studies, sample_sizes, with_mask
from daskmeta.null.engines import DEFAULT_ENGINE, Engine, check_engine, null_blocks
from daskmeta.null.randomization import DEFAULT_BLOCK, tree_sum
from daskmeta.stats.jackknife import leave_one_out
from daskmeta.stats.null import N_HIST
from daskmeta.stats.pvalues import p_from_histogram


def _runs(effect: np.ndarray, variance: np.ndarray) -> tuple[np.ndarray, ...]:
    # apply_ufunc puts the study core dimension last; outputs put left_out last too
    result = leave_one_out(effect, variance, axis=-1)
    return tuple(np.moveaxis(field, 0, -1) for field in result)


def _p_rows(z: np.ndarray, hist: np.ndarray) -> np.ndarray:
    return np.stack([p_from_histogram(z[..., j], hist[j]) for j in range(hist.shape[0])], axis=-1)


def jackknife(
    maps: xr.Dataset,
    where: str | None = None,
    studies: list[str] | None = None,
    permutations: int = 50,
    seed: int = 0,
    name: str = "jackknife",
    block_size: int = DEFAULT_BLOCK,
    engine: Engine = DEFAULT_ENGINE,
) -> xr.Dataset:
    """All leave-one-out random-effects means of the selected studies (lazy).

    Parameters
    ----------
    maps, where, studies, permutations, seed, block_size
        As :func:`daskmeta.mean`; each run is judged against its own randomization null
        (``permutations`` relocations shared by all runs).
    name : str
        Seeds the null (randomization ``b`` draws from ``SeedSequence(seed,
        spawn_key=(crc32(name), b))``).
    engine : {"permutation", "reference"}
        The null's engine (:mod:`daskmeta.null.engines`). With the same ``seed`` and
        ``name`` as :func:`daskmeta.mean`, every randomization relocates the studies as the
        mean's does; each is pooled k times (``"permutation"``: by the Numba kernel of
        :func:`~daskmeta.stats.permutation.jackknife_permutation_block`).

    Returns
    -------
    xarray.Dataset
        ``effect, variance, z, p, tau2, q, i2, p_q, q_z`` with dims ``(left_out, voxel)``
        (``left_out`` labelled by the study left out) and ``null_hist`` ``(left_out, bin)``.

    References
    ----------
    Radua J, Mataix-Cols D (2009). Br J Psychiatry 195:393.
    """
    selected = prepare_studies(maps, where, studies, name, minimum=3)
    k = selected.sizes["study"]
    outputs = xr.apply_ufunc(
        _runs, selected.effect, selected.variance,
        input_core_dims=[["study"], ["study"]], output_core_dims=[["left_out"]] * len(POOLED),
        dask="parallelized", output_dtypes=[np.float64] * len(POOLED),
        dask_gufunc_kwargs={"output_sizes": {"left_out": k}},
    )
    runs = xr.Dataset(dict(zip(POOLED, outputs, strict=True))).transpose("left_out", "voxel")
    engine = check_engine(engine)
    blocks = null_blocks("jackknife", selected.effect.data, selected.variance.data, permutations,
                         seed, name, block_size, engine, sample_sizes(selected))
    hist = xr.DataArray(da.from_delayed(tree_sum(blocks), (k, N_HIST), np.int64), dims=("left_out", "bin"))
    p = xr.apply_ufunc(
        _p_rows, runs.z.transpose("voxel", "left_out"), hist,
        input_core_dims=[["left_out"], ["left_out", "bin"]], output_core_dims=[["left_out"]],
        dask="parallelized", output_dtypes=[np.float64],
    ).transpose("left_out", "voxel")
    result = runs.assign(p=p, null_hist=hist).assign_coords(left_out=selected.study.values)
    result.attrs = {
        "type": "jackknife", "name": name, "n_studies": int(k),
        "studies": [str(s) for s in selected.study.values], "where": where or "",
        "permutations": int(permutations), "seed": int(seed), "mask": maps.attrs["mask"],
        "null_engine": engine,
        "studies_hash": maps.attrs.get("studies_hash", ""), "daskmeta_version": __version__,
    }
    return with_mask(result)


