"""Statistics kernels: pure NumPy/SciPy functions over arrays with an explicit axis.

Nothing in this package imports Dask or xarray or reads files; the graph layer maps these
kernels over chunks (spec sections 4 and 5). The fast null's Numba kernels
(``_null_kernel``) are imported on first use, never by ``import daskmeta.stats``.
"""

from daskmeta.stats.fast_null import (
    StudyTables,
    fast_randomization_block,
    study_tables,
    variance_model,
)
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

__all__ = [
    "BINS",
    "N_HIST",
    "Heterogeneity",
    "NullSummary",
    "RandomEffects",
    "StudyTables",
    "WeightedSums",
    "cluster_p_fwe",
    "combine",
    "dersimonian_laird",
    "dl_from_sums",
    "fast_randomization_block",
    "heterogeneity_z",
    "histogram",
    "p_from_histogram",
    "p_fwe",
    "pool_with_tau2",
    "randomization_block",
    "relocate",
    "study_tables",
    "variance_model",
    "weighted_sums",
    "z_threshold_for_p",
]
