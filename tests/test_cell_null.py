"""The isotropic cluster-extent null cell by cell (docs/methods.md, section 5.4).

:func:`daskmeta.null.cells.relative_cells` stores the isotropic kernel once per place of a peak
within its coarse cell, by cell offset; :func:`daskmeta.null.cluster_extent.cluster_null_block`
runs the screen of cells and the certified decisions on those records. These tests hold the
records to the recreation's kernel (:func:`daskmeta.stats.peak_kernel.peak_kernels` with
``anisotropy=0``) and the null's cluster sizes and extremes to the fused z maps (bit for bit the
reference's) and to the span-layout null it replaced, including thresholds set exactly at
voxels' z values and blocks split anywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from daskmeta.model.grid import load_mask
from daskmeta.null import cells
from daskmeta.null.cluster_extent import (
    cluster_null_block,
    cluster_null_block_fused,
    cluster_null_block_spans,
    relocated_z,
)
from daskmeta.null.seeds import randomization_seeds
from daskmeta.stats.peak_kernel import peak_kernels
from daskmeta.stats.sdm_model import variance_model

MASK = "gray_matter"
FIELDS = ("max_cluster_pos", "max_cluster_neg", "max_z", "min_z")


@pytest.fixture(scope="module")
def mask():
    return load_mask(MASK)


@pytest.fixture(scope="module")
def clbp():
    """Peak effects and sample sizes of the reference example (24 CLBP studies, 190 peaks)."""
    from daskmeta.analyses.recreate import peak_effects
    from daskmeta.io import load_studies

    studies = load_studies("examples/clbp")
    return (peak_effects(studies).astype(np.float64), studies.studies["n1"].to_numpy(dtype=np.float64),
            studies.studies["n2"].to_numpy(dtype=np.float64))


def _expand(tables, base, group, n_cells, coarse):
    """Voxels and kernel values of a peak's entries (the places its records and the mask share)."""
    voxels, values = [], []
    record = np.asarray(tables.record)
    words = record.view(np.uint32)[:, 15]
    for m in range(int(tables.cell_first[group]), int(tables.cell_first[group + 1])):
        cell = int(tables.cell_at[base + int(tables.cell_id[m])])
        if cell == n_cells:
            continue
        bits = [b for b in range(27) if (int(words[m]) >> b) & 1 and coarse.voxel[cell, b] >= 0]
        voxels += [int(coarse.voxel[cell, b]) for b in bits]
        codes = [int(record[m, b]) for b in bits]
        values += [float(tables.levels[c]) for c in codes]
        if bits:
            assert min(int(record[m, b]) for b in range(27) if (int(words[m]) >> b) & 1) == \
                tables.cell_code[m]  # the entry's largest kernel, mask or not
    return np.asarray(voxels, np.int64), np.asarray(values)


def test_relative_cells_hold_the_isotropic_kernel(mask):
    """Every peak position's records give back the recreation's kernel over the mask, exactly."""
    tables, base = cells.relative_cells(MASK, 20.0)
    coarse = cells.coarse_cells(MASK)
    n_cells = coarse.voxel.shape[0]
    assert np.all(np.diff(tables.levels) < 0) and tables.levels[0] == 1.0
    ijk = mask.ijk
    border = [int(np.argmin(ijk[:, a])) for a in range(3)] + [int(np.argmax(ijk[:, a])) for a in range(3)]
    picks = border + list(np.random.default_rng(3).integers(0, mask.n_voxels, 10))
    kernels = peak_kernels(ijk[picks], ijk, 20.0, 0.0, None, None)
    seen_places = set()
    for row, voxel in enumerate(picks):
        group = int(coarse.bit[voxel])
        seen_places.add(group)
        got_voxels, got_values = _expand(tables, int(base[voxel]), group, n_cells, coarse)
        assert len(np.unique(got_voxels)) == len(got_voxels)  # one entry per cell
        order = np.argsort(got_voxels)
        expected = np.flatnonzero(kernels[row] > 0)
        np.testing.assert_array_equal(got_voxels[order], expected)
        np.testing.assert_array_equal(got_values[order], kernels[row, expected])  # bit for bit
    assert len(seen_places) > 5


def test_isotropic_cell_null_equals_the_references(clbp):
    """Screened, unscreened, span-layout and fused nulls: the same sizes and extremes."""
    peak_g, n1, n2 = clbp
    for thresholds in ((1.243, -0.981), (0.6, -0.5), (2.5, -2.0)):
        args = (peak_g, n1, n2, 2, "cells", 0, 25, MASK, 20.0, thresholds)
        got = cluster_null_block(*args)
        for expected in (cluster_null_block(*args, screen=False), cluster_null_block_spans(*args),
                         cluster_null_block_fused(*args)):
            for field in FIELDS:
                np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
        if thresholds[0] < 2.0:  # not a vacuous comparison: the randomizations differ
            assert len(np.unique(got.max_cluster_pos)) > 10


def test_isotropic_cell_null_at_thresholds_equal_to_voxel_z(clbp):
    """Thresholds set exactly at voxels' z values (and one ulp either side): those voxels are
    decided by the reference arithmetic, so the sizes and extremes stay the fused maps'."""
    peak_g, n1, n2 = clbp
    sampling, constant = variance_model(n1, n2)
    for b in (3, 11):
        sequence = randomization_seeds(5, "exact", b, b + 1, stream=1)[0]
        z = relocated_z(np.random.default_rng(sequence), peak_g, sampling, constant, MASK, 20.0)
        order = np.argsort(z)
        for rank in (0.995, 0.97, 0.9):
            high = float(z[order[int(rank * len(z))]])
            low = float(z[order[int((1 - rank) * len(z))]])
            for thresholds in ((high, low), (np.nextafter(high, np.inf), np.nextafter(low, -np.inf)),
                               (np.nextafter(high, -np.inf), np.nextafter(low, np.inf))):
                args = (peak_g, n1, n2, 5, "exact", b, b + 1, MASK, 20.0, thresholds)
                got, expected = cluster_null_block(*args), cluster_null_block_fused(*args)
                for field in FIELDS:
                    np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))


def test_isotropic_cell_null_blocks_split_anywhere(clbp):
    """Randomization ``b`` gives the same numbers whatever block it runs in."""
    peak_g, n1, n2 = clbp
    whole = cluster_null_block(peak_g, n1, n2, 8, "split", 0, 12, MASK, 20.0, (1.2, -1.0))
    parts = [cluster_null_block(peak_g, n1, n2, 8, "split", a, b, MASK, 20.0, (1.2, -1.0))
             for a, b in ((0, 5), (5, 6), (6, 12))]
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(whole, field),
                                      np.concatenate([getattr(p, field) for p in parts]))
