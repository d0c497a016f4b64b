"""Posterior draws -> an ArviZ (>= 1.0) ``xarray.DataTree`` with the data convention's dims.

Groups: ``posterior`` (free and fixed parameters, deterministic latents), ``sample_stats``,
``observed_data``, ``posterior_predictive`` and ``log_likelihood``, all with dims named by the
model's ``site_dims``. The log likelihood holds one value per trial (``{site}_trial``: the unit
that model comparison leaves out) and, where the model's likelihood splits over the elements
of a trial, one term per (bin, channel) under the observation's own name, which ArviZ pairs
with the observations and the predictive (LOO-PIT); see :func:`per_trial_variable`.
"""

from __future__ import annotations

import dataclasses
import json

import arviz_base
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import xarray as xr
from numpyro import handlers

from probdyn.data.validate import OBSERVATION_VARIABLES
from probdyn.inference.density import Density
from probdyn.model import Model, pointwise_log_prob
from probdyn.runtime import memory

#: The groups :func:`predictive_groups` makes.
PREDICTIVE_GROUPS = ("log_likelihood", "posterior_predictive")
#: The posterior predictive group is thinned to stay within this size (see predictive_draws).
MAX_PREDICTIVE_BYTES = 64 * 10**6
#: ... but keeps at least this many draws.
MIN_PREDICTIVE_DRAWS = 20
#: Draws of the prior and prior predictive groups (fewer where the data set is large).
NUM_PRIOR_DRAWS = 500


def _by_chain(draws: dict, num_chains: int) -> dict:
    return {
        k: np.reshape(np.asarray(v), (num_chains, -1, *np.shape(v)[1:])) for k, v in draws.items()
    }


def predictive_draws(num_chains: int, num_draws: int, data, max_bytes: int) -> np.ndarray:
    """Flat indices (chain, kept draw) of evenly spaced draws whose predictive fits ``max_bytes``.

    One predicted data set of ``data``'s shape costs 4 bytes per value; at least
    :data:`MIN_PREDICTIVE_DRAWS` draws in all are kept whatever the size.
    """
    per_draw = 4 * data.num_trials * data.num_timesteps * max(data.emission_dim, 1)
    fits = max(max_bytes // per_draw, MIN_PREDICTIVE_DRAWS) // num_chains
    keep = min(num_draws, max(int(fits), 1))
    within = np.unique(np.linspace(0, num_draws - 1, keep).round().astype(int))
    return np.arange(num_chains)[:, None] * num_draws + within[None]


def to_datatree(
    model: Model,
    density: Density,
    samples: dict[str, np.ndarray],
    *,
    seed: int,
    sample_stats: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
    predictive: bool = True,
) -> xr.DataTree:
    """Build the DataTree from ``samples`` (every array with leading (chain, draw) axes).

    ``predictive=False`` leaves out the ``log_likelihood`` and ``posterior_predictive`` groups,
    which :func:`predictive_groups` adds later (``probdyn fit`` saves the fit before them).
    """
    # The model's family and hyperparameters travel with the run (probdyn fixed-points RUN).
    attrs = {**(attrs or {}), "model": json.dumps(model.spec())}
    site = OBSERVATION_VARIABLES[model.observation]
    data = density.data
    group = _grouper(model, data, attrs)
    groups = {"posterior": group({k: v for k, v in samples.items() if k != site})}
    if sample_stats:
        groups["sample_stats"] = group(sample_stats)
    if data.observations is not None:
        observed = np.asarray(data.observations, dtype=float)
        if data.mask is not None:
            observed = np.where(np.asarray(data.mask), observed, np.nan)
        obs_dims = _observation_dims(site)
        groups["observed_data"] = _label(
            xr.Dataset({site: (obs_dims, observed)}, coords=_coords(data), attrs={"dt": data.dt}),
            data,
        )
    if predictive:
        groups.update(predictive_groups(model, density, samples, seed=seed, attrs=attrs))
    groups.update(
        prior_groups(model, density, names=list(groups["posterior"].data_vars), seed=seed)
    )
    return xr.DataTree.from_dict(groups)


def prior_groups(
    model: Model,
    density: Density,
    *,
    names: list[str],
    seed: int,
    num_draws: int = NUM_PRIOR_DRAWS,
    max_predictive_bytes: int = MAX_PREDICTIVE_BYTES,
) -> dict[str, xr.Dataset]:
    """The ``prior`` (the posterior's variables, ``names``) and ``prior_predictive`` groups.

    Draws of the whole program with the observations left out (each draw a simulated data set
    of the recording's shape), as many as :func:`predictive_draws` lets fit
    ``max_predictive_bytes``, at most ``num_draws``; mapped in chunks sized by the memory budget.
    """
    site = OBSERVATION_VARIABLES[model.observation]
    data = density.data
    unobserved = dataclasses.replace(data, observations=None, mask=None)
    count = predictive_draws(1, num_draws, data, max_predictive_bytes).size

    def draw(key):
        trace = handlers.trace(handlers.seed(density.program, key)).get_trace(unobserved)
        return {n: trace[n]["value"] for n in [*names, site] if n in trace}

    keys = jax.random.split(jax.random.key(seed + 1), count)
    values = memory.map_chunks(draw, keys, what="prior draws", unit="draw")
    fixed = {n: np.broadcast_to(v, (count, *np.shape(v))) for n, v in density.fixed.items()}
    values = {**fixed, **values}
    group = _grouper(model, data, {"model": json.dumps(model.spec())})
    prior = {n: values[n][None] for n in names if n in values}
    return {
        "prior": group(prior),
        "prior_predictive": group({site: values[site][None]}),
    }


def predictive_groups(
    model: Model,
    density: Density,
    samples: dict[str, np.ndarray],
    *,
    seed: int,
    attrs: dict | None = None,
    max_predictive_bytes: int = MAX_PREDICTIVE_BYTES,
) -> dict[str, xr.Dataset]:
    """The ``log_likelihood`` and ``posterior_predictive`` groups of ``samples`` (chain, draw).

    The log likelihood (one value per trial) is computed for every draw; the posterior
    predictive for evenly spaced draws of each chain, as many as fit ``max_predictive_bytes``
    (all of them for small data; its ``draw`` coordinate names the posterior draws kept and its
    ``thinned`` attribute says how). Both run in chunks sized by the memory budget
    (:mod:`probdyn.runtime.memory`).
    """
    attrs = {**(attrs or {}), "model": json.dumps(model.spec())}
    site = OBSERVATION_VARIABLES[model.observation]
    data = density.data
    num_chains = next(iter(samples.values())).shape[0]
    flat = {k: np.reshape(v, (-1, *np.shape(v)[2:])) for k, v in samples.items() if k != site}
    num_draws = len(next(iter(flat.values())))
    per_chain = num_draws // num_chains
    keys = jax.random.split(jax.random.key(seed), num_draws)

    kept = predictive_draws(num_chains, per_chain, data, max_predictive_bytes)

    def observation_site(draw, part, key):
        # Only the observation site: fixed (conditioned) parameters also count as observed.
        # Seeded, so that a filtered path (marginal="particle") draws its own estimate.
        program = handlers.seed(handlers.substitute(density.program, data=draw), key)
        node = handlers.trace(program).get_trace(part)[site]
        return node["fn"], node["value"]

    def pointwise(draw, part, key):
        return pointwise_log_prob(*observation_site(draw, part, key))

    def per_trial(draw, part, key):
        fn, value = observation_site(draw, part, key)
        return fn.log_prob(value)

    first = {name: value[0] for name, value in flat.items()}
    # Pointwise terms are kept with every draw (the predictive is not thinned) where they exist.
    splits = jax.eval_shape(lambda: pointwise(first, data, keys[0]))
    keep_pointwise = splits is not None and kept.shape[1] == per_chain
    what = "log likelihood of each trial"
    if keep_pointwise:
        terms = over_draws_and_trials(pointwise, model, data, flat, keys, what=f"{what}, pointwise")
        log_lik = terms.reshape(len(terms), data.num_trials, -1).sum(-1)
    else:
        log_lik = over_draws_and_trials(per_trial, model, data, flat, keys, what=what)
    unobserved = dataclasses.replace(data, observations=None, mask=None)

    def predict(draw, part, key):
        predictive = numpyro.infer.Predictive(
            density.program, posterior_samples=draw, return_sites=[site], batch_ndims=0
        )
        return predictive(key, part)[site]

    chosen = {name: value[kept.ravel()] for name, value in flat.items()}
    predicted = over_draws_and_trials(
        predict, model, unobserved, chosen, keys[kept.ravel()], what="posterior predictive"
    )
    group = _grouper(model, data, attrs)
    predictive = group({site: predicted.reshape(kept.shape + predicted.shape[1:])})
    predictive = predictive.assign_coords(draw=kept[0])
    if kept.shape[1] < per_chain:
        predictive.attrs["thinned"] = (
            f"{kept.shape[1]} evenly spaced draws of {per_chain} per chain (the draw coordinate "
            f"names them), to stay within {memory.format_size(max_predictive_bytes)}"
        )
    trial_name = per_trial_variable(site)
    log_likelihood = group(_by_chain({trial_name: log_lik}, num_chains), {trial_name: ["trial"]})
    if keep_pointwise:
        log_likelihood[site] = group(_by_chain({site: terms}, num_chains))[site]
    else:
        log_likelihood.attrs["pointwise"] = (
            "left out: the model's likelihood of a trial does not split over its bins (a "
            "particle-filter estimate)"
            if splits is None
            else "left out: the posterior predictive is thinned at this size (see its attrs)"
        )
    return {"log_likelihood": log_likelihood, "posterior_predictive": predictive}


def per_trial_variable(site: str) -> str:
    """Name of the per-trial log likelihood (``log_likelihood[f"{site}_trial"]``).

    Two log-likelihood variables sit side by side: ``site`` holds one term per observed
    element (bin, channel), paired with ``observed_data[site]`` and the posterior predictive
    for ArviZ's LOO-PIT; ``site + "_trial"`` one value per trial, the unit model comparison
    leaves out (``az.loo(tree, var_name=per_trial_variable(site))``, ``probdyn compare``).
    """
    return f"{site}_trial"


def over_draws_and_trials(fn, model: Model, data, draws: dict, keys, *, what: str) -> np.ndarray:
    """``fn(draw, data, key)`` (one value per trial) for every draw, in blocks of trials.

    One draw of a large recording can pass the memory budget by itself: then its per-trial
    sites (those whose dims start with ``trial`` in the model's ``site_dims``) and the data are
    cut into blocks of trials, as many per block as the budget holds (halved until one fits),
    and the blocks of all draws are mapped in chunks. Returns (draw, trial, ...) on the host.
    Deterministic values do not depend on the blocks; random ones (a predictive draw) are drawn
    per block with the key folded with the block's first trial, so they do when blocks are cut.
    """
    local = {name for name in draws if model.site_dims.get(name, [""])[0] == "trial"}
    num_draws, num_trials = len(keys), data.num_trials

    def block(size: int):
        def one(item, shared):
            d, start = item
            every, all_keys = shared
            draw = {n: v[d] for n, v in every.items()}
            if size == num_trials:  # whole draws: no gathered copy of the data per draw
                return fn(draw, data, all_keys[d])
            index = jnp.minimum(start + jnp.arange(size), num_trials - 1)
            draw = {n: v[index] if n in local else v for n, v in draw.items()}
            part = dataclasses.replace(data.take(index), num_trials=size)
            return fn(draw, part, jax.random.fold_in(all_keys[d], start))

        return one

    shared = (draws, keys)
    size, budget = num_trials, memory.chunk_budget()
    while True:
        per_item, fixed = memory.item_cost(block(size), (0, 0), shared)
        if per_item + fixed <= budget or size == 1:
            break  # (map_chunks says so if even one trial does not fit)
        # The cost of a block grows with its trials: try the share that fits, then halve.
        share = max(budget - fixed, 0) / per_item
        size = max(1, min(size // 2, int(size * share)))
    starts = np.arange(0, num_trials, size)
    items = (np.repeat(np.arange(num_draws), len(starts)), np.tile(starts, num_draws))
    if size < num_trials:
        what, unit = f"{what} (blocks of {size} trials)", "block"
    else:
        unit = "draw"
    out = memory.map_chunks(
        block(size), items, what=what, unit=unit, shared=shared, cost=(per_item, fixed)
    )
    out = out.reshape(num_draws, len(starts) * size, *out.shape[2:])
    return out[:, :num_trials]


def add_predictive(
    tree: xr.DataTree,
    model: Model,
    density: Density,
    *,
    seed: int,
    max_predictive_bytes: int = MAX_PREDICTIVE_BYTES,
) -> xr.DataTree:
    """``tree`` with the :func:`predictive_groups` of its posterior draws added (in place)."""
    posterior = tree["posterior"].to_dataset()
    samples = {name: posterior[name].values for name in posterior.data_vars}
    groups = predictive_groups(
        model, density, samples, seed=seed, max_predictive_bytes=max_predictive_bytes
    )
    for name, dataset in groups.items():
        tree[name] = xr.DataTree(dataset)
    return tree


def _observation_dims(site: str) -> tuple[str, ...]:
    return ("trial", "time", "neuron")[: 2 if site == "symbols" else 3]


def _coords(data) -> dict[str, np.ndarray]:
    """Dimension coordinates: the recording's (trial ids, times, unit ids) where it has them."""
    coords = {"trial": np.arange(data.num_trials), "time": np.arange(data.num_timesteps) * data.dt}
    if data.observations is not None and np.ndim(data.observations) == 3:
        coords["neuron"] = np.arange(data.emission_dim)
    labels = data.coords or {}
    coords |= {name: values for name, (dims, values) in labels.items() if dims == (name,)}
    return coords


def _label(dataset: xr.Dataset, data) -> xr.Dataset:
    """``dataset`` with the recording's other coordinates (unit, trial columns) on its dims.

    Only the observed data carry them: ArviZ's ``summary`` cannot stack a group whose variables
    differ in their non-dimension coordinates (``az.summary`` fails on such a posterior).
    """
    extra = {
        name: (dims, values)
        for name, (dims, values) in (data.coords or {}).items()
        if dims != (name,) and set(dims) <= set(dataset.dims)
    }
    return dataset.assign_coords(extra)


def _grouper(model: Model, data, attrs: dict):
    """``values -> Dataset`` with the model's dims (the observation's included) and coords."""
    site = OBSERVATION_VARIABLES[model.observation]
    dims = {**model.site_dims, site: list(_observation_dims(site))}

    def group(values: dict, group_dims: dict | None = None) -> xr.Dataset:
        return arviz_base.dict_to_dataset(
            values,
            dims=group_dims or dims,
            coords=_coords(data),
            attrs=attrs,
            inference_library=numpyro,
        )

    return group
