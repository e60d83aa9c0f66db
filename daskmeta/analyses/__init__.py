"""Map-level analyses, each returning a lazy ``xarray.Dataset``: recreation of the study maps,
the random-effects mean, the leave-one-out jackknife, linear models (meta-regression and group
comparison), the multimodal overlap and sensitivity sweeps. They compose the kernels of
:mod:`daskmeta.stats` with the null graphs of :mod:`daskmeta.null`; nothing is computed until a
result is written or computed."""
