"""daskmeta: seed-based d mapping (SDM) meta-analysis of neuroimaging studies on Dask.

The public API is imported lazily so that ``import daskmeta`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_studies": "daskmeta.io",
    "StudySet": "daskmeta.model.studyset",
    "recreate": "daskmeta.analyses.recreate",
    "to_nifti": "daskmeta.io.nifti",
    "load_mask": "daskmeta.model.grid",
    "read_group": "daskmeta.io.store",
    "write_group": "daskmeta.io.store",
    "simulate_studies": "daskmeta.testing.simulate",
    "hedges_g": "daskmeta.stats.effect_size",
    "threshold": "daskmeta.inference.thresholding",
    "mean": "daskmeta.analyses.means",
    "jackknife": "daskmeta.analyses.leave_one_out",
    "linear_model": "daskmeta.analyses.linear_models",
    "multimodal": "daskmeta.analyses.overlap",
    "extract": "daskmeta.inference.bias",
    "publication_bias": "daskmeta.report.publication_bias",
    "egger_test": "daskmeta.stats.egger",
    "meta_regression": "daskmeta.stats.regression",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'daskmeta' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
