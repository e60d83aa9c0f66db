"""daskmeta: seed-based d mapping (SDM) meta-analysis of neuroimaging studies on Dask.

The map-level API lives here, imported lazily so that ``import daskmeta`` stays light: load
studies, recreate their maps, run analyses, threshold, extract, export. The array kernels stay
in their subpackage (:mod:`daskmeta.stats`, e.g. ``daskmeta.stats.egger.egger_test``), the
simulation helpers in :mod:`daskmeta.testing`, the example data in :mod:`daskmeta.datasets`;
docs/methods.md describes what every function computes.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    # studies and their maps
    "load_studies": "daskmeta.io",
    "StudySet": "daskmeta.model.studyset",
    "recreate": "daskmeta.analyses.recreate",
    "load_mask": "daskmeta.model.grid",
    # analyses (lazy xarray Datasets)
    "mean": "daskmeta.analyses.means",
    "jackknife": "daskmeta.analyses.leave_one_out",
    "linear_model": "daskmeta.analyses.linear_models",
    "compare": "daskmeta.analyses.linear_models",
    "multimodal": "daskmeta.analyses.overlap",
    "impute": "daskmeta.analyses.psi",
    "psi": "daskmeta.analyses.psi",
    # results
    "threshold": "daskmeta.inference.thresholding",
    "extract": "daskmeta.inference.bias",
    "egger_at_peaks": "daskmeta.inference.bias",
    "publication_bias": "daskmeta.report.publication_bias",
    # storage and export
    "read_group": "daskmeta.io.store",
    "write_group": "daskmeta.io.store",
    "to_nifti": "daskmeta.io.nifti",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'daskmeta' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
