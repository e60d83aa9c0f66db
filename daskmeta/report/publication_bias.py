"""Egger's test and funnel plots at the peaks of an analysis, written to its folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import xarray as xr

from daskmeta.inference.bias import egger_at_peaks
from daskmeta.report.export import write_table
from daskmeta.report.plots import funnel_plot


def publication_bias(
    maps: xr.Dataset,
    clusters: pd.DataFrame,
    studies: Sequence[str],
    out_dir: str | os.PathLike[str],
    analysis: str = "",
) -> pd.DataFrame:
    """:func:`~daskmeta.inference.bias.egger_at_peaks`, its funnel plots and ``egger.tsv``.

    Parameters
    ----------
    maps, clusters, studies, analysis
        As :func:`~daskmeta.inference.bias.egger_at_peaks`.
    out_dir : str or os.PathLike
        Folder of ``egger.tsv`` and ``funnel_cluster<N>.png``; created if missing.

    Returns
    -------
    pandas.DataFrame
        The table of :func:`~daskmeta.inference.bias.egger_at_peaks`, also written to
        ``out_dir / 'egger.tsv'`` (when it has no rows too).
    """
    out_dir = Path(out_dir)
    table, funnels = egger_at_peaks(maps, clusters, studies, analysis)
    for funnel in funnels:
        funnel_plot(funnel.effect, funnel.variance, funnel.pooled_effect,
                    out_dir / f"funnel_cluster{funnel.cluster}.png", title=funnel.title,
                    labels=funnel.labels)
    write_table(table, out_dir / "egger.tsv")
    return table
