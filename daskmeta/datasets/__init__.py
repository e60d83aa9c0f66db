"""Example data shipped with daskmeta, readable from any working directory.

``clbp/`` is the reference example: the 24 resting-state experiments (12 ReHo, 12 ALFF) of a
published meta-analysis of chronic low back pain, in SDM's folder format, with their real
sample sizes and covariates and **simulated** peaks (see ``clbp/README.md``), and the
configuration of the paper's analyses (``clbp/analysis.yaml``). ``clbp_studies.tsv`` is the
full study table of that meta-analysis, excluded rows included.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["clbp_config", "clbp_folder", "clbp_table_path"]


def _path(name: str) -> Path:
    return Path(str(resources.files(__name__).joinpath(name)))


def clbp_folder() -> Path:
    """The SDM folder of the CLBP example (``sdm_table.txt`` and one peak file per study)."""
    return _path("clbp")


def clbp_config() -> Path:
    """The CLBP example's configuration (its ``studies`` path is relative to a repository clone)."""
    return _path("clbp") / "analysis.yaml"


def clbp_table_path() -> Path:
    """The full study table of the CLBP meta-analysis (``included`` says which rows count)."""
    return _path("clbp_studies.tsv")
