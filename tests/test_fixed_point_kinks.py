"""Fixed points on kinks: classes from the local dynamics, checked against known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probdyn
from probdyn.analysis.fixed_points import CLASSES, Dynamics, fixed_points
from probdyn.analysis.fixed_points.local import jacobian_change, perturbation_growth
from probdyn.inference import fit_particle_filter
from probdyn.models import RNNEmulator


def _single(result):
    """(class name, growth rate, kink) of the one point of a one-draw result."""
    ds = result.dataset
    assert ds.sizes["fixed_point"] == 1 and bool(ds["exists"].values[0, 0])
    return (
        CLASSES[int(ds["stability"].values[0, 0])],
        float(ds["growth_rate"].values[0, 0]),
        bool(ds["kink"].values[0, 0]),
    )


# The solver finds a point to about 1e-10 and its perturbations have length about 1e-6 of the
# starts' spread, so a rate at a kink is exact to about 1e-4 relative.
RTOL = 1e-3


def _relu_map(W):
    return Dynamics(lambda x, p: jax.nn.relu(jnp.asarray(W) @ x), {}, len(W), kind="map")


@pytest.mark.parametrize(
    ("gains", "expected"),
    [((0.9, 0.5), "stable node"), ((1.2, 0.5), "saddle")],
)
def test_relu_origin_grows_at_the_largest_gain(gains, expected):
    # F(h) = ReLU(diag(a) h): a perturbation in the positive orthant grows by max(a) per step,
    # one with a negative component is rectified. The origin is every unit's kink, where
    # relu'(0) = 0 makes the automatic Jacobian zero ("stable" whatever a is).
    result = fixed_points(_relu_map(np.diag(gains)), box=(-1, 1), num_starts=16)
    name, growth, kink = _single(result)
    assert kink and name == expected
    np.testing.assert_allclose(np.exp(growth), max(gains), rtol=RTOL)


def test_a_relu_cycle_through_the_units_is_a_spiral_at_the_origin():
    # h -> ReLU(a P h) with P the 3-cycle e1 -> e2 -> e3 -> e1: a positive perturbation keeps
    # turning (period 3) and shrinks by a per step.
    P = np.roll(np.eye(3), 1, axis=0)
    for gain, expected in ((0.8, "stable spiral"), (1.25, "saddle")):
        name, growth, kink = _single(fixed_points(_relu_map(gain * P), box=(-1, 1), num_starts=16))
        assert kink and name == expected
        np.testing.assert_allclose(np.exp(growth), gain, rtol=RTOL)


def test_a_relu_flow_at_its_kink_and_a_smooth_flow_as_its_eigenvalues_say():
    # dx/dt = -x + diag(a) ReLU(x): rate a_i - 1 for x_i > 0, -1 for x_i < 0.
    gains = jnp.array([0.5, 0.7])
    kinked = Dynamics(lambda x, p: -x + gains * jax.nn.relu(x), {}, 2)
    name, growth, kink = _single(fixed_points(kinked, box=(-1, 1), num_starts=16))
    assert kink and name == "stable node"
    np.testing.assert_allclose(growth, -0.3, rtol=RTOL)
    # A smooth flow: no kink, the class and the leading growth its eigenvalues give.
    A = np.array([[-0.2, 1.0], [-1.0, -0.2]])
    smooth = Dynamics(lambda x, p: jnp.tanh(jnp.asarray(A) @ x), {}, 2)
    name, growth, kink = _single(fixed_points(smooth, box=(-0.5, 0.5), num_starts=16))
    assert not kink and name == "stable spiral"
    np.testing.assert_allclose(growth, -0.2, atol=1e-8)


def test_local_growth_at_a_smooth_point_is_the_leading_eigenvalue():
    # The perturbation dynamics are independent of the eigen-decomposition: on a smooth map
    # they reproduce log |lambda_1|, and the one-sided Jacobians flag no kink (so the search
    # never runs them there).
    rng = np.random.default_rng(3)
    W = 0.7 * rng.standard_normal((5, 5)) / np.sqrt(5)
    dynamics = Dynamics(lambda x, p: jnp.tanh(jnp.asarray(W) @ x), {}, 5, kind="map")
    directions = rng.standard_normal((16, 5))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    change = jacobian_change(dynamics, {}, jnp.zeros(5), jnp.asarray(W), None, directions, 1e-6)
    assert float(change) < 1e-6
    growth, _, _, _ = perturbation_growth(dynamics, {}, jnp.zeros(5), None, directions, 1e-6, 400)
    lead = np.max(np.abs(np.linalg.eigvals(W)))
    np.testing.assert_allclose(float(np.max(growth)), np.log(lead), atol=5e-3)


def _noise_free_growth(W, states, burn_in=100, steps=400):
    """Brute force: mean log growth per step of ReLU(W h) iterated from the visited states."""
    h = np.asarray(states).reshape(-1, W.shape[0])
    h = h[np.linalg.norm(h, axis=1) > 0]
    total = np.zeros(len(h))
    for n in range(burn_in + steps):
        h = np.maximum(h @ W.T, 0.0)
        norm = np.linalg.norm(h, axis=1)
        h = h / np.where(norm > 0, norm, 1.0)[:, None]  # renormalised: no underflow
        if n >= burn_in:
            total += np.log(np.maximum(norm, 1e-300))
    alive = np.linalg.norm(h, axis=1) > 0
    return np.exp(np.median(total[alive] / steps))


@pytest.fixture(scope="module")
def emulators():
    """A trained 20-unit emulator of the 3-state chain, its start, and the start scaled."""
    model = RNNEmulator(hidden=20, noise_dim=4, num_symbols=3)
    train = probdyn.data.simulate_hmm("linear", num_trials=200, num_timesteps=30, seed=0)
    start = model.initial_weights(jax.random.key(10))
    fit = fit_particle_filter(
        model,
        train,
        seed=0,
        num_steps=600,
        batch_size=16,
        num_particles=8,
        learning_rate=1e-2,
        init=start,
        progress=False,
    )
    return model, dict(fit.params), start


def _verdict(model, params, seed=1):
    _, hidden = model.generate(params, jax.random.key(seed), 50, 100)
    draws = {k: v[None] for k, v in params.items()}
    return fixed_points(model, draws, states=hidden), np.asarray(hidden)


def test_emulator_origin_is_classified_by_its_dynamics_and_brute_force_agrees(emulators):
    model, trained, start = emulators
    for params in (trained, start):
        result, hidden = _verdict(model, params)
        name, growth, kink = _single(result)
        assert kink and name.startswith("stable")
        W = np.asarray(params["W_hh"])
        # A perturbation that keeps turning grows at a rate its finite averages approach
        # slowly: the local rate (the fastest of 16 directions over 500 steps) and the visited
        # states' median over 400 steps agree to about 1%.
        np.testing.assert_allclose(np.exp(growth), _noise_free_growth(W, hidden), rtol=0.02)


def test_emulator_verdict_differs_from_untrained_and_from_scaled_past_stability(emulators):
    model, trained, start = emulators
    result, _ = _verdict(model, trained)
    assert _single(result)[0] == "stable node"
    # (a) untrained networks at the default (fan-in) scale, 24 draws of the initialisation as
    # a posterior: mostly stable too, but in most of them the leading perturbation keeps
    # turning (a spiral), where the trained network's settles on one direction (a node).
    keys = jax.random.split(jax.random.key(100), 24)
    untrained = jax.vmap(model.initial_weights)(keys)
    _, hidden = model.generate(start, jax.random.key(1), 50, 100)
    untrained = fixed_points(model, untrained, states=hidden)
    assert untrained.dataset.sizes["fixed_point"] == 1  # the origin, in every draw
    assert bool(untrained.dataset["kink"].all())
    codes = untrained.dataset["stability"].values[:, 0]
    assert np.mean(codes == CLASSES.index("stable node")) < 0.5
    # (b) the start's recurrent weights scaled so that perturbations grow by 1.5 per step (the
    # map is positively homogeneous: scaling W scales the rate exactly): no longer stable, and
    # the noise-free iterates from the visited states grow as the reported rate says.
    _, growth, _ = _single(_verdict(model, start)[0])
    scaled = dict(start, W_hh=start["W_hh"] * 1.5 / np.exp(growth))
    result, hidden = _verdict(model, scaled)
    name, growth, kink = _single(result)
    assert kink and name in ("saddle", "unstable node", "unstable spiral")
    np.testing.assert_allclose(np.exp(growth), 1.5, rtol=0.02)  # a turning rate, as above
    assert _noise_free_growth(np.asarray(scaled["W_hh"]), hidden) == pytest.approx(1.5, rel=0.02)


def test_emulator_with_biases_has_its_bias_in_the_map_and_the_priors():
    model = RNNEmulator(hidden=4, noise_dim=2, num_symbols=3, biases=True)
    params = model.initial_weights(jax.random.key(0))
    assert set(model.default_priors(3)) == {"W_in", "W_hh", "W_out", "b"}
    np.testing.assert_array_equal(params["b"], 0.0)
    params["b"] = jnp.array([1.0, -1.0, 0.5, 0.0])
    h = jnp.array([0.3, 0.2, 0.1, 0.4])
    expected = jax.nn.relu(params["W_hh"] @ h + params["b"])
    np.testing.assert_allclose(model.vector_field(params, h), expected)
    # Without biases the origin is a fixed point; with these it is not.
    assert float(jnp.abs(model.vector_field(params, jnp.zeros(4))).max()) == 1.0
    assert "b" not in RNNEmulator(hidden=4, noise_dim=2).default_priors(3)
