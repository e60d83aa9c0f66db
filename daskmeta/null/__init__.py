"""Randomization nulls as Dask graphs: the engines (:mod:`daskmeta.null.engines`), the mean's
voxel and cluster-extent nulls (:mod:`daskmeta.null.randomization`,
:mod:`daskmeta.null.cluster_extent`) and their addressable seeds (:mod:`daskmeta.null.seeds`).
Blocks of randomizations run the pure kernels of :mod:`daskmeta.stats` (docs/methods.md,
section 5)."""
