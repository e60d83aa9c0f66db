"""The CLBP reference example: the packaged study table and its simulated peaks.

:func:`clbp_table` reads the 24 included experiments of ``daskmeta/datasets/clbp_studies.tsv``
(published sample sizes, thresholds and peak counts); :func:`write_clbp_example` simulates
their peaks around :data:`CLBP_EFFECTS` with seed :data:`CLBP_SEED` and writes the SDM folder
kept in ``examples/clbp``. The peaks are SIMULATED (model in :mod:`daskmeta.testing.simulate`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from daskmeta.datasets import clbp_table_path
from daskmeta.testing.simulate import TrueEffect, simulate_studies

#: Seed of the committed ``examples/clbp`` folder.
CLBP_SEED = 2024

#: Simulated truths of the CLBP example. ASSUMPTIONS, not findings: plausible locations for
#: resting-state differences in chronic low back pain, used only to make the example's
#: simulated peaks cluster somewhere. All three lie in the ``gray_matter`` mask.
CLBP_EFFECTS: tuple[TrueEffect, ...] = (
    TrueEffect(-2, 52, -4, sign=1, modality="ReHo", probability=0.5,
               name="mpfc_reho_increase"),        # AAL Frontal_Med_Orb_L
    TrueEffect(-4, -56, 30, sign=-1, modality="ALFF", probability=0.5,
               name="precuneus_alff_decrease"),   # AAL Precuneus_L, posterior cingulate
    TrueEffect(-38, -26, 56, sign=1, modality=None, probability=0.35,
               name="sensorimotor_increase"),     # AAL Postcentral_L, primary somatosensory
)


def clbp_table() -> pd.DataFrame:
    """The packaged CLBP study table (24 included experiments) ready for simulation.

    Keeps ``included == yes`` rows of ``daskmeta/datasets/clbp_studies.tsv`` and renames the
    covariates: ``age`` = patients' mean age (``age1``), ``duration`` = ``duration_months``,
    ``vas`` and ``modality``; ``threshold``, ``space`` and ``n_peaks`` steer the simulation.
    """
    source = clbp_table_path()
    with source.open("r", encoding="utf-8") as handle:
        raw = pd.read_csv(handle, sep="\t", na_values=["NA"], keep_default_na=False)
    raw = raw[raw["included"] == "yes"]
    table = raw.rename(columns={"age1": "age", "duration_months": "duration"})
    columns = ["study", "n1", "n2", "threshold", "space", "n_peaks",
               "age", "duration", "vas", "modality"]
    return table[columns].reset_index(drop=True)


def write_clbp_example(
    out_dir: str | os.PathLike, seed: int = CLBP_SEED, overwrite: bool = False
) -> Path:
    """Write the CLBP example folder: real study table, SIMULATED peaks.

    The 24 included experiments of :func:`clbp_table` (published sample sizes, thresholds
    and peak counts) with peaks simulated around :data:`CLBP_EFFECTS` (assumptions, not
    findings) by :func:`simulate_studies` with its defaults. ``examples/clbp`` holds this
    folder for ``seed=2024``; ``overwrite`` as in :func:`~daskmeta.io.sdm_writer.write_studyset`.
    """
    return simulate_studies(clbp_table(), list(CLBP_EFFECTS), out_dir, seed, overwrite=overwrite)
