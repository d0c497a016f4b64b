"""Metrics against closed forms and scipy."""

import numpy as np
import pytest
import scipy.stats

from probdyn.analysis.metrics import (
    affine_map,
    co_bps,
    component_latent_r2,
    connectivity_similarity,
    fp_bps,
    group_latent_r2,
    power_spectrum_hellinger,
    rate_r2,
    recovery_r2,
    state_r2,
    state_space_kl,
)
from probdyn.errors import DataError


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


def test_rate_r2_is_one_for_the_truth_and_counts_a_wrong_scale():
    rng = np.random.default_rng(0)
    rates = rng.gamma(2.0, 1.0, size=(5, 30, 4))
    assert rate_r2(rates, rates) == 1.0
    # No regression is fitted: doubling the rates costs 1 - R^2 = sum(r^2) / SS_tot per neuron.
    flat = rates.reshape(-1, 4)
    expected = np.mean(1 - (flat**2).sum(0) / ((flat - flat.mean(0)) ** 2).sum(0))
    np.testing.assert_allclose(rate_r2(rates, 2 * rates), expected)


def test_state_r2_is_invariant_to_affine_maps_and_penalises_unexplained_dims():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(4, 50, 3))
    mixed = truth @ rng.normal(size=(3, 3)) + rng.normal(size=3)
    np.testing.assert_allclose(state_r2(truth, mixed), 1.0, atol=1e-12)
    A, b = affine_map(truth, mixed)
    np.testing.assert_allclose(truth.reshape(-1, 3) @ A + b, mixed.reshape(-1, 3), atol=1e-10)
    # An extra inferred dimension of pure noise scores ~0, and the mean drops to ~3/4.
    noisy = np.concatenate([mixed, rng.normal(size=(4, 50, 1))], axis=-1)
    assert 0.7 < state_r2(truth, noisy) < 0.76
    # Out of sample (map fitted on other trials) a wrong map scores below 0, down to the floor.
    other = truth @ rng.normal(size=(3, 3))
    assert state_r2(truth, mixed, fit_on=(truth, mixed)) == pytest.approx(1.0)
    assert state_r2(truth, mixed, fit_on=(truth, other + 100.0)) == -10.0


def test_recovery_r2_ignores_invented_dims_and_sees_missing_ones():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=(4, 50, 3))
    mixed = truth @ rng.normal(size=(3, 3)) + rng.normal(size=3)
    invented = np.concatenate([mixed, rng.normal(size=(4, 50, 2))], axis=-1)
    # An invented dimension costs state_r2 (true -> inferred) and not recovery_r2.
    np.testing.assert_allclose(recovery_r2(truth, invented), 1.0, atol=1e-12)
    assert state_r2(truth, invented) < 0.7
    # A missing dimension (the model kept 2 of 3): the third true dimension, independent of
    # the others, is not explained (R^2 about 0), so the mean is about 2/3; state_r2 is blind.
    missing = truth[..., :2] @ rng.normal(size=(2, 2))
    assert 0.6 < recovery_r2(truth, missing) < 0.7
    np.testing.assert_allclose(state_r2(truth, missing), 1.0, atol=1e-12)
    # Fitted on other trials: the same map is exact, a map from unrelated states is floored.
    assert recovery_r2(truth, mixed, fit_on=(truth, mixed)) == pytest.approx(1.0)
    assert recovery_r2(truth, mixed, fit_on=(truth + 100.0, mixed)) == -10.0


def test_co_bps_against_poisson_log_likelihoods_from_scipy():
    rng = np.random.default_rng(2)
    rates = rng.gamma(2.0, 0.5, size=(6, 20, 3))
    spikes = rng.poisson(rates).astype(float)
    null = spikes.reshape(-1, 3).mean(axis=0)
    expected = (
        scipy.stats.poisson.logpmf(spikes, rates).sum()
        - scipy.stats.poisson.logpmf(spikes, np.broadcast_to(null, spikes.shape)).sum()
    ) / (np.log(2) * spikes.sum())
    np.testing.assert_allclose(co_bps(spikes, rates), expected, rtol=1e-12)
    assert co_bps(spikes, np.broadcast_to(null, spikes.shape)) == 0.0
    # Missing bins are left out of every sum, the null rate included.
    spikes[0, :5, 1] = np.nan
    observed = np.isfinite(spikes)
    null = np.nansum(spikes, axis=(0, 1)) / observed.sum(axis=(0, 1))
    ll = scipy.stats.poisson.logpmf(np.nan_to_num(spikes), rates)
    ll0 = scipy.stats.poisson.logpmf(np.nan_to_num(spikes), np.broadcast_to(null, spikes.shape))
    expected = ((ll - ll0) * observed).sum() / (np.log(2) * np.nansum(spikes))
    np.testing.assert_allclose(co_bps(spikes, rates), expected, rtol=1e-12)
    with pytest.raises(DataError, match="non-negative and finite"):
        co_bps(spikes, -rates)
    with pytest.raises(DataError, match="non-negative and finite"):
        co_bps(spikes, np.where(observed, np.nan, rates))


def _benchmark_bits_per_spike(rates, spikes):
    """The Neural Latents Benchmark's bits_per_spike, written out as its definition reads."""
    rates, spikes = np.array(rates, dtype=float), np.array(spikes, dtype=float)

    def neg_log_likelihood(r, y):
        keep = ~np.isnan(y)
        r, y = r[keep].copy(), y[keep]
        assert np.all(r >= 0)
        r[r == 0] = 1e-9
        return np.sum(r - y * np.log(r))

    null = np.tile(np.nanmean(spikes, axis=(0, 1), keepdims=True), (*spikes.shape[:2], 1))
    return (neg_log_likelihood(null, spikes) - neg_log_likelihood(rates, spikes)) / (
        np.nansum(spikes) * np.log(2)
    )


@pytest.mark.parametrize("case", ["plain", "silent neurons", "zero rates", "missing bins"])
def test_co_bps_and_fp_bps_equal_the_benchmarks_bits_per_spike(case):
    rng = np.random.default_rng(7)
    rates = rng.gamma(2.0, 0.3, size=(5, 40, 6))
    spikes = rng.poisson(rates).astype(float)
    if case == "silent neurons":  # as in the last five MC_Maze_Small training trials
        spikes[..., [1, 4]] = 0.0
    if case == "zero rates":  # a prediction of exactly zero, where spikes occur and where not
        rates[0, :10, 0] = 0.0
        rates[:, :, 2] = np.where(spikes[:, :, 2] == 0, 0.0, rates[:, :, 2])
    if case == "missing bins":
        spikes[1, 5:15, 3] = np.nan
        spikes[..., 5] = np.where(rng.random(spikes.shape[:2]) < 0.3, np.nan, spikes[..., 5])
    expected = _benchmark_bits_per_spike(rates, spikes)
    assert np.isfinite(expected)
    assert co_bps(spikes, rates) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert fp_bps(spikes, rates) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_group_latent_r2_matches_permuted_groups_and_scores_a_mixed_one_low():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(500, 4))
    # Inferred: group 0 carries true group 1 affinely, group 1 true group 0 mixed with noise.
    inferred = np.concatenate(
        [truth[:, 2:] @ rng.normal(size=(2, 2)) + 3.0, truth[:, :2] + rng.normal(size=(500, 2))],
        axis=1,
    )
    result = group_latent_r2(truth, inferred, [0, 0, 1, 1], [0, 0, 1, 1])
    np.testing.assert_array_equal(result["match"], [1, 0])
    assert result["r2"][1] == pytest.approx(1.0)
    assert result["r2"][0] == pytest.approx(0.5, abs=0.06)  # signal variance 1 of 2
    assert result["table"][1, 1] < 0.05  # true group 1 is not in inferred group 1
    single = group_latent_r2(truth, inferred, [0, 0, 1, 1], [0, 0, 0, 0])
    # One inferred group to share: it goes to the true group it explains best, the other scores 0.
    np.testing.assert_array_equal(single["match"], [-1, 0])
    assert single["r2"][0] == 0.0 and single["r2"][1] == pytest.approx(1.0)
    components = component_latent_r2(truth[:, :2], truth[:, [1, 0]] * [2.0, -1.0])
    np.testing.assert_array_equal(components["match"], [1, 0])
    assert components["mean"] == pytest.approx(1.0)
    with pytest.raises(DataError, match="one label per dimension"):
        group_latent_r2(truth, inferred, [0, 1], [0, 0, 1, 1])


def test_connectivity_similarity():
    J = np.arange(9.0).reshape(3, 3)
    assert connectivity_similarity(J, 2 * J + 1)["correlation"] == pytest.approx(1.0)
    assert connectivity_similarity(J, 1.1 * J)["relative_error"] == pytest.approx(0.1)
    with pytest.raises(DataError, match="must match"):
        connectivity_similarity(J, J[:2])
