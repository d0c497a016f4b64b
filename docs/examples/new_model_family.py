"""A new model family in a few dozen lines: a Poisson latent AR(1) (docs/adding_a_model.md).

The family states its initial state, its transition and its emission; the state-space core
(probdyn/state_space.py) writes the NumPyro program, the sampled path, the particle filter, the
masks and the observation site. Nothing else in probdyn is touched: the family then runs under
SVI (with its path sampled or filtered), NUTS, SMC evidence, the predictive score and the
fixed-point posterior.

Run: ``python docs/examples/new_model_family.py`` (about a minute on a 2-core CPU).
"""

import dataclasses
import os
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import xarray as xr

from probdyn import fixed_points, prior_predictive
from probdyn.inference import log_evidence, svi
from probdyn.state_space import StateSpaceModel

jax.config.update("jax_enable_x64", True)
QUICK = os.environ.get("PROBDYN_EXAMPLE_QUICK") == "1"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LatentAR(StateSpaceModel):
    r"""x_0 ~ N(0, 1), x_t = a x_{t-1} + s xi_t, y_tn ~ Poisson(exp(w_n x_t + c_n))."""

    kind: ClassVar[str] = "map"
    observation: str = "poisson"
    marginal: str = "sample"
    num_particles: int = 64
    priors: Mapping[str, dist.Distribution] | None = None
    latent_dim: ClassVar[int] = 1

    def default_priors(self, emission_dim):
        """Sites a (persistence), s (noise), w (loadings), c (log baseline rates)."""
        return {
            "a": dist.Uniform(-1.0, 1.0),
            "s": dist.HalfNormal(1.0),
            "w": dist.Normal(jnp.zeros(emission_dim), 1.0),
            "c": dist.Normal(jnp.zeros(emission_dim), 1.0),
        }

    noise_shape = (1, 1)  # one standard-normal number per bin

    def initial_state(self, params, noise):
        return noise

    def transition(self, params, dt):
        return lambda x, noise, u: params["a"] * x + params["s"] * noise[0]

    def emission(self, params, x):
        return dist.Poisson(jnp.exp(x * params["w"] + params["c"]))

    def vector_field(self, params, x, u=None):
        return params["a"] * x

    def emission_mean(self, params, x):
        return jnp.exp(x * params["w"] + params["c"])


def main():
    truth = LatentAR(
        priors={
            "a": dist.Delta(0.9),
            "s": dist.Delta(0.4),
            "w": dist.Delta(jnp.linspace(-1.0, 1.0, 6)).to_event(1),
            "c": dist.Delta(jnp.zeros(6)).to_event(1),
        }
    )
    counts = prior_predictive(truth, seed=0, num_samples=1, num_trials=30, num_timesteps=40,
                              emission_dim=6)["spikes"][0]
    ds = xr.Dataset({"spikes": (("trial", "time", "neuron"), counts)}, attrs={"dt": 1.0})
    train, test = ds.isel(trial=slice(0, 20)), ds.isel(trial=slice(20, 30))
    filtered = LatentAR(marginal="particle")
    fit = svi(filtered, train, num_steps=300 if QUICK else 1500, seed=0, progress=False)
    a = fit.draws(200, seed=1)["a"]
    print(f"persistence a: {a.mean():.3f} +- {a.std():.3f} (true 0.9)")
    score = log_evidence(filtered, test, method="predictive", seed=0, posterior=fit, num_draws=50)
    print(f"held-out log predictive density: {score}")
    points = fixed_points(filtered, fit, num_draws=50, num_starts=8)
    print(points.describe())
    # The control: every bin of every trial shuffled together carries no persistence (within
    # trials alone, each trial's slow offset would survive the shuffle), and the fit says so.
    values = train["spikes"].values
    order = np.random.default_rng(1).permutation(values.shape[0] * values.shape[1])
    mixed = values.reshape(-1, values.shape[-1])[order].reshape(values.shape)
    control = svi(filtered, train.copy(data={"spikes": mixed}),
                  num_steps=300 if QUICK else 1500, seed=0, progress=False)
    print(f"persistence from shuffled bins: {control.draws(200, seed=1)['a'].mean():.3f}")


if __name__ == "__main__":
    main()
