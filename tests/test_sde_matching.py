"""State-dependent diffusion and drift-diffusion matching of a given SDE (match_sde)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from scipy import stats

import probdyn
from probdyn.algorithms.sde import EulerMaruyamaPath, matching_errors, noise_covariance
from probdyn.data import systems
from probdyn.data.integrate import euler_maruyama_path
from probdyn.errors import ConfigError, PriorError
from probdyn.inference import match_sde
from probdyn.models import SDERNN


def _draw(model, seed=0):
    priors = model.site_priors(model.latent_dim)
    keys = jax.random.split(jax.random.key(seed), len(priors))
    return {name: prior.sample(k) for k, (name, prior) in zip(keys, priors.items(), strict=True)}


def test_multiplicative_noise_is_integrated_in_the_ito_sense():
    # dx = -x dt + s x dW (Ito): E[x_t^2] = x_0^2 exp((s^2 - 2) t); a Stratonovich reading
    # would add s^2/2 to the drift and give exp(2 s^2 - 2) t instead.
    s, t = 0.8, 1.0
    keys = jax.random.split(jax.random.key(0), 4000)
    ends = jax.vmap(
        lambda k: euler_maruyama_path(
            lambda x: -x, jnp.ones(1), lambda x: s * x, k, num_points=2, interval=t, substeps=200
        )[-1, 0]
    )(keys)
    squares = np.asarray(ends) ** 2
    exact = np.exp((s**2 - 2) * t)
    error = squares.std() / np.sqrt(squares.size)
    assert abs(squares.mean() - exact) < 4 * error + 0.01
    assert abs(squares.mean() - np.exp((2 * s**2 - 2) * t)) > 10 * error


def test_path_density_with_state_dependent_noise_against_brute_force():
    def drift(z, u):
        return jnp.array([z[1], -z[0] - 0.3 * z[1]])

    def factor(z):
        return jnp.array([[0.5 + z[0] ** 2, 0.0], [0.2 * z[1], 0.4 + 0.1 * z[0] ** 2]])

    path = np.asarray(jax.random.normal(jax.random.key(1), (6, 2)))
    dt = 0.1
    density = EulerMaruyamaPath(drift, factor, dt, 6, dim=2)
    expected = stats.norm.logpdf(path[0]).sum()
    for t in range(5):
        L = np.asarray(factor(path[t]))
        mean = path[t] + dt * np.asarray(drift(path[t], None))
        expected += stats.multivariate_normal(mean, dt * L @ L.T).logpdf(path[t + 1])
    assert float(density.log_prob(jnp.asarray(path))) == pytest.approx(expected, rel=1e-10)
    assert density.sample(jax.random.key(2), (3,)).shape == (3, 6, 2)
    with pytest.raises(ConfigError, match="dim="):
        EulerMaruyamaPath(drift, factor, dt, 6)


def test_a_state_dependent_diffusion_is_a_cholesky_factor_of_the_readout():
    model = SDERNN(num_units=8, rank=2, diffusion="state", observation="gaussian", emission_dim=3)
    assert model.parameterisation == "redundant"
    params = _draw(model)
    assert params["K"].shape == (8, 3) and params["g"].shape == (3,)
    factors = jax.vmap(model.noise_factor(params))(jax.random.normal(jax.random.key(1), (20, 2)))
    assert np.all(np.triu(np.asarray(factors), 1) == 0)
    assert np.all(np.diagonal(np.asarray(factors), axis1=1, axis2=2) > 0)
    assert np.ptp(np.asarray(factors)[:, 1, 0]) > 1e-3  # it does depend on the state
    with pytest.raises(PriorError, match="noise_factor"):
        model.diffusion_tril(params)
    with pytest.raises(PriorError, match="no canonical form"):
        SDERNN(num_units=8, rank=2, diffusion="state", parameterisation="canonical")
    with pytest.raises(PriorError, match="one form"):
        model.canonical_form(params)
    # The program runs with it: paths from the prior, through the readout.
    data = probdyn.prior_predictive(model, seed=0, num_samples=2, num_trials=3, num_timesteps=20)
    assert np.isfinite(data["y"]).all()


def test_observed_paths_are_scored_by_the_state_dependent_transition_density():
    import numpyro

    model = SDERNN(num_units=6, rank=2, diffusion="state", observation="latent")
    params = _draw(model, seed=2)
    paths = np.asarray(jax.random.normal(jax.random.key(3), (3, 8, 2)))
    ds = probdyn.data.validate(
        xr.Dataset({"y": (("trial", "time", "neuron"), paths)}, attrs={"dt": 0.1}), "gaussian"
    )
    log_joint, _ = numpyro.infer.util.log_density(model.program, (model.prepare(ds),), {}, params)
    log_prior = sum(
        float(prior.log_prob(params[name])) for name, prior in model.site_priors(2).items()
    )
    density = EulerMaruyamaPath(
        lambda z, u: model.drift(params)(z), model.noise_factor(params), 0.1, 8, dim=2
    )
    expected = float(density.log_prob(jnp.asarray(paths)).sum())
    assert float(log_joint) - log_prior == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("diffusion", ["state", "diagonal", "isotropic", "lowrank"])
def test_with_constant_noise_sets_the_factor_everywhere(diffusion):
    model = SDERNN(num_units=6, rank=2, diffusion=diffusion, observation="latent", tau=0.5)
    target = (
        jnp.array([[0.3, 0.0], [0.1, 0.2]])
        if diffusion == "state"
        else jnp.diag(jnp.array([0.3, 0.3 if diffusion == "isotropic" else 0.2]))
    )
    params = model.with_constant_noise(_draw(model), target)
    for z in (jnp.zeros(2), jnp.array([1.5, -2.0])):
        np.testing.assert_allclose(model.noise_factor(params)(z), target, atol=1e-6)


def test_noise_covariance_reads_every_form():
    x = jnp.array([2.0, 1.0])
    np.testing.assert_allclose(noise_covariance(0.5, 2)(x), 0.25 * np.eye(2))
    np.testing.assert_allclose(noise_covariance(jnp.array([1.0, 2.0]), 2)(x), np.diag([1, 4]))
    G = jnp.array([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    np.testing.assert_allclose(noise_covariance(G, 2)(x), G @ G.T)
    np.testing.assert_allclose(noise_covariance(lambda y: y, 2)(x), np.diag([4.0, 1.0]))
    with pytest.raises(ConfigError, match="expected"):
        noise_covariance(jnp.ones(3), 2)


def test_matching_errors_vanish_for_the_network_itself():
    model = SDERNN(num_units=10, rank=2, diffusion="state", observation="latent")
    params = _draw(model, seed=4)
    states = jax.random.normal(jax.random.key(5), (300, 2))
    draws = {k: v[None] for k, v in params.items()}
    errors = matching_errors(
        model, draws, model.drift(params), model.noise_factor(params), states, on="states"
    )
    assert errors["drift_error"] < 1e-12 and errors["diffusion_error"] < 1e-12


@pytest.mark.slow
def test_matching_carries_multiplicative_noise_where_a_constant_noise_cannot():
    # The double well with state-dependent noise (docs/models/sdernn.md): a network with
    # state-dependent diffusion matches drift and noise on held-out states; the same network
    # with constant noise matches the drift but cannot carry the noise (the control).
    spec = systems.SDE_SYSTEMS["double_well_multiplicative"]

    def drift(x):
        return spec.drift(x, spec.parameters)

    noise = spec.noise_factor()

    def states(seed):
        ds = probdyn.data.simulate_sde(
            "double_well_multiplicative", num_trials=40, num_timesteps=300, seed=seed
        )
        return ds.y.values[:, 100:]

    train, held_out = states(0), states(1)
    errors = {}
    for diffusion in ("state", "diagonal"):
        model = SDERNN(num_units=24, rank=2, diffusion=diffusion, observation="latent")
        fit = match_sde(
            model,
            drift,
            noise,
            train,
            seed=0,
            num_steps=2000,
            learning_rate=3e-2,
            batch_size=512,
            progress=False,
        )
        assert fit.losses[-50:].mean() < 0.1 * fit.losses[:50].mean()
        errors[diffusion] = matching_errors(model, fit.draws(), drift, noise, held_out, on="states")
    assert errors["state"]["drift_error"] < 0.15
    assert errors["state"]["diffusion_error"] < 0.1
    assert errors["diagonal"]["drift_error"] < 0.15
    assert errors["diagonal"]["diffusion_error"] > 0.25


def test_match_sde_refuses_what_it_cannot_match():
    model = SDERNN(num_units=6, rank=2, observation="latent")
    with pytest.raises(ConfigError, match="latent space"):
        match_sde(model, lambda x: -x, 0.5, np.zeros((10, 3)), seed=0, num_steps=2)
    with pytest.raises(ConfigError, match="finite"):
        match_sde(model, lambda x: -x, 0.5, np.full((10, 2), np.nan), seed=0, num_steps=2)
    with pytest.raises(ConfigError, match="not finite"):
        match_sde(model, lambda x: x / 0.0, 0.5, np.ones((10, 2)), seed=0, num_steps=2)
