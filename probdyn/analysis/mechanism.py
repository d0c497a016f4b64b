r"""Reverse-engineering a noise-driven network: its orbit and the residency of its output.

Torre et al. (2025) describe HMM-emulating RNNs by where their hidden states go under noise
(a closed orbit in the leading principal components) and by how long the output stays put:
each time step is labelled by the length :math:`r` of the run of identical symbols it belongs to,

- ``"transition"``: :math:`r < 2` (the output is changing),
- ``"kick zone"``: :math:`2 \le r \le 8`,
- ``"cluster"``: :math:`r > 8` (slow, noise-driven dwelling).

These are our reading of the paper's groups (<2, 2-8, >8 steps); the thresholds are arguments.

:func:`kick_neurons` ablates one hidden unit at a time (its activity clamped to zero) and
counts the network's output transitions of each kind under the same noise: the units whose
ablation removes most transitions of some kind are the paper's "kick neurons".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from probdyn.errors import ConfigError, DataError

GROUPS = ("transition", "kick zone", "cluster")


def run_lengths(symbols) -> np.ndarray:
    """For every step of ``symbols`` (trial, time), the length of its run of equal symbols."""
    values = np.asarray(symbols)
    if values.ndim != 2:
        raise DataError(f"symbols have shape {values.shape}; expected (trial, time)")
    lengths = np.empty(values.shape, dtype=int)
    for n, row in enumerate(values):
        starts = np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]]))
        sizes = np.diff(np.concatenate([starts, [row.size]]))
        lengths[n] = np.repeat(sizes, sizes)
    return lengths


def residency_groups(symbols, *, short: int = 2, long: int = 8) -> np.ndarray:
    """Group index per step: 0 transition (run < ``short``), 1 kick zone, 2 cluster (> ``long``)."""
    lengths = run_lengths(symbols)
    return np.where(lengths < short, 0, np.where(lengths <= long, 1, 2))


def orbit_pca(hidden, num_components: int = 3) -> xr.Dataset:
    r"""Principal components of hidden states (..., hidden): where the noise-driven orbit lies.

    Returns ``components`` (component, unit), ``explained_variance_ratio`` (component), the
    ``mean`` state and the ``projection`` (..., component) of every state.
    """
    states = np.asarray(hidden, dtype=np.float64)
    flat = states.reshape(-1, states.shape[-1])
    if flat.shape[0] < 2 or num_components > min(flat.shape):
        raise DataError(
            f"{flat.shape[0]} states of {flat.shape[1]} units cannot give {num_components} "
            "principal components"
        )
    mean = flat.mean(axis=0)
    _, singular, vt = np.linalg.svd(flat - mean, full_matrices=False)
    variance = singular**2
    projection = (states - mean) @ vt[:num_components].T
    dims = [f"axis_{i}" for i in range(states.ndim - 1)]
    return xr.Dataset(
        {
            "components": (("component", "unit"), vt[:num_components]),
            "explained_variance_ratio": ("component", variance[:num_components] / variance.sum()),
            "mean": ("unit", mean),
            "projection": ((*dims, "component"), projection),
        }
    )


def kick_neurons(
    model,
    params,
    *,
    seed: int,
    num_trials: int = 50,
    num_timesteps: int = 200,
    threshold: float = 0.5,
    min_transitions: int = 20,
    max_group: int = 10,
) -> xr.Dataset:
    r"""Output transitions of a noise-driven RNN with each hidden unit ablated in turn.

    ``model`` is a :class:`probdyn.models.RNNEmulator` (anything with ``hidden``,
    ``noise_dim``, ``num_symbols`` and ``latent_path(params, noise, dt)``) and ``params`` one draw
    of its weights. The same noise (``seed``) drives the intact network and every ablated copy,
    in which unit :math:`u`'s activity is clamped to zero (row :math:`u` of :math:`W_{hh}` and
    :math:`W_{in}` zeroed, and its bias where the model has biases: its pre-activation is 0, so ReLU
    keeps it at 0). The output is the
    most likely symbol :math:`s_t = \arg\max W_{out} h_t` (the readout's sampling noise would
    add transitions of its own). For every ordered pair :math:`i \ne j`,
    :math:`n_{ij}` counts the steps with :math:`s_t = i,\ s_{t+1} = j`, and

    .. math:: \mathrm{drop}_{u,ij} = 1 - n^{(u)}_{ij} / n_{ij}

    where the intact network makes at least ``min_transitions`` such transitions (NaN
    elsewhere). Unit :math:`u` is a kick neuron when some drop exceeds ``threshold``: its
    removal takes away most transitions of at least one kind, possibly of one direction only
    (the paper's kick neurons are direction-selective).

    Switching may also be carried by a group of units none of which matters alone. So the units
    are ranked by their largest single drop (``rank``: rank -> unit, ties by unit index) and the
    first :math:`k` ranked units are ablated together, for :math:`k = 1 \dots` ``max_group``:
    ``group_transitions`` and ``group_relative_drop`` (group_size, from, to), defined as above.

    Returns ``transitions`` (from, to) of the intact network, ``ablated_transitions`` (unit,
    from, to), ``relative_drop`` (unit, from, to), the output ``volatility`` (unit)
    :math:`P(s_{t+1} \ne s_t)` of each ablated copy and ``intact_volatility``, ``kick``
    (unit), and the group ablation above.
    """
    if max_group < 1:
        raise ConfigError(f"max_group={max_group}; expected at least 1 unit")
    num_symbols = model.num_symbols
    noise = jax.random.normal(jax.random.key(seed), (num_trials, num_timesteps, model.noise_dim))

    def transition_counts(weights):
        hidden = jax.vmap(lambda xi: model.latent_path(weights, xi, 1.0))(noise)
        symbols = jnp.argmax(hidden @ weights["W_out"].T, axis=-1)
        pairs = symbols[:, :-1] * num_symbols + symbols[:, 1:]
        counts = jnp.bincount(pairs.ravel(), length=num_symbols**2)
        return counts.reshape(num_symbols, num_symbols)

    def ablated(removed):
        keep = ~removed[:, None]
        silenced = dict(params, W_hh=params["W_hh"] * keep, W_in=params["W_in"] * keep)
        if "b" in params:
            silenced["b"] = params["b"] * keep[:, 0]
        return transition_counts(silenced)

    units = jnp.arange(model.hidden)
    intact = np.asarray(transition_counts(params))
    per_unit = np.asarray(jax.lax.map(lambda unit: ablated(units == unit), units))
    changes = ~np.eye(num_symbols, dtype=bool)
    steps = num_trials * (num_timesteps - 1)
    counted = changes & (intact >= min_transitions)

    def relative_drop(counts):
        return np.where(counted, 1.0 - counts / np.where(counted, intact, 1), np.nan)

    drop = relative_drop(per_unit)
    largest = np.where(counted, drop, -np.inf).max(axis=(1, 2))
    ranking = np.argsort(-largest, kind="stable")
    sizes = np.arange(1, min(max_group, model.hidden) + 1)
    rank_of_unit = jnp.asarray(np.argsort(ranking))
    per_group = np.asarray(jax.lax.map(lambda size: ablated(rank_of_unit < size), sizes))
    symbol = np.arange(num_symbols)
    return xr.Dataset(
        {
            "transitions": (("from", "to"), intact),
            "ablated_transitions": (("unit", "from", "to"), per_unit),
            "relative_drop": (("unit", "from", "to"), drop),
            "volatility": ("unit", per_unit[:, changes].sum(axis=-1) / steps),
            "intact_volatility": ((), intact[changes].sum() / steps),
            "kick": ("unit", largest > threshold),
            "rank": ("rank", ranking),
            "group_transitions": (("group_size", "from", "to"), per_group),
            "group_relative_drop": (("group_size", "from", "to"), relative_drop(per_group)),
        },
        coords={"from": symbol, "to": symbol, "group_size": sizes},
    )
