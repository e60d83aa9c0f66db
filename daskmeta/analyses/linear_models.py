"""Linear models of study maps: meta-regression and group comparison (docs/methods.md, section 8).

Both are SDM's ``lm``: a random-effects weighted linear model per voxel on ``[1, x]`` with
``x`` a covariate rescaled to [0, 1] (meta-regression) or a 0/1 group indicator
(comparison), judged against a randomization null that relocates each study's map while
its covariate stays with it (by default the permutations of :func:`daskmeta.mean`, fitted by
a Numba kernel). Outputs follow SDM: ``0`` (prediction at the minimum / group
A), ``1`` (at the maximum / group B) and ``1m0`` (their difference, the slope).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from daskmeta import __version__
from daskmeta.analyses.means import prepare_studies, sample_sizes, study_table, with_mask
from daskmeta.errors import plain
from daskmeta.model.studyset import query_studies
from daskmeta.null.engines import DEFAULT_ENGINE, Engine, check_engine, null_blocks
from daskmeta.null.randomization import DEFAULT_BLOCK, tree_sum
from daskmeta.stats.null import N_HIST
from daskmeta.stats.pvalues import p_from_histogram
from daskmeta.stats.regression import (
    SDM_CONTRASTS,
    linear_contrasts,
    meta_regression,
    rescale,
)

#: Variables of the observed fit, in the order :func:`_fit` returns them.
FITTED = ("effect_0", "z_0", "effect_1", "z_1", "slope", "z_slope", "tau2", "q_e")


def _fit(effect: np.ndarray, variance: np.ndarray, design: np.ndarray) -> tuple[np.ndarray, ...]:
    result = meta_regression(effect, variance, design, axis=-1)
    contrasts = linear_contrasts(result)
    return (contrasts["0"].estimate, contrasts["0"].z, contrasts["1"].estimate, contrasts["1"].z,
            contrasts["1m0"].estimate, contrasts["1m0"].z, result.tau2, result.q_e)


def _regressor(maps: xr.Dataset, column: str, name: str) -> tuple[np.ndarray, list[str]]:
    """The covariate of the selected studies and the names of studies that lack it."""
    table = study_table(maps)
    if column not in table:
        raise ValueError(f"analysis {name!r}: no study column {column!r}; columns: {list(table.columns)}")
    values = pd.to_numeric(table[column], errors="coerce")
    bad = table[column].notna() & (table[column].astype(str).str.strip() != "") & values.isna()
    if bad.any():
        raise ValueError(f"analysis {name!r}: column {column!r} is not numeric "
                         f"(study {plain(table['study'][bad].iloc[0])!r})")
    return values.to_numpy(dtype=np.float64), table["study"][values.isna()].tolist()


def linear_model(
    maps: xr.Dataset,
    regressor: str | None = None,
    groups: tuple[str, str] | None = None,
    where: str | None = None,
    studies: list[str] | None = None,
    permutations: int = 50,
    seed: int = 0,
    name: str = "linear_model",
    block_size: int = DEFAULT_BLOCK,
    check_p: float | None = 0.005,
    engine: Engine = DEFAULT_ENGINE,
) -> xr.Dataset:
    """Meta-regression on a study covariate, or comparison of two groups of studies (lazy).

    Parameters
    ----------
    maps : xarray.Dataset
        Study maps (``effect``, ``variance``; study-table columns as coordinates).
    regressor : str, optional
        A numeric study column: meta-regression. Studies missing it are dropped and listed
        in ``attrs['dropped']``.
    groups : (str, str), optional
        Two query expressions selecting groups A and B: comparison (``1m0`` = B - A).
    where, studies
        Restrict the studies first, as :func:`daskmeta.mean`.
    permutations, seed, name, block_size
        The randomization null, as :func:`daskmeta.mean`.
    check_p : float or None
        Meta-regression only: SDM's reporting check. ``p`` keeps the slope's p only where
        the slope and at least one extreme (``0`` or ``1``) are significant at ``check_p``
        in the same direction, 1 elsewhere (``p_slope`` keeps the raw p).
    engine : {"permutation", "reference"}
        The null's engine (:mod:`daskmeta.null.engines`). With the same ``seed`` and ``name``
        as :func:`daskmeta.mean`, every randomization relocates the studies as the mean's
        does; each study keeps its covariate (``"permutation"``: fitted by the Numba kernel of
        :func:`~daskmeta.stats.permutation.regression_permutation_block`, designs ``[1, x]``).

    Returns
    -------
    xarray.Dataset
        Over ``voxel``: ``z`` and ``p`` (the slope / difference, ready for
        :func:`daskmeta.inference.thresholding`), ``p_slope``, ``slope``, ``effect_0``, ``z_0``, ``p_0``,
        ``effect_1``, ``z_1``, ``p_1``, ``tau2``, ``q_e``; ``null_hist`` (contrast, bin).

    References
    ----------
    Radua J et al. (2012). Eur Psychiatry 27:605; SDM manual (linear models).
    """
    if (regressor is None) == (groups is None):
        raise ValueError(f"analysis {name!r}: give either a regressor or two groups")
    base = prepare_studies(maps, where, studies, name, minimum=3)
    dropped: list[str] = []
    if regressor is not None:
        values, dropped = _regressor(base, regressor, name)
        keep = [s for s in base.study.values if s not in dropped]
        selected = prepare_studies(base, studies=keep, name=name, minimum=3)
        original = values[~np.isnan(values)]
        x01, low, high = rescale(original)
        kind = "regression"
    else:
        table = study_table(base)
        members = []
        for label, query in zip("AB", groups, strict=True):
            chosen = query_studies(table, query, f"analysis {name!r}, group {label}: ")
            members.append(chosen["study"].tolist())
        both = sorted(set(members[0]) & set(members[1]))
        if both:
            raise ValueError(f"analysis {name!r}: studies in both groups: {both}")
        if min(len(m) for m in members) < 2:
            raise ValueError(f"analysis {name!r}: each group needs at least 2 studies; "
                             f"got {len(members[0])} and {len(members[1])}")
        selected = prepare_studies(base, studies=members[0] + members[1], name=name, minimum=4)
        x01 = np.isin(selected.study.values, members[1]).astype(np.float64)  # in table order
        low, high = 0.0, 1.0
        original = x01
        kind = "compare"
    design = np.column_stack([np.ones_like(x01), x01])
    outputs = xr.apply_ufunc(
        _fit, selected.effect, selected.variance, kwargs={"design": design},
        input_core_dims=[["study"], ["study"]], output_core_dims=[[] for _ in FITTED],
        dask="parallelized", output_dtypes=[np.float64] * len(FITTED),
    )
    fitted = xr.Dataset(dict(zip(FITTED, outputs, strict=True)))
    k = selected.sizes["study"]
    engine = check_engine(engine)
    blocks = null_blocks("regression", selected.effect.data, selected.variance.data, permutations,
                         seed, name, block_size, engine, sample_sizes(selected), design)
    hist = xr.DataArray(da.from_delayed(tree_sum(blocks), (len(SDM_CONTRASTS), N_HIST), np.int64),
                        dims=("contrast", "bin"), coords={"contrast": list(SDM_CONTRASTS)})
    p = {c: xr.apply_ufunc(p_from_histogram, fitted[z], hist.sel(contrast=c), input_core_dims=[[], ["bin"]],
                           dask="parallelized", output_dtypes=[np.float64])
         for c, z in (("0", "z_0"), ("1", "z_1"), ("1m0", "z_slope"))}
    checked = p["1m0"]
    if kind == "regression" and check_p is not None:
        sign = np.sign(fitted.z_slope)
        extreme = (((p["0"] < check_p) & (np.sign(fitted.z_0) == sign))
                   | ((p["1"] < check_p) & (np.sign(fitted.z_1) == sign)))
        checked = xr.where(extreme, p["1m0"], 1.0)
    result = fitted.assign(z=fitted.z_slope, p=checked, p_slope=p["1m0"], p_0=p["0"], p_1=p["1"],
                           null_hist=hist)
    result.attrs = {
        "type": kind, "name": name, "regressor": regressor or "", "groups": list(groups or []),
        "low": float(low), "high": float(high), "dropped": dropped, "n_studies": int(k),
        "studies": [str(s) for s in selected.study.values], "covariate": [float(v) for v in original],
        "where": where or "", "permutations": int(permutations), "seed": int(seed),
        "null_engine": engine,
        "check_p": float(check_p) if check_p is not None and kind == "regression" else -1.0,
        "mask": maps.attrs["mask"], "studies_hash": maps.attrs.get("studies_hash", ""),
        "daskmeta_version": __version__,
    }
    return with_mask(result)


def compare(
    maps: xr.Dataset,
    groups: tuple[str, str],
    where: str | None = None,
    studies: list[str] | None = None,
    permutations: int = 50,
    seed: int = 0,
    name: str = "compare",
    block_size: int = DEFAULT_BLOCK,
    engine: Engine = DEFAULT_ENGINE,
) -> xr.Dataset:
    """Comparison of two groups of studies: the linear model with a 0/1 regressor (lazy).

    ``z``/``p`` test group B minus group A (contrast ``1m0``); ``effect_0``/``effect_1`` are
    the groups' means (docs/methods.md, section 8). Parameters as :func:`linear_model`, whose
    ``groups`` this is.
    """
    return linear_model(maps, groups=groups, where=where, studies=studies,
                        permutations=permutations, seed=seed, name=name, block_size=block_size,
                        engine=engine)
