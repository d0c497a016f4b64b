"""The state-space core: one path handling per family, particle likelihoods, the posterior protocol."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr
from scipy.special import logsumexp

from probdyn import ConfigError, PriorError, fixed_points, prior_predictive
from probdyn.algorithms import particle_filter
from probdyn.algorithms.kalman import kalman_log_marginal
from probdyn.capabilities import Posterior
from probdyn.inference import (
    MCMCResult,
    PointEstimate,
    SVIResult,
    WeightPosterior,
    log_evidence,
    nuts,
    svi,
)
from probdyn.model import MARGINALS, ModelData
from probdyn.models import FAMILIES, HMM, LDS, NODE, SDERNN, FacRNN, RNNEmulator, SeqVAE
from probdyn.state_space import StateSpaceModel, filter_sequences

ROTATION = 0.95 * np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])


def fixed(**values):
    return {k: dist.Delta(jnp.asarray(v, float)).to_event(np.ndim(v)) for k, v in values.items()}


def gaussian_lds_parameters(emission_dim=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "A": ROTATION,
        "b": np.zeros(2),
        "q": np.full(2, 0.4),
        "C": rng.normal(0.0, 1.0, (emission_dim, 2)),
        "d": rng.normal(0.0, 0.5, emission_dim),
        "r": np.full(emission_dim, 0.8),
    }


def simulate(model, seed, **sizes):
    draws = prior_predictive(model, seed=seed, num_samples=1, **sizes)
    site = "spikes" if "spikes" in draws else "y"
    values = draws[site][0]
    return xr.Dataset({site: (("trial", "time", "neuron"), values)}, attrs={"dt": 1.0})


def exact_log_likelihoods(params, ds, mask=None):
    """Kalman marginal of every trial, written out from the Kalman filter itself."""
    p = {k: jnp.asarray(v) for k, v in params.items()}
    y = jnp.asarray(ds["y"].values)
    masks = [None] * len(y) if mask is None else jnp.asarray(mask)
    return np.array(
        [
            float(
                kalman_log_marginal(
                    p["A"], p["b"], jnp.diag(p["q"] ** 2), p["C"], p["d"], p["r"] ** 2, yy, mm
                )
            )
            for yy, mm in zip(y, masks, strict=True)
        ]
    )


# -- what each family declares -----------------------------------------------------------------
EXAMPLES = [
    LDS(latent_dim=2),
    LDS(latent_dim=2, observation="poisson"),
    SDERNN(num_units=4, rank=2, observation="poisson"),
    SDERNN(num_units=2, observation="latent"),
    FacRNN(num_neurons=4, num_groups=2, group_rank=1),
    FacRNN(num_neurons=4, num_groups=2, group_rank=1, decoder="relu"),
    FacRNN(num_neurons=4, num_groups=2, group_rank=1, observation="poisson", correlation=None),
    HMM(num_states=2, observation="poisson"),
    RNNEmulator(hidden=4, noise_dim=2),
    NODE(latent_dim=2, num_neurons=3),
    SeqVAE(num_neurons=3, generator=4, factors=2),
]


def test_examples_cover_every_family():
    assert {type(m).__name__ for m in EXAMPLES} == set(FAMILIES)


@pytest.mark.parametrize("model", EXAMPLES, ids=lambda m: f"{type(m).__name__}-{m.observation}")
def test_every_family_states_every_handling_and_refuses_with_its_reason(model):
    stated = model.marginals()
    assert set(stated) == set(MARGINALS)
    assert stated[model.marginal] is None  # the default is allowed
    for marginal, reason in stated.items():
        if reason is None:
            assert dataclasses.replace(model, marginal=marginal).marginal == marginal
        else:
            assert isinstance(reason, str) and reason
            with pytest.raises(PriorError, match="is not available: " + reason[:20]):
                dataclasses.replace(model, marginal=marginal)
    with pytest.raises(PriorError, match="expected one of"):
        dataclasses.replace(model, marginal="kalman")
    # Every family with a filterable path says so by its type.
    if stated["particle"] is None:
        assert isinstance(model, StateSpaceModel)


# -- the particle filter against closed forms -------------------------------------------------
def test_filtered_lds_likelihood_is_the_kalman_marginal_with_missing_bins():
    params = gaussian_lds_parameters()
    truth = LDS(parameterisation="redundant", latent_dim=2, priors=fixed(**params))
    ds = simulate(truth, 0, num_trials=3, num_timesteps=25, emission_dim=3)
    values = ds["y"].values.copy()
    values[0, 5:9, 1] = np.nan  # missing bins drop out of both
    values[2, 0, :] = np.nan
    ds["y"] = (("trial", "time", "neuron"), values)
    exact = exact_log_likelihoods(params, ds, ~np.isnan(values))
    model = LDS(parameterisation="redundant", latent_dim=2, marginal="particle")
    estimate, se = model.particle_log_likelihood(
        params, ds, num_particles=4000, num_repeats=8, seed=1
    )
    assert np.all(se < 0.1)
    np.testing.assert_allclose(estimate, exact, atol=4 * se.max() + 0.02)
    # The program's own observation site under marginal="particle" gives the same estimates.
    site = numpyro.infer.log_likelihood(
        numpyro.handlers.seed(dataclasses.replace(model, num_particles=4000).program, 3),
        {k: jnp.asarray(v)[None] for k, v in params.items()},
        model.prepare(ds),
    )["y"]
    np.testing.assert_allclose(np.asarray(site)[0], exact, atol=0.3)


def test_filter_items_pair_each_bin_with_the_previous_input():
    inputs = jnp.arange(12.0).reshape(2, 3, 2)
    data = ModelData(jnp.zeros((2, 3, 1)), None, inputs, 2, 3, 1, 1.0)
    items = filter_sequences(data)
    np.testing.assert_array_equal(items.previous_input[:, 1:], inputs[:, :-1])
    np.testing.assert_array_equal(items.previous_input[:, 0], 0.0)


def test_sdernn_filter_uses_the_sampled_path_transition():
    # With negligible diffusion and a known start the filter's path is the sampled path, so the
    # filtered likelihood equals the emission likelihood along latent_path: inputs and substeps
    # are handled alike by both.
    model = SDERNN(num_units=3, nonlinearity="tanh", input_dim=1, substeps=3, marginal="particle")
    rng = np.random.default_rng(2)
    params = {
        "J": jnp.asarray(rng.normal(0, 0.8, (3, 3))),
        "b": jnp.asarray(rng.normal(0, 0.3, 3)),
        "B": jnp.asarray(rng.normal(0, 1.0, (3, 1))),
        "sigma": jnp.asarray(1e-9),
        "C": jnp.asarray(rng.normal(0, 1.0, (2, 3))),
        "d": jnp.zeros(2),
        "r": jnp.full(2, 0.5),
    }
    T, dt = 8, 0.2
    u = jnp.asarray(rng.normal(size=(1, T, 1)))
    start = jnp.asarray([0.3, -0.2, 0.1])
    noise = jnp.zeros((1 + (T - 1) * 3, 3)).at[0].set(start)
    path = model.latent_path(params, noise, dt, u[0])
    y = path @ params["C"].T + 0.1
    expected = dist.Normal(path @ params["C"].T, 0.5).log_prob(y).sum()
    data = ModelData(y[None], None, u, 1, T, 2, dt)
    _, transition, log_observation = model.filter_parts(params, dt)
    value = particle_filter.log_likelihood_estimate(
        jax.random.key(0),
        lambda key, num: jnp.broadcast_to(start, (num, 3)),
        transition,
        log_observation,
        jax.tree.map(lambda a: a[0], filter_sequences(data)),
        8,
    )
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-6)


# -- inference methods and the one option -------------------------------------------------------
def test_methods_that_need_a_deterministic_density_refuse_a_filtered_path():
    ds = simulate(
        LDS(parameterisation="redundant", latent_dim=2, priors=fixed(**gaussian_lds_parameters())),
        0,
        num_trials=2,
        num_timesteps=6,
        emission_dim=3,
    )
    model = LDS(parameterisation="redundant", latent_dim=2, marginal="particle")
    with pytest.raises(ConfigError, match="NUTS needs a deterministic log density"):
        nuts(model, ds, num_warmup=2, num_samples=2, seed=0)
    for method in ("smc", "laplace", "bridge", "exact"):
        with pytest.raises(ConfigError, match="deterministic log density"):
            log_evidence(model, ds, method=method, seed=0)
    with pytest.raises(ConfigError, match="numpyro.handlers.seed"):
        numpyro.infer.util.log_density(
            model.program, (model.prepare(ds),), {}, gaussian_lds_parameters()
        )


class Draws:
    """A posterior given by its draws (the protocol, for closed-form checks)."""

    def __init__(self, draws):
        self._draws = draws

    def draws(self, num_draws=None, *, seed=0):
        return self._draws

    def to_arviz(self):
        raise NotImplementedError


def test_predictive_score_is_the_per_trial_average_over_draws():
    params = gaussian_lds_parameters()
    ds = simulate(
        LDS(parameterisation="redundant", latent_dim=2, priors=fixed(**params)),
        1,
        num_trials=4,
        num_timesteps=15,
        emission_dim=3,
    )
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.3, 0.6, size=(6, 2))
    draws = {k: np.broadcast_to(v, (6, *np.shape(v))).copy() for k, v in params.items()}
    draws["q"] = scales
    model = LDS(parameterisation="redundant", latent_dim=2)
    result = log_evidence(model, ds, method="predictive", seed=0, posterior=Draws(draws))
    table = np.array(
        [exact_log_likelihoods({k: v[i] for k, v in draws.items()}, ds) for i in range(6)]
    )
    per_trial = logsumexp(table, axis=0) - np.log(6)
    np.testing.assert_allclose(result.diagnostics["per_trial"], per_trial, rtol=1e-8)
    assert result.log_evidence == pytest.approx(per_trial.sum(), rel=1e-10)
    joint = logsumexp(table.sum(axis=1)) - np.log(6)
    assert result.diagnostics["joint"] == pytest.approx(joint, rel=1e-10)
    # The filter's estimate of the same score agrees within its error.
    filtered = log_evidence(
        LDS(parameterisation="redundant", latent_dim=2, marginal="particle", num_particles=3000),
        ds,
        method="predictive",
        seed=0,
        posterior=Draws(draws),
    )
    assert abs(filtered.log_evidence - result.log_evidence) < 4 * filtered.standard_error + 0.1
    with pytest.raises(ConfigError, match="marginal='particle'"):
        log_evidence(
            LDS(parameterisation="redundant", latent_dim=2, marginal="sample"),
            ds,
            method="predictive",
            seed=0,
            posterior=Draws(draws),
        )
    with pytest.raises(ConfigError, match="needs posterior="):
        log_evidence(model, ds, method="predictive", seed=0, posterior=draws)


@pytest.mark.slow
def test_particle_svi_recovers_a_rotation_and_not_from_shuffled_bins():
    rng = np.random.default_rng(0)
    params = {
        "A": ROTATION,
        "b": np.zeros(2),
        "q": np.full(2, 0.3),
        "C": rng.normal(0.0, 0.6, (8, 2)),
        "d": np.full(8, -0.3),
    }
    ds = simulate(
        LDS(
            parameterisation="redundant",
            latent_dim=2,
            observation="poisson",
            priors=fixed(**params),
        ),
        0,
        num_trials=20,
        num_timesteps=40,
        emission_dim=8,
    )
    model = LDS(
        parameterisation="redundant",
        latent_dim=2,
        observation="poisson",
        marginal="particle",
        num_particles=32,
    )
    fit = svi(model, ds, num_steps=800, seed=0, progress=False)
    radius = np.abs(np.linalg.eigvals(np.median(fit.draws(100, seed=1)["A"], axis=0)))
    assert np.all(np.abs(radius - 0.95) < 0.06), radius
    # Control: the same counts with their bins shuffled in time carry no dynamics.
    order = np.random.default_rng(1).permutation(ds.sizes["time"])
    shuffled = ds.isel(time=order).assign_coords(time=ds["time"])
    control = svi(model, shuffled, num_steps=800, seed=0, progress=False)
    control_radius = np.abs(np.linalg.eigvals(np.median(control.draws(100, seed=1)["A"], axis=0)))
    assert np.all(control_radius < 0.6), control_radius


# -- one posterior protocol --------------------------------------------------------------------
def test_every_result_type_is_a_posterior_that_fixed_points_accepts():
    for kind in (SVIResult, MCMCResult, PointEstimate, WeightPosterior):
        assert hasattr(kind, "draws") and hasattr(kind, "to_arviz")
    params = gaussian_lds_parameters()
    ds = simulate(
        LDS(parameterisation="redundant", latent_dim=2, priors=fixed(**params)),
        0,
        num_trials=2,
        num_timesteps=6,
        emission_dim=3,
    )
    model = LDS(parameterisation="redundant", latent_dim=2)
    point = PointEstimate(
        {k: np.asarray(v) for k, v in params.items()}, np.zeros(3), model=model, data=ds
    )
    spread = WeightPosterior(
        {k: np.asarray(v) for k, v in params.items()},
        {k: np.full(np.shape(v), 1e-3) for k, v in params.items()},
        np.zeros(3),
        model=model,
        data=ds,
    )
    for result in (point, spread):
        assert isinstance(result, Posterior)
        found = fixed_points(model, result, num_starts=4, num_draws=3)
        # A = rotation, b = 0: the one fixed point is the origin, a stable spiral.
        assert found.dataset.sizes["fixed_point"] == 1
        tree = result.to_arviz(predictive=False)
        np.testing.assert_allclose(tree["posterior"]["A"].values[0, 0], params["A"], atol=0.01)
        assert tree["observed_data"]["y"].shape == (2, 6, 3)
    assert point.draws(50)["A"].shape == (1, 2, 2)  # a point mass is one draw
    with pytest.raises(ConfigError, match="does not know its model"):
        PointEstimate(point.params, np.zeros(3)).to_arviz()
