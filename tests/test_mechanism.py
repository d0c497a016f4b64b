"""Run lengths, residency groups and the orbit's principal components."""

import jax.numpy as jnp
import numpy as np
import pytest

from probdyn.analysis.mechanism import kick_neurons, orbit_pca, residency_groups, run_lengths
from probdyn.errors import DataError
from probdyn.models import RNNEmulator


def test_run_lengths_and_groups_by_hand():
    symbols = np.array([[0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0]])
    np.testing.assert_array_equal(
        run_lengths(symbols), [[1, 3, 3, 3, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1]]
    )
    np.testing.assert_array_equal(
        residency_groups(symbols), [[0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0]]
    )
    with pytest.raises(DataError, match="trial, time"):
        run_lengths(np.zeros(5))


def test_orbit_pca_finds_the_plane_of_a_noisy_circle():
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 2 * np.pi, size=(10, 200))
    basis = np.linalg.qr(rng.normal(size=(20, 2)))[0]  # an orthonormal plane in 20 units
    states = 3.0 * np.stack([np.cos(angle), np.sin(angle)], -1) @ basis.T
    states = states + 0.05 * rng.normal(size=states.shape) + 1.0
    pca = orbit_pca(states, num_components=3)
    ratio = pca.explained_variance_ratio.values
    assert ratio[:2].sum() > 0.99 and ratio[2] < 0.01
    # The first two components span the circle's plane.
    overlap = pca.components.values[:2] @ basis
    np.testing.assert_allclose(np.abs(np.linalg.det(overlap)), 1.0, atol=1e-3)
    assert pca.projection.shape == (10, 200, 3)
    np.testing.assert_allclose(np.linalg.norm(pca.projection[..., :2], axis=-1), 3.0, atol=0.3)


def test_kick_neurons_are_the_units_whose_ablation_stops_the_output_switching():
    # Unit 1 is driven by noise and kicks unit 0, which sets the output (symbol 1 while
    # h0 > 0; at h0 = 0 the logits tie and the first symbol wins); unit 2 is driven by noise
    # too but feeds nothing.
    model = RNNEmulator(hidden=3, noise_dim=2, num_symbols=2)
    params = {
        "W_in": jnp.array([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0]]),
        "W_hh": jnp.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        "W_out": jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),
    }
    result = kick_neurons(model, params, seed=0, num_trials=20, num_timesteps=100)
    assert 0.3 < float(result.intact_volatility) < 0.7  # h0 > 0 about half the time
    np.testing.assert_allclose(result.volatility.values[:2], 0.0)
    assert result.volatility.values[2] == float(result.intact_volatility)  # same noise
    np.testing.assert_array_equal(result.kick.values, [True, True, False])


def test_kick_neurons_count_each_kind_of_transition_as_a_loop_over_the_steps_does():
    # Random 6-unit networks, 3 symbols: the transition counts of the intact network and of
    # every ablated copy, recomputed step by step in NumPy from the same noise.
    import jax

    model = RNNEmulator(hidden=6, noise_dim=2, num_symbols=3)
    rng = np.random.default_rng(1)
    noise = np.asarray(jax.random.normal(jax.random.key(5), (20, 60, 2)), dtype=np.float64)
    for _ in range(3):
        params = {
            "W_in": rng.normal(size=(6, 2)),
            "W_hh": rng.normal(size=(6, 6)) * 0.6,
            "W_out": rng.normal(size=(3, 6)),
        }

        def counts(w_in, w_hh, w_out):
            n = np.zeros((3, 3), dtype=int)
            for xi in noise:
                h, previous = np.zeros(6), None
                for x in xi:
                    h = np.maximum(w_in @ x + w_hh @ h, 0.0)
                    s = int(np.argmax(w_out @ h))
                    if previous is not None:
                        n[previous, s] += 1
                    previous = s
            return n

        intact = counts(params["W_in"], params["W_hh"], params["W_out"])
        ablated = []
        for unit in range(6):
            keep = (np.arange(6) != unit)[:, None]
            ablated.append(counts(params["W_in"] * keep, params["W_hh"] * keep, params["W_out"]))
        ablated = np.array(ablated)

        result = kick_neurons(
            model,
            {k: jnp.asarray(v, jnp.float32) for k, v in params.items()},
            seed=5,
            num_trials=20,
            num_timesteps=60,
            min_transitions=10,
            max_group=4,
        )
        np.testing.assert_array_equal(result.transitions.values, intact)
        np.testing.assert_array_equal(result.ablated_transitions.values, ablated)
        changes = ~np.eye(3, dtype=bool)
        counted = changes & (intact >= 10)
        with np.errstate(divide="ignore", invalid="ignore"):
            drop = np.where(counted, 1 - ablated / intact, np.nan)
        np.testing.assert_allclose(result.relative_drop.values, drop)
        np.testing.assert_allclose(
            result.volatility.values, ablated[:, changes].sum(-1) / (20 * 59)
        )
        expected_kick = [bool(np.any(d[counted] > 0.5)) for d in drop]
        np.testing.assert_array_equal(result.kick.values, expected_kick)

        # Groups: the units in order of their largest single drop, the first k ablated together.
        largest = [max(unit_drop[counted], default=-np.inf) for unit_drop in drop]
        ranking = sorted(range(6), key=lambda unit: -largest[unit])
        np.testing.assert_array_equal(result["rank"].values, ranking)
        for size in range(1, 5):
            keep = ~np.isin(np.arange(6), ranking[:size])[:, None]
            group = counts(params["W_in"] * keep, params["W_hh"] * keep, params["W_out"])
            np.testing.assert_array_equal(result.group_transitions.sel(group_size=size), group)
            with np.errstate(divide="ignore", invalid="ignore"):
                group_drop = np.where(counted, 1 - group / intact, np.nan)
            np.testing.assert_allclose(result.group_relative_drop.sel(group_size=size), group_drop)
