"""Associative memory: a noisy network with four attractors, switched by input pulses.

The ground truth is a 20-unit rank-2 SDE RNN with symmetric connectivity J = g M M^T / n (g = 2),
which holds four stable states; brief input pulses push it from one to another, and noise alone
rarely does. We record its latent trajectories, fit a fresh network with inputs by
drift-diffusion matching, and read off the fitted network's memories: the posterior over its
fixed points without input (four stable nodes, four saddles, an unstable origin), whether
pulses switch it as they switched the truth, and its entropy production, near zero for this
equilibrium (gradient) memory, in contrast to docs/examples/sequential_memory.py.

Run: ``python docs/examples/associative_memory.py`` (about two minutes on a 2-core CPU;
``PROBDYN_EXAMPLE_QUICK=1`` runs a short version, as the smoke test does).
"""

import os

import jax
import numpy as np
import numpyro.distributions as dist
import xarray as xr

import probdyn
from probdyn.analysis.nonequilibrium import decompose_connectivity, entropy_production_posterior
from probdyn.inference import svi
from probdyn.models import SDERNN

jax.config.update("jax_enable_x64", True)
QUICK = os.environ.get("PROBDYN_EXAMPLE_QUICK") == "1"
rng = np.random.default_rng(0)

# -- the ground-truth network: M with orthogonal columns, N = 2 M (symmetric J) ----------------
num_units = 20
M = np.linalg.qr(rng.standard_normal((num_units, 2)))[0] * np.sqrt(num_units)
truth = {"M": M, "N": 2.0 * M, "b": np.zeros(num_units), "B": np.eye(2), "sigma": np.array(0.3)}
generator = SDERNN(
    num_units=num_units,
    rank=2,
    input_dim=2,
    observation="latent",
    priors={name: dist.Delta(value) for name, value in truth.items()},
)
memories = probdyn.fixed_points(generator, {k: v[None] for k, v in truth.items()}, box=(-3, 3))
stable = memories.summary().query("`class` == 'stable node'")[["x0_mean", "x1_mean"]].to_numpy()
print(f"the truth holds {len(stable)} stable states")

# -- input pulses: three per trial, each 1 time unit long, towards a random memory -------------
num_trials, num_bins, dt = (20 if QUICK else 80), 300, 0.05
inputs = np.zeros((num_trials, num_bins, 2))
onsets = (60, 140, 220)
targets = rng.integers(0, len(stable), size=(num_trials, len(onsets)))
for trial in range(num_trials):
    for onset, target in zip(onsets, targets[trial], strict=True):
        inputs[trial, onset : onset + 20] = 2.0 * stable[target] / np.linalg.norm(stable[target])
placeholder = xr.Dataset(
    {
        "y": (("trial", "time", "neuron"), np.zeros((num_trials, num_bins, 2))),
        "inputs": (("trial", "time", "input"), inputs),
    },
    coords={"time": np.arange(num_bins) * dt},
    attrs={"dt": dt},
)
paths = probdyn.prior_predictive(generator, seed=1, num_samples=1, data=placeholder)["y"][0]
ds = placeholder.assign(y=(("trial", "time", "neuron"), paths))


def nearest_memory(states):
    """Index of the stable state nearest to each state."""
    return np.argmin(np.linalg.norm(states[..., None, :] - stable, axis=-1), axis=-1)


# Where the state sits just before the next pulse (or the end) says whether a pulse switched it.
ends = np.array([onset + 60 for onset in onsets])
reached = nearest_memory(paths[:, ends])
print(f"pulses that moved the truth to their target: {np.mean(reached == targets):.2f}")

# -- drift-diffusion matching with inputs ------------------------------------------------------
model = SDERNN(num_units=num_units, rank=2, input_dim=2, observation="latent")
steps = 300 if QUICK else 3000
point = svi(model, ds, num_steps=steps, seed=0, guide="delta", progress=False)
fit = svi(
    model,
    ds,
    num_steps=steps,
    seed=0,
    guide="mvn",
    learning_rate=0.005,
    init=point,
    init_scale=0.01,
    progress=False,
)
draws = fit.sample_posterior(200, seed=2)
print("fitted input matrix B (posterior mean; truth I):\n", np.round(draws["B"].mean(0), 2))

# -- the fitted network's memories: fixed points without input ---------------------------------
points = probdyn.fixed_points(model, draws, states=paths, seed=0)
print(points.describe())

# -- pulses through the fitted network: do they switch it as they switched the truth? ----------
mean = {name: value.mean(0) for name, value in draws.items()}
replay = SDERNN(
    num_units=num_units,
    rank=2,
    input_dim=2,
    observation="latent",
    priors={name: dist.Delta(value) for name, value in mean.items()},
)
replayed = probdyn.prior_predictive(replay, seed=3, num_samples=1, data=placeholder)["y"][0]
print(
    "pulses that moved the fitted network (posterior mean) to their target: "
    f"{np.mean(nearest_memory(replayed[:, ends]) == targets):.2f}"
)

# -- equilibrium memory: no entropy production ---------------------------------------------
# (Latent trajectories fix the latent drift, not the unit-space J: many J, symmetric or not,
# carry the same latent dynamics. The entropy production of those dynamics is identifiable.)
first = {name: value[0] for name, value in draws.items()}
parts = decompose_connectivity(model.connectivity(first))
production = entropy_production_posterior(
    model, draws, dt=0.01, num_draws=5 if QUICK else 20, num_trials=20, num_steps=2000
)
print(
    f"asymmetry of the fitted J {float(parts.asymmetry):.2f}; entropy production "
    f"{float(production.rate.mean()):.3g} (posterior sd {float(production.rate.std()):.2g}, "
    f"Monte Carlo se {float(production.se.mean()):.2g}; truth 0)"
)
