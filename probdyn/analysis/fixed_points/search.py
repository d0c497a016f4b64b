"""``fixed_points``: every posterior draw's points found, classified and matched."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from probdyn.analysis.fixed_points.classification import CLASSES, classify, growth_rates
from probdyn.analysis.fixed_points.dynamics import Dynamics
from probdyn.analysis.fixed_points.local import local_dynamics
from probdyn.analysis.fixed_points.matching import align_to_reference, match_points
from probdyn.analysis.fixed_points.result import FixedPointPosterior
from probdyn.analysis.fixed_points.solver import place_starts, search_draws
from probdyn.capabilities import Dynamical, Posterior, require
from probdyn.errors import ConfigError


def _parameter_draws(model, posterior, num_draws: int | None, seed: int):
    """(parameter draws with a leading draw axis, latent states or None, number of draws)."""
    if posterior is None:
        if not isinstance(model, Dynamics):
            raise ConfigError("posterior=None is only for a Dynamics with known parameters")
        return {}, None, 1
    if isinstance(posterior, xr.DataTree):
        stacked = posterior["posterior"].to_dataset().stack(sample=("chain", "draw"))
        draws = {k: np.moveaxis(v.values, -1, 0) for k, v in stacked.data_vars.items()}
    elif isinstance(posterior, Mapping):
        draws = {k: np.asarray(v) for k, v in posterior.items()}
    elif isinstance(posterior, Posterior):
        draws = posterior.draws(num_draws, seed=seed)
    else:
        raise ConfigError(
            "posterior must be an inference result (probdyn.capabilities.Posterior: SVIResult, "
            "MCMCResult, PointEstimate, WeightPosterior), an ArviZ DataTree or a mapping of "
            f"parameter draws; got {type(posterior).__name__}"
        )
    sizes = {v.shape[0] for v in draws.values() if np.ndim(v) > 0}
    if len(sizes) != 1:
        raise ConfigError(f"parameter draws need one common leading draw axis; got sizes {sizes}")
    total = sizes.pop()
    if num_draws is not None and num_draws < total:
        keep = np.linspace(0, total - 1, num_draws).round().astype(int)
        draws = {k: v[keep] for k, v in draws.items()}
        total = num_draws
    names = set(model.default_priors(1)) if hasattr(model, "default_priors") else set(draws)
    params = {k: jnp.asarray(v) for k, v in draws.items() if k in names}
    states = draws.get("latents")
    return params, states, total


def fixed_points(
    model,
    posterior=None,
    *,
    seed: int = 0,
    num_starts: int = 64,
    num_draws: int | None = None,
    states: Any = None,
    box: tuple[Any, Any] | None = None,
    inputs: Any = None,
    jitter: float = 0.1,
    tol: float | None = None,
    merge_tol: float = 1e-4,
    match_tol: float = 0.5,
    marginal_tol: float = 1e-3,
    kink_tol: float = 0.05,
    max_steps: int = 200,
    progress: bool | None = None,
) -> FixedPointPosterior:
    r"""Find the fixed points of every posterior draw and match them across draws.

    Parameters
    ----------
    model
        A probdyn model (``kind``, ``vector_field``, ``emission_mean``) or a :class:`Dynamics`.
    posterior
        Any inference result (:class:`probdyn.capabilities.Posterior`: an SVI fit gives
        ``num_draws`` guide draws, default 200; NUTS all its draws; a point estimate its
        point), an ArviZ DataTree with a posterior group, or a mapping of parameter draws with
        a leading draw axis; None for a :class:`Dynamics`.
    num_starts
        Starts per draw. They are latent states of the draw (the posterior's ``latents`` site,
        or ``states``: (..., latent), shared by all draws) plus Gaussian
        jitter of ``jitter`` times their spread per dimension; without states, uniform in
        ``box`` = (low, high) (default :math:`\pm 3` times the model's ``initial_spread(params)``,
        the prior spread of its initial state, median over draws; :math:`\pm 3` without one).
    inputs
        Constant input :math:`u` under which the fixed points are sought (default: none).
    tol
        A start converged when :math:`\max_i |g_i(x)|` < ``tol`` (default 1e-8 in 64-bit, 1e-4
        in 32-bit precision).
    merge_tol
        Starts closer than ``merge_tol`` times the spread of the starts are one point.
    match_tol
        Gate (root-mean-square distance in observation units standardised per channel) beyond
        which a point opens a new matched fixed point rather than joining one.
    marginal_tol
        Growth rates within this margin of zero make a point *marginal*.
    kink_tol
        A point whose one-sided Jacobians differ from its Jacobian by more than this (relative
        Frobenius norm) sits on a kink of the field (a ReLU unit at zero input): it is
        classified by the growth of perturbations under the dynamics instead of by its
        eigenvalues (:mod:`probdyn.analysis.fixed_points.local`); ``kink`` marks it.
    progress
        A progress bar over the draws searched (None: the process setting,
        :func:`probdyn.runtime.memory.limit`).

    """
    require(model, Dynamical, "fixed_points")
    kind = model.kind
    if kind not in ("flow", "map"):
        raise ConfigError(f"model.kind={kind!r}; expected 'flow' or 'map'")
    latent_dim = model.latent_dim
    params, posterior_states, num_draws = _parameter_draws(model, posterior, num_draws, seed)
    per_draw = states is None
    states = posterior_states if per_draw else states
    if states is None and box is None:
        if isinstance(model, Dynamics):
            raise ConfigError("give states= or box=(low, high) to place the starts")
        # Three prior scales of the latent state: the model's initial spread where it has one.
        scale = 1.0
        if callable(getattr(model, "initial_spread", None)):
            scale = np.median(np.asarray(model.initial_spread(params)), axis=0)
        box = (-3.0 * scale, 3.0 * scale)
    rng = np.random.default_rng(seed)
    dtype = jnp.result_type(float)
    starts = jnp.asarray(
        place_starts(states, per_draw, box, num_draws, num_starts, latent_dim, jitter, rng), dtype
    )
    u = None if inputs is None else jnp.asarray(inputs, dtype)
    tol = tol if tol is not None else (1e-8 if dtype == jnp.float64 else 1e-4)
    spread = float(np.sqrt(np.mean(np.var(np.asarray(starts), axis=1)))) or 1.0

    solved = search_draws(
        model, max_steps, params, starts, u, tol, merge_tol * spread, progress=progress
    )
    x, res, jac, emitted, emitted_start, keep = (np.asarray(a) for a in solved)
    # Observation units: the spread of the predicted observations over the starts (the region
    # the data occupy), so that the gate does not shrink with the posterior's own spread.
    obs_scale = emitted_start.reshape(-1, emitted_start.shape[-1]).std(axis=0)
    obs_scale = np.where(obs_scale > 0, obs_scale, 1.0)
    found = [np.flatnonzero(keep[d]) for d in range(num_draws)]
    assignment, reference = match_points(
        [emitted[d, idx] / obs_scale for d, idx in enumerate(found)], match_tol
    )
    num_points = 1 + max((int(a.max()) for a in assignment if a.size), default=-1)

    def gather(values, fill):
        out = np.full((num_draws, num_points, *values.shape[2:]), fill, dtype=values.dtype)
        for d, idx in enumerate(found):
            out[d, assignment[d]] = values[d, idx]
        return out

    location = gather(x, np.nan)
    emitted_location = gather(emitted, np.nan)
    exists = gather(keep, False)
    local = local_dynamics(
        model,
        params,
        location,
        gather(jac, np.nan),
        u,
        scale=spread,
        marginal_tol=marginal_tol,
        kink_tol=kink_tol,
        seed=seed,
        progress=progress,
    )
    eigen = np.full(location.shape, np.nan + 0j)
    eigen[exists] = np.linalg.eigvals(local["jacobian"][exists])
    order = np.argsort(-(eigen.real if kind == "flow" else np.abs(eigen)), axis=-1, kind="stable")
    eigen = np.take_along_axis(eigen, order, axis=-1)
    codes = np.full(exists.shape, -1, np.int8)
    codes[exists] = classify(eigen[exists], kind, marginal_tol)
    codes = np.where(local["kink"], local["stability"], codes).astype(np.int8)
    growth = np.where(local["kink"], local["growth"], growth_rates(eigen[..., 0], kind))
    reference_params = jax.tree.map(lambda v: v[reference], params)
    aligned = align_to_reference(
        model, reference_params, location, emitted_location, reference, tol, max_steps
    )
    dataset = xr.Dataset(
        {
            "exists": (("draw", "fixed_point"), exists),
            "location": (("draw", "fixed_point", "latent"), location),
            "aligned_location": (("draw", "fixed_point", "latent"), aligned),
            "observation_mean": (("draw", "fixed_point", "neuron"), emitted_location),
            "eigenvalue_real": (("draw", "fixed_point", "eigen"), eigen.real),
            "eigenvalue_imag": (("draw", "fixed_point", "eigen"), eigen.imag),
            "stability": (("draw", "fixed_point"), codes),
            "kink": (("draw", "fixed_point"), local["kink"]),
            "growth_rate": (("draw", "fixed_point"), growth),
            "residual": (("draw", "fixed_point"), gather(res, np.nan)),
            "converged_starts": (("draw",), (res < tol).sum(axis=1)),
        },
        coords={"draw": np.arange(num_draws), "fixed_point": np.arange(num_points)},
        attrs={
            "kind": kind,
            "classes": list(CLASSES),
            "reference_draw": int(reference),
            "num_starts": int(num_starts),
            "tol": float(tol),
            "match_tol": float(match_tol),
            "marginal_tol": float(marginal_tol),
            "kink_tol": float(kink_tol),
        },
    )
    # The reference draw's parameters travel with the result, so that a saved result can be
    # drawn again (phase portrait) without the posterior it came from.
    for name, value in reference_params.items():
        value = np.asarray(value)
        dims = tuple(f"reference_{name}_{axis}" for axis in range(value.ndim))
        dataset[f"reference_{name}"] = (dims, value)
    dataset["stability"].attrs = {
        "flag_values": list(range(len(CLASSES))),
        "flag_meanings": " ".join(c.replace(" ", "_") for c in CLASSES),
        "missing": -1,
    }
    return FixedPointPosterior(dataset, model, reference_params, u)
