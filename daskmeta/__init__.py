"""daskmeta: seed-based d mapping (SDM) meta-analysis of neuroimaging studies on Dask.

The public API is imported lazily so that ``import daskmeta`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_studies": "daskmeta.io",
    "StudySet": "daskmeta.studyset",
    "recreate": "daskmeta.preprocess",
    "to_nifti": "daskmeta.nifti",
    "load_mask": "daskmeta.grid",
    "read_group": "daskmeta.store",
    "write_group": "daskmeta.store",
    "simulate_studies": "daskmeta.simulate",
    "hedges_g": "daskmeta.effect_size",
    "threshold": "daskmeta.thresholding",
    "mean": "daskmeta.analysis",
    "jackknife": "daskmeta.leave_one_out",
    "linear_model": "daskmeta.linear_models",
    "multimodal": "daskmeta.overlap",
    "extract": "daskmeta.bias",
    "publication_bias": "daskmeta.bias",
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
