"""HMM emulators: Sinkhorn divergence, particle filter, the RNN emulator, symbol statistics."""

import itertools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
import xarray as xr
from tqdm.auto import tqdm

import probdyn
from probdyn.algorithms import particle_filter
from probdyn.algorithms.hmm import DiscreteHMM
from probdyn.algorithms.optimal_transport import sinkhorn_divergence
from probdyn.analysis.symbols import symbol_statistics
from probdyn.errors import ConfigError, DataError, PriorError
from probdyn.inference import (
    fit_particle_filter,
    fit_particle_filter_posterior,
    fit_sinkhorn,
    svi,
)
from probdyn.inference.point_estimate import FitOptions, minimise
from probdyn.model import ModelData
from probdyn.models import RNNEmulator


# -- Sinkhorn divergence ---------------------------------------------------------------------
def test_sinkhorn_divergence_of_two_diracs_is_half_the_squared_distance():
    x, y = jnp.array([[0.0, 1.0, 2.0]]), jnp.array([[1.0, -1.0, 0.5]])
    assert float(sinkhorn_divergence(x, y)) == pytest.approx(0.5 * 7.25, rel=1e-6)
    assert float(sinkhorn_divergence(x, x)) == pytest.approx(0.0, abs=1e-9)


def test_sinkhorn_divergence_tends_to_the_optimal_assignment_as_the_blur_vanishes():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(5, 2)) + 1.0
    cost = 0.5 * ((x[:, None] - y[None]) ** 2).sum(-1)
    exact = min(np.mean(cost[np.arange(5), list(p)]) for p in itertools.permutations(range(5)))
    got = float(sinkhorn_divergence(jnp.asarray(x), jnp.asarray(y), blur=0.01, num_iterations=200))
    assert got == pytest.approx(exact, rel=1e-3)


def test_sinkhorn_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    x, y = jnp.asarray(rng.normal(size=(6, 3))), jnp.asarray(rng.normal(size=(7, 3)))

    def value(x):
        return sinkhorn_divergence(x, y, blur=0.3, num_iterations=3000)

    grad = np.asarray(jax.grad(value)(x))
    h, index = 1e-5, (2, 1)
    step = jnp.zeros_like(x).at[index].set(h)
    numeric = (float(value(x + step)) - float(value(x - step))) / (2 * h)
    assert grad[index] == pytest.approx(numeric, rel=1e-6)


# -- particle filter -------------------------------------------------------------------------
def test_particle_filter_matches_the_forward_algorithm_on_an_hmm():
    initial = jnp.array([0.6, 0.3, 0.1])
    transition = jnp.array([[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]])
    emission = jnp.array([[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7]])
    hmm = DiscreteHMM(
        jnp.log(initial),
        jnp.log(transition),
        probdyn.algorithms.hmm.dist.Categorical(probs=emission),
        num_steps=12,
    )
    symbols = hmm.sample(jax.random.key(0), (6,))  # (sequence, time)
    exact = np.asarray(hmm.log_prob(symbols))

    def first(key, num):
        # Pyro's convention, which DiscreteHMM keeps: `initial` is the state at time -1.
        key_start, key_move = jax.random.split(key)
        return move(key_move, jax.random.categorical(key_start, jnp.log(initial), shape=(num,)))

    def move(key, states, _=None):
        return jax.random.categorical(key, jnp.log(transition)[states])

    def observe(states, y):
        return jnp.log(emission)[states, y]

    estimate, se = particle_filter.log_likelihood(
        first, move, observe, symbols, num_particles=2000, num_repeats=8, seed=1
    )
    assert np.all(se < 0.05)
    np.testing.assert_allclose(estimate, exact, atol=4 * se.max() + 1e-3)


def test_particle_filter_is_exact_when_every_particle_agrees():
    # No input weights: the hidden state stays at zero and every symbol has probability 1/S.
    model = RNNEmulator(hidden=4, noise_dim=2, num_symbols=3)
    params = {"W_in": jnp.zeros((4, 2)), "W_hh": jnp.eye(4), "W_out": jnp.ones((3, 4))}
    symbols = jnp.array([[0, 1, 2, 2, 1], [1, 1, 1, 0, 0]])
    estimate, se = model.log_likelihood(params, symbols, num_particles=10)
    np.testing.assert_allclose(estimate, -5 * np.log(3), atol=1e-12)
    np.testing.assert_allclose(se, 0.0, atol=1e-12)


def test_rnn_likelihood_matches_quadrature_for_independent_steps():
    # W_hh = 0: h_t = relu(w xi_t) independently per step, so p(y) is a product of 1-D
    # integrals over xi ~ N(0, 1), done here by Gauss-Hermite quadrature.
    model = RNNEmulator(hidden=1, noise_dim=1, num_symbols=2)
    params = {
        "W_in": jnp.array([[1.5]]),
        "W_hh": jnp.zeros((1, 1)),
        "W_out": jnp.array([[2.0], [-1.0]]),
    }
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    h = np.maximum(1.5 * nodes, 0.0)
    logits = np.stack([2.0 * h, -1.0 * h], axis=-1)
    probs = np.exp(logits - np.logaddexp(logits[:, 0], logits[:, 1])[:, None])
    per_symbol = weights @ probs / weights.sum()
    symbols = np.array([[0, 0, 1, 0, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0]])
    exact = np.log(per_symbol)[symbols].sum(axis=1)
    estimate, se = model.log_likelihood(params, symbols, num_particles=4000, num_repeats=8)
    np.testing.assert_allclose(estimate, exact, atol=4 * se.max() + 1e-3)


def test_resampling_gradient_is_the_likelihood_gradient_and_fivo_is_not():
    # Linear-Gaussian chain h_0 ~ N(0, 1), h_t = a h_{t-1} + s xi_t, y_t ~ N(h_t, 0.5^2): the
    # Kalman filter gives log p(y) and its gradient in (a, s) exactly. The filter's gradient,
    # averaged over independent runs, must match it with the resampling term; without it
    # (FIVO's gradient) it must miss, by a bias that more particles do not remove.
    rng = np.random.default_rng(1)
    T, r = 20, 0.5
    h = np.zeros(T)
    h[0] = rng.normal()
    for t in range(1, T):
        h[t] = 0.8 * h[t - 1] + 0.7 * rng.normal()
    y = jnp.asarray(h + r * rng.normal(size=T))

    def exact(theta):
        a, s = theta
        one = jnp.ones((1, 1))
        return probdyn.algorithms.kalman.kalman_log_marginal(
            a * one, jnp.zeros(1), s**2 * one, one, jnp.zeros(1), jnp.array([r**2]), y[:, None]
        )

    def estimate(key, theta, resampling_gradient):
        a, s = theta
        return particle_filter.log_likelihood_estimate(
            key,
            lambda key, num: jax.random.normal(key, (num,)),
            lambda key, h, _: a * h + s * jax.random.normal(key, h.shape),
            lambda h, y_t: jax.scipy.stats.norm.logpdf(y_t, h, r),
            y,
            num_particles=1000,
            resampling_gradient=resampling_gradient,
        )

    theta = jnp.array([0.8, 0.7])
    keys = jax.random.split(jax.random.key(0), 300)
    truth = np.asarray(jax.grad(exact)(theta))
    runs = {}
    for consistent in (True, False):
        value_and_grad = jax.value_and_grad(lambda k, th, c=consistent: estimate(k, th, c), 1)
        runs[consistent] = jax.jit(jax.vmap(value_and_grad, in_axes=(0, None)))(keys, theta)
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-13)  # the same log Z
    for consistent, (_, grads) in runs.items():
        grads = np.asarray(grads)
        error = np.abs(grads.mean(0) - truth) / (grads.std(0, ddof=1) / np.sqrt(len(keys)))
        assert np.all(error < 4) if consistent else np.any(error > 8), (consistent, error)


# -- the emulator ----------------------------------------------------------------------------
def test_emulator_program_and_generation():
    model = RNNEmulator(hidden=6, noise_dim=3, num_symbols=3)
    ds = probdyn.data.simulate_hmm("linear", num_trials=4, num_timesteps=12, seed=0)
    draws = probdyn.prior_predictive(model, data=ds, num_samples=2, seed=0)
    assert draws["symbols"].shape == (2, 4, 12)
    params = {name: draws[name][0] for name in ("W_in", "W_hh", "W_out")}
    symbols, hidden = model.generate(params, jax.random.key(1), 5, 8)
    assert symbols.shape == (5, 8) and hidden.shape == (5, 8, 6) and (hidden >= 0).all()
    # Zero is a fixed point of the noise-free map.
    np.testing.assert_array_equal(model.vector_field(params, jnp.zeros(6)), 0.0)


def test_fits_start_at_the_fan_in_scale_whatever_the_priors():
    wide = {"W_hh": dist.Normal(jnp.zeros((200, 200)), 3.0 / np.sqrt(200))}
    model = RNNEmulator(hidden=200, noise_dim=50, num_symbols=3, priors=wide)
    start = model.initial_weights(jax.random.key(0))
    same = RNNEmulator(hidden=200, noise_dim=50, num_symbols=3).initial_weights(jax.random.key(0))
    for name, fan_in in {"W_in": 50, "W_hh": 200, "W_out": 200}.items():
        np.testing.assert_array_equal(start[name], same[name])
        # sd 1/sqrt(fan_in), estimated from >= 600 entries to within 4 standard errors
        count = start[name].size
        assert abs(np.std(start[name]) * np.sqrt(fan_in) - 1) < 4 / np.sqrt(2 * count)
    # A draw from the wide prior would start at spectral radius ~3 (circular law); this one ~1.
    assert np.max(np.abs(np.linalg.eigvals(np.asarray(start["W_hh"])))) < 1.2


def test_noise_path_encoder_reads_the_symbols_in_both_directions():
    model = RNNEmulator(hidden=6, noise_dim=3, num_symbols=3, encoder_hidden=5)
    symbols = jnp.array([[0.0, 2, 2, 1, 0, 0], [1.0, 1, 0, 0, 2, 2]])
    ones = jnp.ones_like(symbols)
    encoder = model.encoder()
    weights = encoder.init(jax.random.key(0), symbols, ones)
    loc, scale = encoder.apply(weights, symbols, ones)
    assert loc.shape == scale.shape == (2, 6, 3) and (scale > 0).all()
    first_changed = encoder.apply(weights, symbols.at[0, 0].set(1.0), ones)[0]
    last_changed = encoder.apply(weights, symbols.at[0, -1].set(2.0), ones)[0]
    assert not np.allclose(first_changed[0, -1], loc[0, -1])  # forward GRU
    assert not np.allclose(last_changed[0, 0], loc[0, 0])  # backward GRU
    np.testing.assert_array_equal(first_changed[1], loc[1])  # trials stay apart


def test_emulator_fits_by_the_evidence_bound_with_an_amortised_noise_guide():
    model = RNNEmulator(hidden=6, noise_dim=3, num_symbols=3, encoder_hidden=5)
    ds = probdyn.data.simulate_hmm("linear", num_trials=8, num_timesteps=12, seed=0)
    fit = svi(model, ds, num_steps=400, seed=0, guide="amortised-delta", progress=False)
    assert fit.losses[-50:].mean() < fit.losses[:50].mean() - 1.0
    loc, scale = fit.encode()
    assert loc.shape == scale.shape == (8, 12, 3)
    draws = fit.sample_posterior(2, seed=1)
    assert draws["noise"].shape == (2, 8, 12, 3) and draws["W_hh"].shape == (2, 6, 6)
    with pytest.raises(ConfigError, match="refine needs a vector per trial at site 'noise'"):
        fit.sample_posterior(2, seed=1, data=ds, refine=5)


def test_sinkhorn_fit_learns_the_symbol_frequencies():
    symbols = np.zeros((64, 6), dtype=int)
    symbols[:, ::3] = 2  # symbol 0 two thirds of the time, symbol 2 one third, never 1
    ds = xr.Dataset({"symbols": (("trial", "time"), symbols)}, attrs={"dt": 0.1})
    model = RNNEmulator(hidden=8, noise_dim=3, num_symbols=3)
    fit = fit_sinkhorn(
        model, ds, seed=0, num_steps=300, batch_size=32, learning_rate=1e-2, progress=False
    )
    assert fit.losses[-20:].mean() < 0.5 * fit.losses[:20].mean()
    generated, _ = model.generate(fit.params, jax.random.key(1), 500, 6)
    frequency = np.bincount(np.asarray(generated).ravel(), minlength=3) / generated.size
    np.testing.assert_allclose(frequency, [2 / 3, 0.0, 1 / 3], atol=0.1)


def test_emulator_fit_by_the_particle_filter_closes_most_of_the_gap_to_the_true_hmm():
    train = probdyn.data.simulate_hmm("linear", num_trials=200, num_timesteps=20, seed=0)
    test = probdyn.data.simulate_hmm("linear", num_trials=100, num_timesteps=20, seed=1)
    model = RNNEmulator(hidden=16, noise_dim=4, num_symbols=3)
    priors = model.site_priors(3)
    keys = jax.random.split(jax.random.key(5), len(priors))
    init = {name: prior.sample(k) for (name, prior), k in zip(priors.items(), keys, strict=True)}
    fit = fit_particle_filter(
        model,
        train,
        seed=0,
        num_steps=300,
        batch_size=16,
        num_particles=8,
        learning_rate=1e-2,
        init=init,
        progress=False,
    )
    assert fit.losses[-20:].mean() < fit.losses[:20].mean()
    before, _ = model.log_likelihood(init, test.symbols.values, num_particles=200)
    after, _ = model.log_likelihood(fit.params, test.symbols.values, num_particles=200)
    initial, transition, emission = probdyn.data.hmm_architecture("linear")
    hmm = DiscreteHMM(
        jnp.log(jnp.asarray(initial)),
        jnp.log(jnp.clip(jnp.asarray(transition), 1e-30)),
        probdyn.algorithms.hmm.dist.Categorical(probs=jnp.asarray(emission)),
        num_steps=20,
        initial_step=0,
    )
    exact = np.asarray(hmm.log_prob(jnp.asarray(test.symbols.values))).mean()
    # Held-out nats per sequence: from about 9 below the true HMM to within 15% of that.
    assert exact - after.mean() < 0.15 * (exact - before.mean())
    with pytest.raises(ConfigError, match="num_particles=1"):
        fit_particle_filter(model, train, seed=0, num_particles=1)
    with pytest.raises(ConfigError, match="batch_size=0"):
        fit_particle_filter(model, train, seed=0, batch_size=0)
    with pytest.raises(ConfigError, match=r"unknown fit option\(s\) \['num_step'\]"):
        fit_particle_filter(model, train, seed=0, num_step=10)


def test_minimise_returns_the_mean_of_the_last_iterates():
    # Gradient descent on (w - c)^2 / 2 with rate eta: w_s = c + (w_0 - c)(1 - eta)^s.
    c, w0, eta, num_steps, m = 2.0, -1.0, 0.1, 30, 12
    iterates = c + (w0 - c) * (1 - eta) ** np.arange(1, num_steps + 1)

    def fit(average_over):
        return minimise(
            lambda params, key: 0.5 * (params["w"] - c) ** 2,
            None,
            seed=0,
            optimizer=optax.sgd(eta),
            init={"w": jnp.asarray(w0)},
            label="quadratic",
            settings={},
            options=FitOptions(num_steps=num_steps, progress=False, average_over=average_over),
        )

    averaged, last = fit(m), fit(0)
    np.testing.assert_allclose(averaged.params["w"], iterates[-m:].mean(), rtol=1e-6)
    np.testing.assert_allclose(last.params["w"], iterates[-1], rtol=1e-6)
    np.testing.assert_allclose(averaged.losses, 0.5 * (np.r_[w0, iterates[:-1]] - c) ** 2, 1e-5)
    for wrong in (-1, num_steps + 1):
        with pytest.raises(ConfigError, match=f"average_over={wrong}"):
            fit(wrong)


def test_particle_filter_fit_resumes_from_its_checkpoint_exactly(tmp_path, monkeypatch):
    train = probdyn.data.simulate_hmm("linear", num_trials=20, num_timesteps=10, seed=0)
    model = RNNEmulator(hidden=4, noise_dim=2, num_symbols=3)
    # the weights returned average the last 15 steps, which the stop at step 25 cuts in two
    options = dict(
        seed=3, num_steps=30, batch_size=4, num_particles=4, average_over=15, progress=False
    )
    whole = fit_particle_filter(model, train, **options)

    class Interrupted(Exception):
        pass

    class StopAfter25Steps(tqdm):
        def update(self, n=1):
            self.steps = getattr(self, "steps", 0) + n
            if self.steps == 25:
                raise Interrupted

    path = tmp_path / "fit.checkpoint"
    loop = sys.modules["probdyn.inference.point_estimate"]
    monkeypatch.setattr(loop, "tqdm", StopAfter25Steps)
    with pytest.raises(Interrupted):
        fit_particle_filter(model, train, checkpoint=path, checkpoint_every=10, **options)
    monkeypatch.undo()
    with np.load(path, allow_pickle=False) as archive:  # the last checkpoint before the stop
        assert json.loads(archive["header"].tobytes())["step"] == 20
    resumed = fit_particle_filter(model, train, checkpoint=path, checkpoint_every=10, **options)
    assert resumed.resumed_from == 20 and whole.resumed_from == 0
    for name, value in whole.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    others = (
        dict(seed=4),
        dict(num_particles=8),
        dict(num_steps=40),
        dict(learning_rate=1e-3),
        dict(resampling_gradient=False),
        dict(average_over=0),
    )
    for other in others:
        with pytest.raises(ConfigError, match="other arguments or data"):
            fit_particle_filter(model, train, checkpoint=path, **dict(options, **other))


class GaussianMean:
    """y_{n,t} ~ N(mu, I) independently: the state carries nothing, so the filter is exact."""

    def as_data(self, data):
        return data

    def site_priors(self, _):
        return {"mu": dist.Normal(jnp.zeros(2), 0.1).to_event(1)}

    def filter_parts(self, params, dt):
        def log_observation(states, item):
            value = dist.Normal(params["mu"], 1.0).log_prob(item.observation).sum()
            return jnp.broadcast_to(value, states.shape[:1])

        def transition(key, states, item):
            return states

        return (lambda key, num: jnp.zeros((num, 1))), transition, log_observation


def test_weight_posterior_by_the_filter_bound_is_the_conjugate_posterior():
    # With an exact likelihood the bound is the ELBO, and for a Gaussian mean under a Gaussian
    # prior the mean-field optimum is the posterior: precision N T + 1 / 0.1^2, mean sum(y) /
    # that. The prior is as strong as half the data and each step sees half the sequences, so
    # a missing prior, entropy or N / B factor moves the answer by many standard deviations.
    y = np.random.default_rng(0).normal([1.0, -0.5], 1.0, size=(10, 20, 2))
    data = ModelData(jnp.asarray(y), None, None, 10, 20, 2, 1.0)
    precision = y.shape[0] * y.shape[1] + 100.0
    mean, sd = y.sum(axis=(0, 1)) / precision, precision**-0.5
    posterior = fit_particle_filter_posterior(
        GaussianMean(),
        data,
        {"mu": jnp.zeros(2)},
        seed=0,
        num_steps=2000,
        batch_size=5,
        num_particles=2,
        learning_rate=1e-2,
        progress=False,
    )
    # Stochastic optimisation leaves the mean within about 0.15 sd over seeds (measured).
    np.testing.assert_allclose(posterior.loc["mu"], mean, atol=0.3 * sd)
    np.testing.assert_allclose(posterior.scale["mu"], sd, rtol=0.1)
    draws = posterior.draws(4000, seed=1)["mu"]
    assert draws.shape == (4000, 2)
    np.testing.assert_allclose(draws.std(axis=0), posterior.scale["mu"], rtol=0.05)
    with pytest.raises(ConfigError, match="init_scale=0"):
        fit_particle_filter_posterior(
            GaussianMean(), data, {"mu": jnp.zeros(2)}, seed=0, init_scale=0
        )


def test_emulator_errors_name_the_problem():
    with pytest.raises(PriorError, match="hidden"):
        RNNEmulator(hidden=0)
    with pytest.raises(PriorError, match="categorical"):
        RNNEmulator(observation="poisson")
    ds = probdyn.data.simulate_hmm("linear", num_trials=2, num_timesteps=5, seed=0)
    with pytest.raises(DataError, match="num_symbols=2"):
        RNNEmulator(num_symbols=2).prepare(ds)


# -- symbol statistics -----------------------------------------------------------------------
def test_symbol_statistics_count_what_they_say():
    symbols = np.array([[0, 0, 1, 1, 1, 0], [2, 2, 2, 2, 0, 0]])
    stats = symbol_statistics(symbols, 3)
    np.testing.assert_allclose(stats.frequency, [5 / 12, 3 / 12, 4 / 12])
    # pairs: trial 0: 00, 01, 11, 11, 10; trial 1: 22, 22, 22, 20, 00
    np.testing.assert_allclose(stats.transition.sel(symbol=0), [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(stats.transition.sel(symbol=1), [1 / 3, 2 / 3, 0])
    np.testing.assert_allclose(stats.transition.sel(symbol=2), [1 / 4, 0, 3 / 4])
    assert float(stats.volatility) == pytest.approx(3 / 10)
    with pytest.raises(DataError, match="non-negative"):
        symbol_statistics(-symbols)


def test_symbol_statistics_standard_errors_cover_the_truth():
    ds = probdyn.data.simulate_hmm("linear", num_trials=400, num_timesteps=50, seed=3)
    stats = symbol_statistics(ds.symbols.values, 3)
    truth = symbol_statistics(
        probdyn.data.simulate_hmm(
            "linear", num_trials=8000, num_timesteps=50, seed=4
        ).symbols.values,
        3,
    )
    z = np.abs(stats.volatility - truth.volatility) / stats.volatility_se
    assert float(z) < 4 and float(stats.volatility_se) > 0
    z = np.abs(stats.frequency - truth.frequency) / stats.frequency_se
    assert float(z.max()) < 4
