"""Coordinate transforms: Lancaster icbm2tal, Brett mni2tal, tokens -> SPM-MNI."""

from __future__ import annotations

import numpy as np
import pytest

from daskmeta.model import coordinates as co


@pytest.fixture
def mni_points(rng: np.random.Generator) -> np.ndarray:
    """Points spread over the brain, both hemispheres, above and below the AC-PC plane."""
    return rng.uniform([-70, -100, -50], [70, 70, 80], size=(50, 3))


def test_spm_mni_is_identity(mni_points: np.ndarray) -> None:
    out = co.to_spm_mni(mni_points, "spm_mni")
    np.testing.assert_array_equal(out, mni_points)
    assert out is not mni_points


def test_icbm_spm_reference_points() -> None:
    # By hand from Lancaster's icbm_spm2tal rows:
    # origin -> the translation column (-1.0207, -1.7667, 4.0926)
    # (10, 12, 14):
    #   x =  0.9254*10 + 0.0024*12 - 0.0118*14 - 1.0207 =  9.254 + 0.0288 - 0.1652 - 1.0207
    #     =  8.0969
    #   y = -0.0048*10 + 0.9316*12 - 0.0871*14 - 1.7667 = -0.048 + 11.1792 - 1.2194 - 1.7667
    #     =  8.1451
    #   z =  0.0152*10 + 0.0883*12 + 0.8924*14 + 4.0926 =  0.152 + 1.0596 + 12.4936 + 4.0926
    #     = 17.7978
    # (-40, 20, -10):
    #   x = -37.016 + 0.048 + 0.118 - 1.0207 = -37.8707
    #   y =   0.192 + 18.632 + 0.871 - 1.7667 = 17.9283
    #   z =  -0.608 + 1.766 - 8.924 + 4.0926 = -3.6734
    mni = np.array([[0.0, 0, 0], [10, 12, 14], [-40, 20, -10]])
    expected = np.array(
        [[-1.0207, -1.7667, 4.0926], [8.0969, 8.1451, 17.7978], [-37.8707, 17.9283, -3.6734]]
    )
    np.testing.assert_allclose(co.mni_to_tal(mni, "spm"), expected, atol=1e-10)


def test_icbm_fsl_and_other_reference_point() -> None:
    # (10, 12, 14) by hand:
    # fsl:   x = 9.464 + 0.0408 - 0.0364 - 1.0680 = 8.4004
    #        y = -0.083 + 11.3748 - 0.812 - 1.0239 = 9.4559
    #        z = 0.053 + 0.7404 + 12.614 + 3.1883 = 16.5957
    # other: x = 9.357 + 0.0348 - 0.1008 - 1.0423 = 8.2487
    #        y = -0.065 + 11.2752 - 1.0164 - 1.3940 = 8.7998
    #        z = 0.103 + 0.9024 + 12.5538 + 3.6475 = 17.2067
    point = [10.0, 12.0, 14.0]
    np.testing.assert_allclose(co.mni_to_tal(point, "fsl"), [8.4004, 9.4559, 16.5957], atol=1e-10)
    np.testing.assert_allclose(
        co.mni_to_tal(point, "other"), [8.2487, 8.7998, 17.2067], atol=1e-10
    )


@pytest.mark.parametrize("kind", co.ICBM_KINDS)
def test_icbm_round_trip(mni_points: np.ndarray, kind: str) -> None:
    back = co.tal_to_mni(co.mni_to_tal(mni_points, kind), kind)
    np.testing.assert_allclose(back, mni_points, atol=1e-9)


def test_brett_upper_example() -> None:
    # MNI (10, 12, 14), z >= 0, upper matrix:
    #   x = 0.99*10 = 9.9
    #   y = 0.9688*12 + 0.0460*14 = 11.6256 + 0.644 = 12.2696
    #   z = -0.0485*12 + 0.9189*14 = -0.582 + 12.8646 = 12.2826
    np.testing.assert_allclose(co.brett_mni2tal([10.0, 12.0, 14.0]), [9.9, 12.2696, 12.2826])


def test_brett_lower_example() -> None:
    # MNI (10, 12, -14), z < 0, lower matrix:
    #   y = 11.6256 + 0.0420*(-14) = 11.0376;  z = -0.582 + 0.8390*(-14) = -12.328
    np.testing.assert_allclose(co.brett_mni2tal([10.0, 12.0, -14.0]), [9.9, 11.0376, -12.328])


def test_brett_round_trip(mni_points: np.ndarray) -> None:
    # Brett's inverse chooses by the sign of Talairach z; keep points where the forward
    # transform does not flip the sign of z (all but a sliver near z = 0).
    tal = co.brett_mni2tal(mni_points)
    same_side = (tal[:, 2] >= 0) == (mni_points[:, 2] >= 0)
    assert same_side.sum() > 40
    np.testing.assert_allclose(co.brett_tal2mni(tal[same_side]), mni_points[same_side],
                               atol=1e-9)


def test_brett_inverse_uses_lower_matrix_below_zero() -> None:
    tal = np.array([9.9, 11.0376, -12.328])
    np.testing.assert_allclose(co.brett_tal2mni(tal), [10.0, 12.0, -14.0], atol=1e-9)
    np.testing.assert_allclose(co.brett_tal2mni(tal), np.linalg.solve(co.BRETT_LOWER, tal))
    assert not np.allclose(co.brett_tal2mni(tal), np.linalg.solve(co.BRETT_UPPER, tal))


def test_tokens_follow_the_spec_table(mni_points: np.ndarray) -> None:
    fsl_tal = co.mni_to_tal(mni_points, "fsl")
    np.testing.assert_allclose(co.to_spm_mni(mni_points, "fsl_mni"),
                               co.tal_to_mni(fsl_tal, "spm"), atol=1e-9)
    other_tal = co.mni_to_tal(mni_points, "other")
    np.testing.assert_allclose(co.to_spm_mni(mni_points, "other_mni"),
                               co.tal_to_mni(other_tal, "spm"), atol=1e-9)
    # other_tal: Talairach straight through inv(icbm_spm); round trip with icbm_spm.
    np.testing.assert_allclose(co.to_spm_mni(co.mni_to_tal(mni_points, "spm"), "other_tal"),
                               mni_points, atol=1e-9)
    brett = co.brett_mni2tal(mni_points)
    np.testing.assert_allclose(co.to_spm_mni(brett, "spm_brett"), co.brett_tal2mni(brett))
    np.testing.assert_allclose(co.to_spm_mni(brett, "fsl_brett"),
                               co.to_spm_mni(co.brett_tal2mni(brett), "fsl_mni"))


def test_single_point_keeps_shape() -> None:
    assert co.to_spm_mni([1.0, 2.0, 3.0], "other_tal").shape == (3,)
    assert co.brett_tal2mni(np.zeros((0, 3))).shape == (0, 3)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="token must be one of"):
        co.to_spm_mni([0.0, 0, 0], "spm_tal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be one of"):
        co.mni_to_tal([0.0, 0, 0], "afni")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        co.mni_to_tal(np.zeros((4, 2)))
