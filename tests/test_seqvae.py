"""SeqVAE: its GRU against a hand-written one, its program, its fixed points (with a control),
the autoencoder training objective against closed forms, and held-out scores that can fail."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr

import probdyn
from probdyn.errors import ConfigError, PriorError
from probdyn.inference import log_evidence, svi
from probdyn.inference.objectives import AutoencoderELBO, OrderedTraceELBO
from probdyn.model import ModelData, Weighted, observe, prior_predictive
from probdyn.models import SeqVAE
from probdyn.models.seqvae import gru_step


def numpy_gru(Wh, Wu, bh, h, u):
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    r = sigmoid(Wh[0] @ h + Wu[0] @ u + bh[0])
    z = sigmoid(Wh[1] @ h + Wu[1] @ u + bh[1])
    n = np.tanh(Wu[2] @ u + bh[2] + r * (Wh[2] @ h + bh[3]))
    return z * h + (1 - z) * n


def test_gru_step_is_the_stated_cell():
    rng = np.random.default_rng(0)
    Wh, Wu, bh = rng.normal(size=(3, 5, 5)), rng.normal(size=(3, 5, 2)), rng.normal(size=(4, 5))
    h, u = rng.normal(size=5), rng.normal(size=2)
    got = gru_step({"Wh": Wh, "Wu": Wu, "bh": bh}, jnp.asarray(h), jnp.asarray(u))
    np.testing.assert_allclose(got, numpy_gru(Wh, Wu, bh, h, u), rtol=1e-5)
    free = gru_step({"Wh": Wh, "bh": bh}, jnp.asarray(h), None)
    np.testing.assert_allclose(free, numpy_gru(Wh, 0 * Wu, bh, h, u), rtol=1e-5)


def test_program_draws_every_site_with_its_shape():
    model = SeqVAE(num_neurons=6, generator=5, factors=3, inputs=2)
    draws = prior_predictive(model, seed=0, num_samples=2, num_trials=4, num_timesteps=7)
    assert draws["spikes"].shape == (2, 4, 7, 6)
    assert draws["latents"].shape == (2, 4, 7, 5) and draws["inputs"].shape == (2, 4, 6, 2)
    assert draws["factors"].shape == (2, 4, 7, 3) and draws["Wu"].shape == (2, 3, 5, 2)
    free = SeqVAE(num_neurons=6, generator=5, factors=3)
    assert "inputs" not in prior_predictive(
        free, seed=0, num_samples=1, num_trials=2, num_timesteps=3
    )
    # The rollout is the GRU applied bin by bin.
    params = {k: draws[k][0] for k in ("Wh", "Wu", "bh")}
    g = draws["latents"][0, 1]
    np.testing.assert_allclose(
        g[3],
        numpy_gru(params["Wh"], params["Wu"], params["bh"], g[2], draws["inputs"][0, 1, 2]),
        rtol=1e-4,
        atol=1e-6,
    )


def test_priors_and_hyperparameters_are_checked():
    SeqVAE(num_neurons=4, generator=3, priors={"Wh": dist.Normal(0.0, 0.1)})
    with pytest.raises(PriorError, match="unknown prior site"):
        SeqVAE(num_neurons=4, priors={"Wu": dist.Normal(0.0, 1.0)})  # no inputs: no Wu
    with pytest.raises(PriorError, match="inputs=-1"):
        SeqVAE(num_neurons=4, inputs=-1)
    with pytest.raises(PriorError, match="encoder_neurons"):
        SeqVAE(num_neurons=4, encoder_neurons=(0, 4))
    with pytest.raises(PriorError, match="poisson"):
        SeqVAE(num_neurons=4, observation="gaussian")


def gated_network(scale: float):
    """Wh = diag(scale) on the candidate only, every bias 0: the origin is a fixed point with
    Jacobian z I + (1 - z) r W_n = (0.5 + 0.25 scale) I (z = r = 1/2)."""
    G = 3
    Wh = np.zeros((3, G, G))
    Wh[2] = scale * np.eye(G)
    return {
        "Wh": Wh,
        "bh": np.zeros((4, G)),
        "F": np.eye(2, G),
        "C": np.ones((4, 2)),
        "c": np.zeros(4),
    }


@pytest.mark.parametrize(("scale", "expected"), [(0.5, "stable node"), (6.0, "unstable node")])
def test_generator_fixed_points_and_their_class_against_the_closed_form(scale, expected):
    # The control: the same search on a network whose origin must be unstable (radius 2).
    model = SeqVAE(num_neurons=4, generator=3, factors=2)
    params = {k: np.asarray(v)[None].repeat(2, axis=0) for k, v in gated_network(scale).items()}
    posterior = probdyn.fixed_points(
        model, params, states=np.zeros((1, 3)) + 0.01, num_starts=4, seed=0, box=None
    )
    ds = posterior.dataset
    found = np.flatnonzero(ds.exists.values[0])
    origin = [k for k in found if np.allclose(ds.location.values[0, k], 0.0, atol=1e-4)]
    assert origin, ds.location.values[0]
    summary = posterior.summary()
    assert summary.loc[origin[0], "class"] == expected
    np.testing.assert_allclose(
        ds.eigenvalue_real.values[0, origin[0], 0], 0.5 + 0.25 * scale, rtol=1e-4
    )


# -- the training objective --------------------------------------------------------------------
def toy_data(rng, missing=False):
    y = rng.poisson(2.0, size=(4, 5, 3)).astype(float)
    mask = None
    if missing:
        mask = jnp.asarray(rng.uniform(size=y.shape) > 0.2)
    return ModelData(jnp.asarray(y), mask, None, 4, 5, 3, 1.0)


def rate_program(data, batch_size=None):
    rate = numpyro.param("rate", 1.7)
    with numpyro.plate("trial", data.num_trials):
        observe("y", dist.Poisson(jnp.full(data.observations.shape, rate)), data)


def counting_guide(data, batch_size=None):
    """No latent: a factor of the number of bins the guide (the encoder) sees."""
    seen = jnp.sum(jnp.ones(data.observations.shape) if data.mask is None else data.mask)
    numpyro.factor("seen", seen)


def test_coordinated_dropout_is_unbiased_and_hides_what_it_scores():
    rng = np.random.default_rng(4)
    data = toy_data(rng, missing=True)
    reader = types.SimpleNamespace(encoder_neurons=(0, 1), encoder_bins=4)
    p, q = 0.3, 0.2
    elbo = AutoencoderELBO(reader, coordinated_dropout=p, encoder_dropout=q)
    y, mask = np.asarray(data.observations), np.asarray(data.mask)
    full = np.sum(np.where(mask, y * np.log(1.7) - 1.7 - np.vectorize(math.lgamma)(y + 1), 0.0))
    readable = np.zeros(y.shape, bool)
    readable[:, :4, :2] = True
    # The guide's mask: readable bins kept with probability (1 - p)(1 - q), the others as they
    # are (the encoder does not read them).
    seen = (1 - p) * (1 - q) * np.sum(mask & readable) + np.sum(mask & ~readable)

    def loss(key):
        return elbo.loss(key, {"rate": 1.7}, rate_program, counting_guide, data, step=0)

    losses = np.asarray(jax.vmap(loss)(jax.random.split(jax.random.key(0), 4000)))
    # -ELBO = -(weighted log likelihood) + (bins seen by the guide); its mean: -full + seen.
    assert abs(losses.mean() - (-full + seen)) < 4 * losses.std() / np.sqrt(len(losses))
    plain = OrderedTraceELBO().loss(
        jax.random.key(0), {"rate": 1.7}, rate_program, counting_guide, data
    )
    assert float(plain) == pytest.approx(-full + np.sum(mask), rel=1e-5)


def test_warmup_scales_the_latent_terms_only():
    data = toy_data(np.random.default_rng(5))

    def program(data, batch_size=None):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        with numpyro.plate("trial", data.num_trials):
            observe("y", dist.Poisson(jnp.full(data.observations.shape, jnp.exp(z))), data)

    def guide(data, batch_size=None):
        numpyro.sample("z", dist.Delta(0.5))

    elbo = AutoencoderELBO(types.SimpleNamespace(), warmup=10)
    y = np.asarray(data.observations)
    loglik = np.sum(y * 0.5 - np.exp(0.5) - np.vectorize(math.lgamma)(y + 1))
    for step, beta in ((0, 0.1), (4, 0.5), (20, 1.0)):
        loss = elbo.loss(jax.random.key(1), {}, program, guide, data, step=step)
        log_ratio = dist.Normal(0.0, 1.0).log_prob(0.5)  # log q = 0 (a point mass)
        assert float(loss) == pytest.approx(-(loglik + beta * float(log_ratio)), rel=1e-4)


def test_weighted_observations_multiply_each_bins_log_density():
    base = dist.Poisson(jnp.array([[1.0, 2.0], [3.0, 0.5]]))
    weights = jnp.array([[0.0, 2.0], [1.0, 3.3]])
    value = jnp.array([[1.0, 0.0], [4.0, 2.0]])
    np.testing.assert_allclose(
        Weighted(base, weights).log_prob(value), base.log_prob(value) * weights, rtol=1e-6
    )


def test_regularisers_need_an_encoder():
    data = xr.Dataset(
        {"spikes": (("trial", "time", "neuron"), np.ones((3, 4, 2), int))}, attrs={"dt": 0.01}
    )
    with pytest.raises(ConfigError, match="amortised"):
        svi(
            probdyn.models.LDS(latent_dim=1, observation="poisson"),
            data,
            num_steps=1,
            seed=0,
            coordinated_dropout=0.3,
            progress=False,
        )
    with pytest.raises(ConfigError, match="coordinated_dropout"):
        AutoencoderELBO(types.SimpleNamespace(), coordinated_dropout=1.0)


# -- fitted on a rotation: held-out scores that can fail ---------------------------------------
def rotation_trials(num_trials, seed, reverse=False):
    rng = np.random.default_rng(seed)
    t = np.arange(24) * 0.01
    phase = rng.uniform(0, 2 * np.pi, (num_trials, 1))
    angle = 2 * np.pi * 4 * t + phase
    latent = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    readout = np.random.default_rng(99).normal(size=(2, 8))
    spikes = rng.poisson(np.exp(latent @ readout * 0.8 - 0.3))
    if reverse:
        spikes = spikes[:, ::-1]
    return xr.Dataset(
        {"spikes": (("trial", "time", "neuron"), spikes)}, coords={"time": t}, attrs={"dt": 0.01}
    )


@pytest.fixture(scope="module")
def rotation_fit():
    model = SeqVAE(num_neurons=8, generator=8, factors=2, encoder_hidden=8)
    result = svi(
        model,
        rotation_trials(30, 0),
        num_steps=400,
        seed=0,
        guide="amortised-delta",
        learning_rate=2e-2,
        coordinated_dropout=0.2,
        warmup=50,
        progress=False,
    )
    return model, result


def test_heldout_log_likelihood_prefers_the_fitted_direction_of_time(rotation_fit):
    # The control: the same trials played backwards rotate the other way, which the fitted
    # generator does not do; their held-out log likelihood must be lower.
    model, result = rotation_fit
    forward = log_evidence(
        model, rotation_trials(8, 1), method="heldout", seed=0, svi_result=result, num_importance=40
    )
    backward = log_evidence(
        model,
        rotation_trials(8, 1, reverse=True),
        method="heldout",
        seed=0,
        svi_result=result,
        num_importance=40,
    )
    assert forward.is_bound and len(forward.diagnostics["per_trial"]) == 8
    assert sum(forward.diagnostics["per_trial"]) == pytest.approx(forward.log_evidence, rel=1e-3)
    assert forward.log_evidence - backward.log_evidence > 4 * (
        forward.standard_error + backward.standard_error
    )
    with pytest.raises(ConfigError, match="amortised"):
        log_evidence(model, rotation_trials(2, 1), method="heldout", seed=0)
