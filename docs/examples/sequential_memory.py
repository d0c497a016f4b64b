"""Sequential memory driven by noise and a nonequilibrium current (docs/models/sdernn.md).

A 2-D stochastic system holds three stable states on a circle (``cyclic_attractors``); noise
carries it from one to the next, mostly in one direction, because its drift has a rotational
part. We fit a 30-unit rank-2 SDE RNN to its trajectories by drift-diffusion matching, then ask
the fitted network: where are its fixed points and which kind (with probabilities), is its
connectivity asymmetric, and how much entropy does it produce (time irreversibility) compared
with the target?

Run: ``python docs/examples/sequential_memory.py`` (about two minutes on a 2-core CPU;
``PROBDYN_EXAMPLE_QUICK=1`` runs a short version, as the smoke test does).
"""

import os

import jax
import numpy as np

import probdyn
from probdyn.algorithms.sde import matching_errors
from probdyn.analysis.nonequilibrium import (
    decompose_connectivity,
    entropy_production_posterior,
    entropy_production_rate,
)
from probdyn.data import systems
from probdyn.inference import svi
from probdyn.models import SDERNN

jax.config.update("jax_enable_x64", True)
QUICK = os.environ.get("PROBDYN_EXAMPLE_QUICK") == "1"

# -- the target: three attractors visited in turn ---------------------------------------------
ds = probdyn.data.simulate_sde(
    "cyclic_attractors", num_trials=20 if QUICK else 100, num_timesteps=400, seed=0
)
parameters = {"omega": ds.attrs["parameter_omega"], "a": ds.attrs["parameter_a"]}
sigma = float(ds.noise_scale_true)


def target(x):
    """The target's drift."""
    return systems.cyclic_attractors(x, parameters)


# -- drift-diffusion matching: MAP, then a Gaussian posterior started there -------------------
model = SDERNN(num_units=30, rank=2, observation="latent")
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
draws = fit.sample_posterior(200, seed=1)
print("matching errors:", matching_errors(model, draws, target, sigma, ds.y.values))

# -- posterior over fixed points: three stable nodes, three saddles, an unstable origin -------
points = probdyn.fixed_points(model, draws, states=ds.y.values, seed=0)
print(points.describe())

# -- asymmetry of the fitted connectivity, along the fitted network's own states ---------------
first = {name: value[0] for name, value in draws.items()}
parts = decompose_connectivity(
    model.connectivity(first), model.unit_states(first, ds.y.values.reshape(-1, 2))
)
print(
    f"asymmetry {float(parts.asymmetry):.2f}; share of the drift from the antisymmetric part "
    f"{float(parts.share_anti):.2f}"
)

# -- entropy production: target (its own stationary paths) and fitted posterior ---------------
target_paths = probdyn.data.simulate_sde(
    "cyclic_attractors", num_trials=20, num_timesteps=2000, dt=0.01, seed=1
)
truth = entropy_production_rate(
    target, sigma**2 / 2, target_paths.y.values[:, 500:], target_paths.attrs["dt"]
)
fitted = entropy_production_posterior(
    model,
    draws,
    dt=0.01,
    num_draws=5 if QUICK else 20,
    num_trials=20,
    num_steps=2000,
    by="symmetry",  # also the share of each force: leak, J_s, J_a (part_rate)
)
print(f"entropy production of the target: {truth}")
print(
    f"entropy production of the fitted network: {float(fitted.rate.mean()):.3g} "
    f"(posterior sd {float(fitted.rate.std()):.2g}, Monte Carlo se {float(fitted.se.mean()):.2g})"
)
for part in fitted.part.values:
    share = fitted.part_rate.sel(part=part)
    print(f"  carried by {part}: {float(share.mean()):.3g} (posterior sd {float(share.std()):.2g})")
counts = points.count_distribution()["total"]
print("posterior of the number of fixed points:", counts[counts > 0].round(3).to_dict())
assert np.isfinite(fitted.rate).all()
