"""Egger's test and funnel plots at the peaks of an analysis, written to its folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from daskmeta.inference.bias import Funnel, egger_at_peaks
from daskmeta.report.export import write_table
from daskmeta.report.plots import funnel_plot, funnel_png, write_atomically


def publication_bias(
    maps: xr.Dataset,
    clusters: pd.DataFrame,
    studies: Sequence[str],
    out_dir: str | os.PathLike[str],
    analysis: str = "",
    client: Any = None,
) -> pd.DataFrame:
    """:func:`~daskmeta.inference.bias.egger_at_peaks`, its funnel plots and ``egger.tsv``.

    Parameters
    ----------
    maps, clusters, studies, analysis
        As :func:`~daskmeta.inference.bias.egger_at_peaks`.
    out_dir : str or os.PathLike
        Folder of ``egger.tsv`` and ``funnel_cluster<N>.png``; created if missing.
    client : distributed.Client, optional
        Render the funnel plots on its workers (one task per plot, a few tenths of a second
        each); the PNG bytes come back and are written here, so ``out_dir`` need not be
        visible to the workers. Without it they are drawn in this process. The files are the
        same either way.

    Returns
    -------
    pandas.DataFrame
        The table of :func:`~daskmeta.inference.bias.egger_at_peaks`, also written to
        ``out_dir / 'egger.tsv'`` (when it has no rows too).
    """
    out_dir = Path(out_dir)
    table, funnels = egger_at_peaks(maps, clusters, studies, analysis)
    if client is not None and len(funnels) > 1:
        futures = client.map(_funnel_png, funnels, pure=False)
        for funnel, png in zip(funnels, client.gather(futures), strict=True):
            write_atomically(png, out_dir / f"funnel_cluster{funnel.cluster}.png")
    else:
        for funnel in funnels:
            funnel_plot(funnel.effect, funnel.variance, funnel.pooled_effect,
                        out_dir / f"funnel_cluster{funnel.cluster}.png", title=funnel.title,
                        labels=funnel.labels)
    write_table(table, out_dir / "egger.tsv")
    return table


def _funnel_png(funnel: Funnel) -> bytes:
    return funnel_png(funnel.effect, funnel.variance, funnel.pooled_effect, title=funnel.title,
                      labels=funnel.labels)
