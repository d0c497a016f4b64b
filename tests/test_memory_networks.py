"""The memory networks of docs/examples built the paper's way, their figures asserted.

Nartallo-Kaluarachchi et al. (2026) construct associative and sequential memories by
drift-diffusion matching: a network's latent drift and noise are fitted to a given SDE
(:func:`probdyn.inference.match_sde`). Each figure the examples print is checked here against the
target's own value, with a tolerance from the sampling error of both estimates.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import xarray as xr

import probdyn
from probdyn.analysis.nonequilibrium import entropy_production_rate
from probdyn.analysis.transitions import attractor_transitions
from probdyn.data import systems
from probdyn.data.integrate import euler_maruyama_path
from probdyn.inference import match_sde
from probdyn.models import SDERNN

pytestmark = pytest.mark.slow


def _stable_nodes(model, params, states):
    """Stable points (nodes or spirals: near-equal eigenvalues tip either way), by angle."""
    draws = {name: np.asarray(value)[None] for name, value in params.items()}
    table = probdyn.fixed_points(model, draws, states=states, seed=0).summary()
    stable = table["class"].isin(["stable node", "stable spiral"])
    nodes = table[stable][["x0_mean", "x1_mean"]].to_numpy()
    return nodes[np.argsort(np.arctan2(nodes[:, 1], nodes[:, 0]))]


def _paths(drift, noise, starts, *, seed, num_bins=2000, dt=0.05, burn_in=100):
    keys = jax.random.split(jax.random.key(seed), len(starts))
    run = jax.vmap(
        lambda x0, k: euler_maruyama_path(
            drift, x0, noise, k, num_points=burn_in + num_bins, interval=dt, substeps=5
        )
    )
    return np.asarray(jax.jit(run)(jnp.asarray(starts), keys))[:, burn_in:]


def _agree(a, a_se, b, b_se, slack=0.0):
    """|a - b| within three combined standard errors (plus a stated bias allowance)."""
    return abs(a - b) < 3 * np.hypot(a_se, b_se) + slack


def test_sequential_memory():
    parameters = {"omega": 0.5, "a": 2.0}
    sigma = 0.4
    target = partial(systems.cyclic_attractors, p=parameters)
    ds = probdyn.data.simulate_sde(
        "cyclic_attractors", num_trials=40, num_timesteps=500, parameters=parameters, seed=0
    )
    states = ds.y.values[:, 100:]
    model = SDERNN(num_units=32, rank=2, observation="latent")
    fit = match_sde(
        model, target, sigma, states, seed=0, num_steps=3000, learning_rate=3e-2, progress=False
    )
    params = {name: jnp.asarray(value) for name, value in fit.params.items()}

    # Stable states: the target's three nodes on the unit circle at pi/18 + 2 pi k / 3.
    nodes = _stable_nodes(model, params, states)
    angles = np.sort(np.mod(np.pi / 18 + 2 * np.pi * np.arange(3) / 3 + np.pi, 2 * np.pi) - np.pi)
    truth = np.stack([np.cos(angles), np.sin(angles)], 1)
    assert len(nodes) == 3
    assert np.linalg.norm(nodes - truth, axis=1).max() < 0.1

    # Switching: order and rate of the jumps, network against target (same starts, same length).
    starts = truth[np.arange(40) % 3]
    dt = 0.05
    target_paths = _paths(target, sigma, starts, seed=1)
    network_paths = _paths(
        partial(model.drift(params), u=None), model.noise_factor(params), starts, seed=2
    )
    scores = [
        attractor_transitions(paths, truth, dt, order=[0, 1, 2])
        for paths in (target_paths, network_paths)
    ]
    for stats in scores:
        assert float(stats.forward_fraction) > 0.5 + 3 * float(stats.forward_fraction_se)
    a, b = scores
    assert _agree(
        float(a.forward_fraction),
        float(a.forward_fraction_se),
        float(b.forward_fraction),
        float(b.forward_fraction_se),
    )
    assert _agree(
        float(a.switching_rate),
        float(a.switching_rate_se),
        float(b.switching_rate),
        float(b.switching_rate_se),
        slack=0.25 * float(a.switching_rate),  # escape rates are exponential in the barrier
    )

    # Entropy production: the target's and the network's path estimates agree; both > 0.
    diffusion = sigma**2 / 2
    produced = entropy_production_rate(target, diffusion, target_paths, dt)
    fitted = entropy_production_rate(
        partial(model.drift(params), u=None), diffusion, network_paths, dt
    )
    assert produced.rate > 5 * produced.se and fitted.rate > 5 * fitted.se
    bias = 0.1 * produced.rate  # the estimator's O(dt) bias at dt = 0.05, about dt * Phi * 2
    assert _agree(produced.rate, produced.se, fitted.rate, fitted.se, slack=bias)


def test_associative_memory():
    # The truth of docs/examples/associative_memory.py: symmetric J = 2 M M^T / n (four stable
    # states), inputs entering the latents (B = I), noise 0.3. Its latent drift is a gradient
    # flow, so it produces no entropy, and pulses towards a memory switch it there.
    rng = np.random.default_rng(0)
    n = 20
    M = np.linalg.qr(rng.standard_normal((n, 2)))[0] * np.sqrt(n)
    truth = {"M": M, "N": 2.0 * M, "b": np.zeros(n), "B": np.eye(2), "sigma": np.array(0.3)}
    teacher = SDERNN(num_units=n, rank=2, input_dim=2, observation="latent")
    sigma = 0.3
    drift = partial(teacher.drift({k: jnp.asarray(v) for k, v in truth.items()}), u=None)
    states = np.asarray(jax.random.uniform(jax.random.key(0), (4000, 2), minval=-2.5, maxval=2.5))
    model = SDERNN(num_units=32, rank=2, input_dim=2, observation="latent")
    fit = match_sde(
        model, drift, sigma, states, seed=0, num_steps=3000, learning_rate=3e-2, progress=False
    )
    params = {name: jnp.asarray(value) for name, value in fit.params.items()}
    params["B"] = jnp.eye(2)  # the input enters the latents, as in the truth

    # Stable states: the truth's four, found again.
    memories = _stable_nodes(teacher, truth, states)
    found = _stable_nodes(model, params, states)
    assert len(memories) == 4 and len(found) == 4
    assert np.linalg.norm(found - memories, axis=1).max() < 0.1

    # Switching under input: pulses of 1 time unit towards a random memory, three per trial.
    num_trials, num_bins, dt = 60, 300, 0.05
    onsets = (60, 140, 220)
    goals = rng.integers(0, 4, size=(num_trials, len(onsets)))
    inputs = np.zeros((num_trials, num_bins, 2))
    for trial in range(num_trials):
        for onset, goal in zip(onsets, goals[trial], strict=True):
            direction = memories[goal] / np.linalg.norm(memories[goal])
            inputs[trial, onset : onset + 20] = 2.0 * direction
    placeholder = xr.Dataset(
        {
            "y": (("trial", "time", "neuron"), np.zeros((num_trials, num_bins, 2))),
            "inputs": (("trial", "time", "input"), inputs),
        },
        coords={"time": np.arange(num_bins) * dt},
        attrs={"dt": dt},
    )
    ends = np.array(onsets) + 60
    reached = {}
    for name, values, seed in (("truth", truth, 1), ("network", params, 2)):
        fixed = SDERNN(
            num_units=model.num_units if name == "network" else n,
            rank=2,
            input_dim=2,
            observation="latent",
            priors={k: dist.Delta(jnp.asarray(v)) for k, v in values.items()},
        )
        paths = probdyn.prior_predictive(fixed, seed=seed, num_samples=1, data=placeholder)["y"][0]
        nearest = np.argmin(
            np.linalg.norm(paths[:, ends][..., None, :] - memories, axis=-1), axis=-1
        )
        reached[name] = np.mean(nearest == goals)
    count = goals.size
    se = np.sqrt(sum(p * (1 - p) for p in reached.values()) / count)
    assert reached["truth"] > 0.6
    assert abs(reached["truth"] - reached["network"]) < 3 * se + 1e-9

    # Equilibrium memory: no entropy production, for the truth and the network alike.
    starts = memories[np.arange(40) % 4]
    for field, seed in ((drift, 3), (partial(model.drift(params), u=None), 4)):
        paths = _paths(field, sigma, starts, seed=seed)
        estimate = entropy_production_rate(field, sigma**2 / 2, paths, dt)
        assert abs(estimate.rate) < 3 * estimate.se + 0.01
