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


# -- the paper's mechanism, each against a control -------------------------------------------
def _noisy_rotation(rotation, *, trials=40, steps=300, units=6, seed=0):
    """x' = 0.9 R(rotation) x + noise in a plane, embedded in ``units`` units."""
    rng = np.random.default_rng(seed)
    c, s = np.cos(rotation), np.sin(rotation)
    A = 0.9 * np.array([[c, -s], [s, c]])
    x = np.zeros((trials, steps, 2))
    for t in range(1, steps):
        x[:, t] = x[:, t - 1] @ A.T + 0.3 * rng.standard_normal((trials, 2))
    basis = np.linalg.qr(rng.standard_normal((units, 2)))[0]
    return x @ basis.T + 1.0


def test_orbit_winding_finds_noise_sustained_circulation_and_its_direction():
    from probdyn.analysis.mechanism import orbit_winding

    # Noise-free, 0.9 R(0.3) decays to its stable point; under noise the states wind at
    # about 0.3 rad per step (isotropic noise deflects the phase symmetrically).
    states = _noisy_rotation(0.3)
    forward = orbit_winding(states)
    assert bool(forward.circulates)
    # The plane's orientation is the PCA's choice: the sign is not, reversed time flips it.
    assert 0.24 < abs(float(forward.winding)) < 0.33
    backward = orbit_winding(states[:, ::-1])
    np.testing.assert_allclose(float(backward.winding), -float(forward.winding))
    # Control: the same process without rotation has no preferred direction.
    still = orbit_winding(_noisy_rotation(0.0))
    assert not bool(still.circulates)
    assert abs(float(still.winding)) < 3 * float(still.winding_se)
    with pytest.raises(DataError, match="trial, time"):
        orbit_winding(states[0])


def _two_wells(*, trials=20, steps=400, units=10, switch=0.03, seed=0):
    """Dwelling at one of two points (small jitter) with rare jumps; symbols = the well."""
    rng = np.random.default_rng(seed)
    well = np.zeros((trials, steps), int)
    for t in range(1, steps):
        flip = rng.random(trials) < switch
        well[:, t] = np.where(flip, 1 - well[:, t - 1], well[:, t - 1])
    centres = rng.standard_normal((2, units)) * 3.0
    states = centres[well] + 0.05 * rng.standard_normal((trials, steps, units))
    return states, well


def test_speed_regions_split_dwelling_from_jumps_and_tie_jumps_to_output_switches():
    from probdyn.analysis.mechanism import speed_regions

    states, well = _two_wells()
    result = speed_regions(states, well)
    assert bool(result.distinct) and float(result.ashman_d) > 5
    assert float(result.fast_speed) > 20 * float(result.slow_speed)
    assert float(result.p_fast_at_switch) == 1.0 and float(result.p_fast_elsewhere) == 0.0
    np.testing.assert_allclose(float(result.fast_share), (well[:, 1:] != well[:, :-1]).mean())
    # The noise-free speed of a field that moves fast on one side of a plane and slowly on
    # the other: the split is the side, read at every visited state but the last.
    side = np.random.default_rng(5).standard_normal(states.shape[-1])
    side /= np.linalg.norm(side)
    offset = float(np.median(states @ side))

    def field(h):
        return h + np.where((h @ side)[..., None] > offset, 1.0, 0.01) * side

    driven = speed_regions(states, well, field=field)
    assert bool(driven.distinct)
    np.testing.assert_array_equal(driven.fast.values, states[:, :-1] @ side > offset)
    # Control: a Gaussian random walk moves at one typical speed.
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.standard_normal((20, 400, 10)), axis=1)
    assert not bool(speed_regions(walk).distinct)
    # Symbols unrelated to the jumps: fast steps no likelier where the output changes.
    other = rng.integers(0, 2, well.shape)
    unrelated = speed_regions(states, other)
    assert abs(float(unrelated.p_fast_at_switch) - float(unrelated.p_fast_elsewhere)) < 0.03


def test_phase_decoding_reads_the_symbol_off_the_phase_and_not_off_shuffled_trials():
    from probdyn.analysis.mechanism import orbit_phase, phase_decoding

    states = _noisy_rotation(0.3, trials=30, steps=200)
    theta = orbit_phase(states)
    # The emission is set by the phase: three sectors, three symbols.
    symbols = np.minimum(((theta + np.pi) / (2 * np.pi) * 3).astype(int), 2)
    result = phase_decoding(states, symbols)
    assert float(result.accuracy) > 0.95
    assert float(result.chance) < 0.45 and float(result.shuffled) < 0.45
    # Control: symbols drawn independently of the states decode at chance.
    rng = np.random.default_rng(2)
    noise = phase_decoding(states, rng.integers(0, 3, symbols.shape))
    assert float(noise.accuracy) < float(noise.chance) + 0.03
    with pytest.raises(DataError, match="symbols have shape"):
        phase_decoding(states, symbols[:, :-1])
    with pytest.raises(DataError, match="non-negative integers"):
        phase_decoding(states, symbols - 0.5)
    # Symbols given as floats holding integers decode as the integers do.
    assert float(phase_decoding(states, symbols.astype(float)).accuracy) == float(result.accuracy)
