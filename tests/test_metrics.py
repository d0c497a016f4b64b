"""Distribution-level trajectory metrics against closed forms."""

import numpy as np
import pytest

from probdyn.errors import DataError
from probdyn.metrics import power_spectrum_hellinger, state_space_kl


def test_state_space_kl_is_the_discrete_kl_of_the_bin_occupancies():
    # 1-D states on bin centres of a 4-bin grid over [0, 3] (padding 0): counts 1,2,3,4 vs 4,3,2,1
    grid_points = np.array([0.2, 1.0, 1.8, 2.8])
    p_counts, q_counts = np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])
    reference = np.concatenate([[0.0, 3.0], np.repeat(grid_points, p_counts)])[:, None]
    sample = np.concatenate([[0.0, 3.0], np.repeat(grid_points, q_counts)])[:, None]
    p = (p_counts + np.array([1, 0, 0, 1])) / (p_counts.sum() + 2)  # the range ends land in bins
    q = (q_counts + np.array([1, 0, 0, 1])) / (q_counts.sum() + 2)  # 0 and 3
    # bins of width 0.75 over [0, 3]: 0.2 -> 0, 1.0 -> 1, 1.8 -> 2, 2.8 -> 3
    expected = float(np.sum(p * np.log(p / q)))
    got = state_space_kl(reference, sample, num_bins=4, padding=0.0, pseudocount=0.0)
    assert got == pytest.approx(expected, rel=1e-12)


def test_state_space_kl_is_zero_for_the_same_states_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 2))
    assert state_space_kl(x, x) == pytest.approx(0.0, abs=1e-12)
    floor = state_space_kl(x, rng.normal(size=(20_000, 2)))
    shifted = state_space_kl(x, rng.normal(size=(20_000, 2)) + 1.0)
    assert floor < 0.05 < 0.3 < shifted


def test_state_space_kl_rejects_mismatched_dims_and_nan():
    with pytest.raises(DataError, match="dims"):
        state_space_kl(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(DataError, match="non-finite"):
        state_space_kl(np.zeros((5, 2)), np.full((5, 2), np.nan))


def test_power_spectrum_hellinger_bounds():
    t = np.arange(400) * 0.05  # whole cycles of both frequencies: no spectral leakage
    rng = np.random.default_rng(1)
    phases = rng.uniform(0, 2 * np.pi, size=(8, 1, 1))
    slow = np.sin(2 * np.pi * 0.5 * t[None, :, None] + phases)
    fast = np.sin(2 * np.pi * 4.0 * t[None, :, None] + phases)
    assert power_spectrum_hellinger(slow, slow) == pytest.approx(0.0, abs=1e-7)
    # disjoint spectral support (80 - 10 bins apart, kernel 8 bins wide): distance 1
    assert power_spectrum_hellinger(slow, fast) == pytest.approx(1.0, abs=1e-6)
    noisy = slow + 0.3 * rng.normal(size=slow.shape)
    assert 0.0 < power_spectrum_hellinger(slow, noisy) < power_spectrum_hellinger(slow, fast)


def test_power_spectrum_hellinger_needs_matching_paths():
    with pytest.raises(DataError, match="same time and dim"):
        power_spectrum_hellinger(np.zeros((2, 10, 1)), np.zeros((2, 12, 1)))
