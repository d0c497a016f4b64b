"""A new inference method in a few dozen lines: MAP by Adam (docs/adding_inference.md).

An inference method reads a model through :func:`probdyn.inference.bind` (the posterior as a
flat density on unconstrained space) and returns a result that meets the
:class:`probdyn.capabilities.Posterior` protocol (``draws`` and ``to_arviz``); every analysis
then takes it as it takes probdyn's own results. Here the result is a
:class:`probdyn.inference.PointEstimate`, and the fixed-point posterior, the predictive score
and ArviZ read it without a line of their code changed.

Run: ``python docs/examples/new_inference_method.py`` (under a minute on a 2-core CPU).
"""

import os

import jax
import numpy as np
import optax

from probdyn import fixed_points
from probdyn.data import simulate_sde
from probdyn.inference import PointEstimate, bind, log_evidence
from probdyn.models import LDS

jax.config.update("jax_enable_x64", True)
QUICK = os.environ.get("PROBDYN_EXAMPLE_QUICK") == "1"


def map_by_adam(model, data, *, num_steps=2000, learning_rate=1e-2, seed=0) -> PointEstimate:
    """The posterior mode found by Adam on the unconstrained log posterior."""
    density = bind(model, model.as_data(data))
    z = 0.1 * jax.random.normal(jax.random.key(seed), (density.dim,))
    optimiser = optax.adam(learning_rate)
    state = optimiser.init(z)
    loss = jax.jit(jax.value_and_grad(lambda z: -density.log_posterior(z)))
    losses = []
    for _ in range(num_steps):
        value, grad = loss(z)
        updates, state = optimiser.update(grad, state)
        z = optax.apply_updates(z, updates)
        losses.append(float(value))
    params = {**density.constrain(z), **density.fixed}
    return PointEstimate(
        {k: np.asarray(v) for k, v in params.items()}, np.asarray(losses), model=model, data=data
    )


def main():
    ds = simulate_sde("double_well", num_trials=30, num_timesteps=100, observation_noise=0.2,
                      seed=0)
    train, test = ds.isel(trial=slice(0, 20)), ds.isel(trial=slice(20, 30))
    model = LDS(latent_dim=2)
    fit = map_by_adam(model, train, num_steps=300 if QUICK else 2000)
    print(f"MAP after {len(fit.losses)} steps, loss {fit.losses[-1]:.2f}")
    print(fixed_points(model, fit, num_starts=8).describe())
    score = log_evidence(model, test, method="predictive", seed=0, posterior=fit)
    print(f"held-out log predictive density at the mode: {score}")
    tree = fit.to_arviz()
    print(f"ArviZ groups: {sorted(tree.children)}")


if __name__ == "__main__":
    main()
