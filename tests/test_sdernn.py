"""The SDE RNN family: low-rank reduction, transition density, programs, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import probdyn
from probdyn.algorithms.sde import EulerMaruyamaPath
from probdyn.errors import DataError, PriorError
from probdyn.models import SDERNN


def _draw(model, emission_dim, seed=0):
    """One parameter draw from the model's prior."""
    keys = jax.random.split(jax.random.key(seed), 32)
    priors = model.site_priors(emission_dim)
    return {
        name: prior.sample(key)
        for (name, prior), key in zip(priors.items(), keys[: len(priors)], strict=True)
    }


def _unit_field(model, params, x):
    r"""The network in unit space, :math:`(-x + J\phi(x) + b)/\tau`, written independently."""
    J = params["M"] @ params["N"].T / model.num_units
    return (-x + J @ jnp.tanh(x) + params["b"]) / model.tau


def test_low_rank_latent_flow_is_the_unit_flow_on_its_subspace():
    model = SDERNN(num_units=12, rank=2, tau=0.5)
    params = _draw(model, 1)
    z = jnp.array([0.3, -0.7])
    x = model.unit_states(params, z)
    # The unit-space velocity at x = M z + b_perp lies along M and equals M times dz/dt.
    np.testing.assert_allclose(
        _unit_field(model, params, x), params["M"] @ model.vector_field(params, z), atol=1e-12
    )


def test_low_rank_fixed_points_are_fixed_points_of_the_whole_network():
    model = SDERNN(num_units=10, rank=2)
    params = _draw(model, 1, seed=3)
    result = probdyn.fixed_points(model, {k: v[None] for k, v in params.items()}, num_starts=64)
    points = np.asarray(result.dataset.location[0])
    points = points[~np.isnan(points[:, 0])]
    assert len(points) >= 1
    for z in points:
        x = model.unit_states(params, jnp.asarray(z))
        np.testing.assert_allclose(_unit_field(model, params, x), 0.0, atol=1e-7)
        # Unit-space eigenvalues: the latent ones plus -1/tau for the directions off M.
        unit = np.linalg.eigvals(jax.jacobian(lambda v: _unit_field(model, params, v))(x))
        latent = np.linalg.eigvals(jax.jacobian(lambda v: model.vector_field(params, v))(z))
        expected = np.concatenate([latent, -np.ones(8)])
        np.testing.assert_allclose(np.sort_complex(unit), np.sort_complex(expected), atol=1e-8)


def test_full_rank_field_and_connectivity():
    model = SDERNN(num_units=4, nonlinearity="relu", tau=2.0)
    params = _draw(model, 1)
    x = jnp.array([0.5, -1.0, 2.0, 0.0])
    expected = (-x + params["J"] @ jax.nn.relu(x) + params["b"]) / 2.0
    np.testing.assert_allclose(model.vector_field(params, x), expected, atol=1e-12)
    np.testing.assert_array_equal(model.connectivity(params), params["J"])
    assert model.latent_dim == 4


def test_symmetric_networks_have_symmetric_connectivity_and_no_currents():
    from probdyn.analysis.nonequilibrium import ou_entropy_production_rate

    full = SDERNN(num_units=3, nonlinearity="linear", symmetric=True)
    params = _draw(full, 1, seed=4)
    J = full.connectivity(params)
    np.testing.assert_allclose(J, (params["J"] + params["J"].T) / 2, atol=1e-15)
    # Linear units, isotropic noise: drift -(I - J)x with J symmetric is in detailed balance.
    B = -jax.jacobian(lambda x: full.vector_field(params, x))(jnp.zeros(3))
    np.testing.assert_allclose(B, jnp.eye(3) - J, atol=1e-12)
    # (shifted by 3I so that every eigenvalue is positive: a stationary state exists)
    shifted = B + 3 * jnp.eye(3)
    assert np.linalg.eigvalsh(shifted).min() > 0
    assert ou_entropy_production_rate(shifted, jnp.eye(3)) == pytest.approx(0, abs=1e-9)
    low = SDERNN(num_units=8, rank=2, symmetric=True)
    params = _draw(low, 1, seed=5)
    assert "N" not in params and params["s"].shape == (2,)
    J = low.connectivity(params)
    np.testing.assert_allclose(J, J.T, atol=1e-12)
    expected = params["M"] @ jnp.diag(params["s"]) @ params["M"].T / 8
    np.testing.assert_allclose(J, expected, atol=1e-12)
    with pytest.raises(PriorError, match="symmetric"):
        SDERNN(num_units=3, symmetric="yes")


def test_transition_density_equals_the_gaussian_steps_written_out():
    rng = np.random.default_rng(0)
    paths = jnp.asarray(rng.normal(size=(3, 6, 2)))
    tril = jnp.array([[0.4, 0.0], [0.1, 0.3]])
    A = jnp.array([[-1.0, 0.5], [-0.5, -1.0]])
    density = EulerMaruyamaPath(lambda z, u: A @ z, tril, 0.1, 6, batch_shape=(3,))
    expected = np.zeros(3)
    for trial in range(3):
        z = np.asarray(paths[trial])
        expected[trial] = dist.Normal(0, 1).log_prob(z[0]).sum()
        for t in range(5):
            mean = z[t] + 0.1 * np.asarray(A) @ z[t]
            step = dist.MultivariateNormal(mean, 0.1 * tril @ tril.T)
            expected[trial] += step.log_prob(z[t + 1])
    np.testing.assert_allclose(density.log_prob(paths), expected, rtol=1e-10)


def test_transition_density_sample_has_the_step_statistics():
    tril = jnp.array([[0.5, 0.0], [0.2, 0.4]])
    density = EulerMaruyamaPath(lambda z, u: -z, tril, 0.05, 3, batch_shape=())
    paths = np.asarray(density.sample(jax.random.key(1), (20000,)))
    steps = paths[:, 1] - paths[:, 0] * (1 - 0.05)
    # Increments given the start: N(0, dt L L^T); 20000 draws give ~1% error on each entry.
    np.testing.assert_allclose(np.cov(steps.T), 0.05 * tril @ tril.T, atol=4e-4)


@pytest.mark.parametrize("observation", ["gaussian", "poisson"])
def test_prior_predictive_runs_the_non_centred_program(observation):
    model = SDERNN(num_units=6, rank=2, observation=observation, substeps=3, diffusion="lowrank")
    draws = probdyn.prior_predictive(
        model, seed=0, num_samples=2, num_trials=3, num_timesteps=5, emission_dim=4
    )
    assert draws["latents"].shape == (2, 3, 5, 2)
    assert draws["latent_noise"].shape == (2, 3, 1 + 4 * 3, 2)
    site = "y" if observation == "gaussian" else "spikes"
    assert draws[site].shape == (2, 3, 5, 4)
    # The first latent state is the first noise draw (z_0 ~ N(0, I)).
    np.testing.assert_array_equal(draws["latents"][:, :, 0], draws["latent_noise"][:, :, 0])


def test_latent_observation_checks_the_data():
    ds = probdyn.data.simulate_sde("double_well", num_trials=2, num_timesteps=10, seed=0)
    with pytest.raises(DataError, match="latent dim is 3"):
        SDERNN(num_units=5, rank=3, observation="latent").prepare(ds)
    missing = ds.copy(deep=True)
    missing["y"][0, 3, 0] = np.nan
    with pytest.raises(DataError, match="missing"):
        SDERNN(num_units=5, rank=2, observation="latent").prepare(missing)
    with pytest.raises(DataError, match="input_dim=1"):
        SDERNN(num_units=5, rank=2, observation="latent", input_dim=1).prepare(ds)


def test_bad_hyperparameters_and_priors_are_named():
    with pytest.raises(PriorError, match="rank=7 exceeds"):
        SDERNN(num_units=5, rank=7)
    with pytest.raises(PriorError, match="diffusion='full'"):
        SDERNN(num_units=5, diffusion="full")
    with pytest.raises(PriorError, match="nonlinearity"):
        SDERNN(num_units=5, nonlinearity="sigmoid")
    with pytest.raises(PriorError, match="unknown prior site"):
        SDERNN(num_units=5, rank=2, priors={"J": dist.Normal(0, 1)})
    model = SDERNN(num_units=5, rank=2, priors={"sigma": dist.Normal(0, 1)})
    with pytest.raises(PriorError, match="support"):
        model.site_priors(2)


@pytest.mark.slow
def test_drift_diffusion_matching_recovers_the_double_well():
    """A 20-unit rank-2 network fitted to double-well paths carries its drift and diffusion.

    MAP first, then a full-covariance Gaussian guide started there (docs/models/sdernn.md).
    """
    from probdyn.algorithms.sde import matching_errors
    from probdyn.data import systems
    from probdyn.inference import svi

    ds = probdyn.data.simulate_sde("double_well", num_trials=100, seed=1)
    model = SDERNN(num_units=20, rank=2, observation="latent")
    point = svi(model, ds, num_steps=3000, seed=0, guide="delta", progress=False)
    fit = svi(
        model,
        ds,
        num_steps=3000,
        seed=0,
        guide="mvn",
        learning_rate=0.005,
        init=point,
        init_scale=0.01,
        progress=False,
    )
    draws = fit.sample_posterior(200, seed=1)
    errors = matching_errors(
        model,
        draws,
        lambda x: systems.double_well(x, {}),
        float(ds.noise_scale_true),
        ds.y.values,
    )
    assert errors["drift_error"] < 0.2
    assert errors["diffusion_error"] < 0.1
    summary = probdyn.fixed_points(model, draws, states=ds.y.values, seed=0).summary()
    found = summary[summary.p_exists > 0.9]
    assert len(found) == 3
    for (x0, x1), name in [
        ((-1.0, 0.0), "stable node"),
        ((0.0, 0.0), "saddle"),
        ((1.0, 0.0), "stable node"),
    ]:
        distance = np.hypot(found.x0_mean - x0, found.x1_mean - x1)
        row = found.loc[distance.idxmin()]
        assert distance.min() < 0.15
        assert row["class"] == name and row.p_class > 0.9


def test_diffrax_solvers_integrate_the_same_noise():
    pytest.importorskip("diffrax")
    import jax.scipy.linalg

    rng = np.random.default_rng(0)
    noise = jnp.asarray(rng.normal(size=(1 + 9 * 4, 3)))
    inputs = jnp.asarray(rng.normal(size=(10, 1)))
    euler = SDERNN(num_units=3, input_dim=1, substeps=4)
    params = _draw(euler, 1, seed=2)
    built_in = euler.latent_path(params, noise, 0.1, inputs)
    through_diffrax = SDERNN(num_units=3, input_dim=1, substeps=4, solver="Euler")
    np.testing.assert_allclose(
        through_diffrax.latent_path(params, noise, 0.1, inputs), built_in, atol=1e-10
    )
    # Without noise and with a linear unit, the path is exp((J - I) t) z0: Heun's error is
    # second order in the step, Euler's first order.
    linear = {**params, "b": jnp.zeros(3), "sigma": jnp.array(0.0)}
    quiet = noise.at[1:].set(0.0)
    exact = np.stack(
        [jax.scipy.linalg.expm((linear["J"] - jnp.eye(3)) * 0.1 * t) @ noise[0] for t in range(10)]
    )
    errors = {}
    for solver in ("euler", "Heun"):
        model = SDERNN(num_units=3, nonlinearity="linear", substeps=4, solver=solver)
        errors[solver] = np.abs(model.latent_path(linear, quiet, 0.1) - exact).max()
    assert errors["Heun"] < errors["euler"] / 10
    with pytest.raises(PriorError, match="solver='rk4'"):
        SDERNN(num_units=3, solver="rk4")
