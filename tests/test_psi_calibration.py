"""SDM-PSI's family-wise error rate on null meta-analyses (docs/methods.md, section 14.3).

Null meta-analyses: studies that report peaks at random grey-matter places with random signs
(what false positives look like), no true effect anywhere. Each is run through the whole
procedure (recreation, imputation, subject-image permutations, TFCE); it counts as a family-wise
error when any voxel has ``p_fwe <= 0.05``. With 19 permutations the smallest p is exactly
1/20, so an exact test rejects 5 % of the time. The rate must be near 5 % and never far above.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_studyset
from scipy import stats

from daskmeta.analyses.psi import psi
from daskmeta.analyses.recreate import recreate

#: Null meta-analyses simulated, and the permutations of each.
N_NULL = 40
PERMUTATIONS = 19


@pytest.mark.slow
def test_family_wise_error_rate_on_null_meta_analyses():
    errors = {"tfce": 0, "voxel": 0}
    smallest = []
    for replicate in range(N_NULL):
        studies = random_studyset(n_studies=6, peaks_per_study=3, seed=1000 + replicate, null_studies=1)
        maps = recreate(studies, anisotropy=0.0).persist(scheduler="threads")
        result = psi(maps, imputations=2, permutations=PERMUTATIONS, seed=replicate,
                     block_size=PERMUTATIONS).compute(scheduler="threads")
        p_tfce, p_voxel = result.p_fwe_tfce.values, result.p_fwe_voxel.values
        errors["tfce"] += bool(p_tfce.min() <= 0.05)
        errors["voxel"] += bool(p_voxel.min() <= 0.05)
        smallest.append(p_tfce.min())
    # Under an exact test, the count is Binomial(N_NULL, 0.05): "far above" is beyond its 99.9th
    # percentile (6 of 40); calibration also means the smallest p is not always large.
    limit = stats.binom.ppf(0.999, N_NULL, 0.05)
    print(f"family-wise errors in {N_NULL} null meta-analyses: {errors}; median smallest "
          f"p_fwe_tfce {np.median(smallest):.2f}")
    assert errors["tfce"] <= limit and errors["voxel"] <= limit, errors
    assert np.median(smallest) < 0.9, np.median(smallest)
