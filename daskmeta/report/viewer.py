"""The data of the brain viewer embedded in each ``report.html``.

The viewer (``assets/viewer.js``) draws three orthogonal slices of a z map over a
background on ``<canvas>`` elements, from volumes embedded in the page as base64 text of
gzip-compressed little-endian arrays (decoded in the browser with ``DecompressionStream``):
nothing is fetched, so the report opens from the file system on a machine without
internet. The background is a T1-like image made from the ICBM152 2009 tissue templates
already on the grid (white matter bright, grey matter grey, CSF dark).

Volumes are C-ordered ``(91, 109, 91)`` arrays of the MNI 2 mm grid
(:data:`daskmeta.model.grid.GRID_AFFINE`): z as int16 hundredths (``-32768`` outside the
mask), signed cluster labels as int16, the background as uint8.
"""

from __future__ import annotations

import base64
import gzip
import json
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from daskmeta.model.grid import GRID_AFFINE, GRID_SHAPE, load_mask, templates

#: z values are stored as int16 hundredths; this marks voxels outside the mask.
OUTSIDE = -32768
Z_SCALE = 100.0


def _encode(volume: np.ndarray, dtype: str) -> str:
    data = np.ascontiguousarray(volume, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return base64.b64encode(gzip.compress(data, compresslevel=9, mtime=0)).decode("ascii")


def background() -> np.ndarray:
    """A T1-like uint8 background volume from the tissue templates."""
    maps = templates()
    t1 = 0.55 * maps["gray"] + 1.0 * maps["white"] + 0.12 * maps["csf"]
    return np.clip(np.round(230 * t1 / max(float(t1.max()), 1e-6)), 0, 255).astype(np.uint8)


def viewer_data(z: ArrayLike, labels: ArrayLike | None, mask: str, peaks: list[dict[str, Any]],
                title: str = "SDM-Z") -> dict[str, Any]:
    """What ``viewer.js`` reads: the volumes, the grid and the peaks to jump to.

    Parameters
    ----------
    z : array_like, shape (n_voxels,)
        The voxel vector of the map (SDM-Z) in the mask ``mask``.
    labels : array_like, shape (n_voxels,), optional
        Signed cluster labels (+id positive, -id negative, 0 none); None: no clusters.
    mask : str
        The mask of the voxel vectors.
    peaks : list of dict
        ``{"cluster", "direction", "peak_type", "x", "y", "z", "sdm_z", "region"}`` rows.
    """
    grid_mask = load_mask(mask)
    z = np.nan_to_num(np.asarray(z, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    stored = np.clip(np.round(z * Z_SCALE), -32767, 32767)
    z_volume = grid_mask.to_volume(stored, fill=OUTSIDE)
    labels = np.zeros(grid_mask.n_voxels) if labels is None else np.asarray(labels)
    label_volume = grid_mask.to_volume(labels.astype(np.int16), fill=0)
    in_clusters = np.abs(z[labels != 0]) if np.any(labels != 0) else np.abs(z)
    vmax = float(np.max(in_clusters)) if in_clusters.size else 1.0
    return {
        "title": title,
        "shape": list(GRID_SHAPE),
        "origin": [float(v) for v in GRID_AFFINE[:3, 3]],
        "step": [float(GRID_AFFINE[n, n]) for n in range(3)],
        "scale": Z_SCALE, "outside": OUTSIDE,
        "vmax": round(vmax if vmax > 0 else 1.0, 3),
        "background": _encode(background(), "uint8"),
        "z": _encode(z_volume, "int16"),
        "labels": _encode(label_volume, "int16"),
        "peaks": peaks,
    }


def asset(name: str) -> str:
    """The text of ``daskmeta/report/assets/NAME`` (JavaScript and CSS of the reports)."""
    return resources.files("daskmeta.report").joinpath("assets", name).read_text(encoding="utf-8")


def viewer_html(data: dict[str, Any]) -> str:
    """The viewer's markup and its embedded data (the script comes with the page)."""
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return f"""<section id="viewer" class="viewer">
<div class="viewer-controls">
  <label><input type="radio" name="mode" value="thresholded" checked> thresholded (reported clusters)</label>
  <label><input type="radio" name="mode" value="unthresholded"> unthresholded</label>
  <label class="floor">hide |z| below <input type="range" id="floor" min="0" max="4" step="0.1" value="0">
    <output id="floor-value">0.0</output></label>
  <span id="cluster-buttons"></span>
</div>
<div class="viewer-slices">
  <figure><canvas id="view-sagittal" aria-label="sagittal slice"></canvas>
    <figcaption>sagittal</figcaption></figure>
  <figure><canvas id="view-coronal" aria-label="coronal slice"></canvas>
    <figcaption>coronal</figcaption></figure>
  <figure><canvas id="view-axial" aria-label="axial slice"></canvas>
    <figcaption>axial</figcaption></figure>
  <figure class="colorbar"><canvas id="view-colorbar" width="60" height="280"></canvas>
    <figcaption>SDM-Z</figcaption></figure>
</div>
<p id="viewer-info" class="viewer-info">Loading the viewer&hellip;</p>
<script type="application/json" id="viewer-data">{payload}</script>
</section>"""
