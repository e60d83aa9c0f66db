"""Statistics kernels: pure NumPy/SciPy functions over arrays with an explicit axis.

Nothing in this package imports Dask or xarray or reads files (tests/test_layers.py checks
it); the graph layers (:mod:`daskmeta.null`, :mod:`daskmeta.analyses`) map these kernels over
chunks (docs/methods.md, sections 4 and 5). The Numba kernels (the ``*_jit`` modules) are
imported on first use, never by ``import daskmeta.stats``.
"""

from daskmeta.stats.null import (
    BINS,
    N_HIST,
    NullSummary,
    combine,
    histogram,
    randomization_block,
    relocate,
)
from daskmeta.stats.pvalues import cluster_p_fwe, p_from_histogram, p_fwe, z_threshold_for_p
from daskmeta.stats.random_effects import (
    Heterogeneity,
    RandomEffects,
    WeightedSums,
    dersimonian_laird,
    dl_from_sums,
    heterogeneity_z,
    pool_with_tau2,
    weighted_sums,
)
from daskmeta.stats.sdm_model import pooled_z, validated_model, variance_model

__all__ = [
    "BINS",
    "N_HIST",
    "Heterogeneity",
    "NullSummary",
    "RandomEffects",
    "WeightedSums",
    "cluster_p_fwe",
    "combine",
    "dersimonian_laird",
    "dl_from_sums",
    "heterogeneity_z",
    "histogram",
    "p_from_histogram",
    "p_fwe",
    "pool_with_tau2",
    "pooled_z",
    "randomization_block",
    "relocate",
    "validated_model",
    "variance_model",
    "weighted_sums",
    "z_threshold_for_p",
]
