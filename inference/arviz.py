"""Posterior draws -> an ArviZ (>= 1.0) ``xarray.DataTree`` with the data convention's dims.

Groups: ``posterior`` (free and fixed parameters, deterministic latents), ``sample_stats``,
``observed_data``, ``posterior_predictive`` and ``log_likelihood`` (one value per trial: the unit
that PSIS-LOO leaves out), all with dims named by the model's ``site_dims``.
"""

from __future__ import annotations

import dataclasses
import json

import arviz_base
import jax
import numpy as np
import numpyro
import xarray as xr
from probdyn.inference.density import Density

from probdyn.data.validate import OBSERVATION_VARIABLES
from probdyn.model import Model


def _by_chain(draws: dict, num_chains: int) -> dict:
    return {
        k: np.reshape(np.asarray(v), (num_chains, -1, *np.shape(v)[1:])) for k, v in draws.items()
    }


def to_datatree(
    model: Model,
    density: Density,
    samples: dict[str, np.ndarray],
    *,
    seed: int,
    sample_stats: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
) -> xr.DataTree:
    """Build the DataTree from ``samples`` (every array with leading (chain, draw) axes)."""
    num_chains = next(iter(samples.values())).shape[0]
    # The model's family and hyperparameters travel with the run (probdyn fixed-points RUN).
    attrs = {**(attrs or {}), "model": json.dumps(model.spec())}
    site = OBSERVATION_VARIABLES[model.observation]
    data = density.data
    flat = {k: np.reshape(v, (-1, *np.shape(v)[2:])) for k, v in samples.items() if k != site}
    # Only the observation site: fixed (conditioned) parameters also count as observed.
    log_lik = {site: numpyro.infer.log_likelihood(density.program, flat, data)[site]}
    unobserved = dataclasses.replace(data, observations=None, mask=None)
    predictive = numpyro.infer.Predictive(
        density.program, posterior_samples=flat, return_sites=[site]
    )
    predicted = predictive(jax.random.key(seed), unobserved)
    obs_dims = ("trial", "time", "neuron")[: 2 if site == "symbols" else 3]
    dims = {**model.site_dims, site: list(obs_dims)}

    coords = {"trial": np.arange(data.num_trials), "time": np.arange(data.num_timesteps) * data.dt}

    def group(values: dict, group_dims: dict | None = None) -> xr.Dataset:
        return arviz_base.dict_to_dataset(
            values,
            dims=group_dims or dims,
            coords=coords,
            attrs=attrs,
            inference_library=numpyro,
        )

    groups = {
        "posterior": group({k: v for k, v in samples.items() if k != site}),
        "log_likelihood": group(_by_chain(log_lik, num_chains), {site: ["trial"]}),
        "posterior_predictive": group(_by_chain(predicted, num_chains)),
    }
    if sample_stats:
        groups["sample_stats"] = group(sample_stats)
    if data.observations is not None:
        observed = np.asarray(data.observations, dtype=float)
        if data.mask is not None:
            observed = np.where(np.asarray(data.mask), observed, np.nan)
        groups["observed_data"] = xr.Dataset(
            {site: (obs_dims, observed)}, coords=coords, attrs={"dt": data.dt}
        )
    return xr.DataTree.from_dict(groups)
