"""Sensitivity sweeps: many variants of one mean analysis as one graph (``variant`` dim).

A variant is one combination of kernel (FWHM, anisotropy), thresholds (voxel p, peak
height, extent), seed and study subset (``where`` filters, leave-k-out, random
subsamples). Variant 0 is the reference analysis of the configuration. Work that variants
share is done once: study maps are recreated once per kernel, each (kernel, subset, seed)
is pooled and judged against its null once, and variants that differ only in thresholds
reuse those maps. Results go to ``STORE/sweeps/NAME`` with the variant table as
coordinates; each variant is written as soon as it is done, so an interrupted sweep
resumes with the variants still missing.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from daskmeta import __version__
from daskmeta.io.nifti import with_mask
from daskmeta.model.studyset import StudySet, query_studies

#: Threshold parameters (applied after pooling; variants differing only here share maps).
THRESHOLD_PARAMETERS = ("voxel_p", "peak_z", "extent")
#: Kernel parameters (each distinct pair is one recreation of the study maps).
KERNEL_PARAMETERS = ("fwhm", "anisotropy")
#: Stored maps of every variant.
SWEEP_MAPS = ("z", "p", "effect", "i2")


def study_subsets(studies: StudySet, where: str | None, spec: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """``(label, study names)`` of every study subset of a sweep; the first is all studies.

    ``spec`` keys: ``where`` (list of filters), ``leave_out`` (k: every leave-k-out subset),
    ``random`` (``n`` subsets of ``fraction`` of the studies, drawn with ``seed``).
    """
    base = query_studies(studies.studies, where, "sweep: ")["study"].tolist()
    subsets = [("all", base)]
    table = studies.studies[studies.studies["study"].isin(base)]
    for query in spec.get("where", []):
        chosen = query_studies(table, query, "sweep subset: ")["study"].tolist()
        subsets.append((f"where {query}", chosen))
    if spec.get("leave_out"):
        for left in itertools.combinations(base, int(spec["leave_out"])):
            subsets.append((f"without {'+'.join(left)}", [s for s in base if s not in left]))
    if spec.get("random"):
        options = spec["random"]
        rng = np.random.default_rng(int(options.get("seed", 0)))
        size = max(2, int(round(float(options.get("fraction", 0.8)) * len(base))))
        for n in range(int(options.get("n", 10))):
            chosen = sorted(rng.choice(base, size=size, replace=False).tolist(), key=base.index)
            subsets.append((f"random {n + 1}", chosen))
    for label, names in subsets:
        if len(names) < 2:
            raise ValueError(f"sweep subset {label!r} has {len(names)} studies; it needs at least 2")
    return subsets


def plan(studies: StudySet, sweep: dict[str, Any], preprocess: dict[str, Any],
         threshold: dict[str, Any]) -> pd.DataFrame:
    """The variant table: variant 0 is the reference, then the grid x subsets product.

    Columns: ``variant, fwhm, anisotropy, voxel_p, peak_z, extent, seed, subset, studies``
    (names joined by ``;``), ``reference``, ``n_studies`` and the keys of the work shared
    between variants (``kernel_key``, ``analysis_key``).
    """
    analysis = sweep.get("analysis", {})
    reference = {"fwhm": preprocess["fwhm"], "anisotropy": preprocess["anisotropy"],
                 "voxel_p": threshold["p"], "peak_z": threshold["peak_z"], "extent": threshold["extent"],
                 "seed": int(analysis.get("seed", 0))}
    subsets = study_subsets(studies, analysis.get("where"), sweep.get("subsets", {}))
    grid = sweep.get("grid", {})
    keys = list(reference)
    values = [grid.get("p" if key == "voxel_p" else key, [reference[key]]) for key in keys]
    rows = [{**reference, "subset": "all", "studies": subsets[0][1], "reference": True}]
    for combination in itertools.product(*values):
        for label, names in subsets:
            rows.append({**dict(zip(keys, combination, strict=True)), "subset": label,
                         "studies": names, "reference": False})
    table = pd.DataFrame(rows)
    table["n_studies"] = table["studies"].map(len)
    table["studies"] = table["studies"].map(";".join)
    table.insert(0, "variant", np.arange(len(table)))
    table["kernel_key"] = table[list(KERNEL_PARAMETERS)].astype(str).agg("|".join, axis=1)
    table["analysis_key"] = table[["kernel_key", "seed", "studies"]].astype(str).agg("|".join, axis=1)
    return table


def sweep_key(variants: pd.DataFrame, sweep: dict[str, Any], preprocess: dict[str, Any],
              studies_hash: str) -> str:
    """What a sweep's stored results depend on."""
    material = {"variants": variants.drop(columns=["variant"]).to_dict("list"),
                "analysis": sweep.get("analysis", {}), "mask": preprocess["mask"],
                "beta": preprocess.get("beta", 1.0), "studies_hash": studies_hash}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sweep_maps(studies: StudySet, variants: pd.DataFrame, sweep: dict[str, Any],
               preprocess: dict[str, Any], name: str) -> xr.Dataset:
    """Every variant's ``z, p, effect, i2`` as one lazy graph with dims ``(variant, voxel)``.

    One recreation per kernel, one pooled analysis with its null per (kernel, subset,
    seed); variants index into those (no work is repeated).
    """
    from daskmeta.analyses.means import mean
    from daskmeta.analyses.recreate import recreate

    analysis = sweep.get("analysis", {})
    kernels = {}
    for key, row in variants.drop_duplicates("kernel_key").set_index("kernel_key").iterrows():
        kernels[key] = recreate(studies, fwhm=float(row.fwhm), anisotropy=float(row.anisotropy),
                                mask=preprocess["mask"], beta=float(preprocess.get("beta", 1.0)))
    unique = variants.drop_duplicates("analysis_key").reset_index(drop=True)
    results = []
    for row in unique.itertuples():
        result = mean(kernels[row.kernel_key], studies=row.studies.split(";"),
                      permutations=int(analysis.get("permutations", 50)), seed=int(row.seed),
                      name=f"sweeps/{name}", block_size=int(analysis.get("block_size", 10)), voxel_p=None)
        results.append(result)
    index = variants["analysis_key"].map({key: n for n, key in enumerate(unique["analysis_key"])}).to_numpy()
    data = {}
    for variable in SWEEP_MAPS:
        stacked = da.stack([r[variable].data for r in results])[index]
        dtype = np.float64 if variable == "p" else np.float32
        data[variable] = (("variant", "voxel"), stacked.astype(dtype).rechunk({0: 1}))
    coords = {column: ("variant", variants[column].to_numpy())
              for column in variants.columns if column != "variant"}
    first = next(iter(kernels.values()))
    result = xr.Dataset(data, coords={"variant": variants["variant"].to_numpy(), **coords},
                        attrs={"type": "sweep", "name": name, "mask": preprocess["mask"],
                               "permutations": int(analysis.get("permutations", 50)),
                               "where": analysis.get("where") or "", "n_variants": len(variants),
                               "n_analyses": len(unique), "n_kernels": len(kernels),
                               "studies_hash": first.attrs["studies_hash"],
                               "daskmeta_version": __version__})
    return with_mask(result)


def run_sweep_to_store(maps: xr.Dataset, store: str | os.PathLike, group: str, key: str,
                       client: Any = None, force: bool = False) -> list[int]:
    """Write every variant not yet in ``store/group``; returns the variants computed now.

    Variants are written as they finish (one graph for all of them); the group lists the
    finished ones in ``attrs['variants_complete']`` and is marked complete after the last.
    """
    from daskmeta.io.store import (
        group_attrs,
        is_complete,
        mark_complete,
        region_write,
        start_group,
        update_attrs,
    )

    attrs = group_attrs(store, group) or {}
    same = attrs.get("sweep_key") == key and not force
    if same and is_complete(store, group):
        print(f"daskmeta: {group}: complete in {store} (not recomputed)", file=sys.stderr)
        return []
    done = set(attrs.get("variants_complete", [])) if same else set()
    if not same or not attrs:
        start_group(maps.assign_attrs(sweep_key=key, variants_complete=[]), store, group)
    pending = [int(v) for v in maps["variant"].values if int(v) not in done]
    if done:
        print(f"daskmeta: {group}: resuming, {len(done)} of {maps.sizes['variant']} variants "
              "already complete", file=sys.stderr)
    writes = [region_write(maps, store, group, "variant", v) for v in pending]
    print(f"daskmeta: {group}: {len(pending)} variant(s) as one graph", file=sys.stderr)
    if client is None:
        import dask

        dask.compute(*writes)
        done |= set(pending)
    else:
        from distributed import as_completed

        futures = client.compute(writes)
        variant_of = {future.key: v for future, v in zip(futures, pending, strict=True)}
        for count, future in enumerate(as_completed(futures), start=1):
            future.result()
            done.add(variant_of[future.key])
            update_attrs(store, group, variants_complete=sorted(done))
            print(f"\r    {count}/{len(pending)} variants written", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    update_attrs(store, group, variants_complete=sorted(done))
    mark_complete(store, group)
    return pending


