r"""Point estimates of a sequence generator's weights by a stochastic objective and optax.

The fits of :mod:`probdyn.inference.sinkhorn` (distribution matching) and
:mod:`probdyn.inference.filtering` (particle-filter likelihood) differ only in the objective:
both start at the model's ``initial_weights`` (or given weights), take ``num_steps`` optimiser
steps on a fresh random key each, and keep the objective at every step.

A stochastic gradient leaves the iterates wandering about the optimum, and along weakly
determined directions the last iterate is one draw from that wandering: in the HMM emulator
fitted by the particle filter (batches of 8 sequences, rate 3e-4) the frequency of one of two
symmetric symbols moves with a standard deviation of 0.012 between iterates 25 steps apart,
almost four standard errors of the 2000 training sequences. ``average_over = m`` returns
instead the mean of the last ``m`` iterates,

.. math:: \bar w = \frac{1}{m} \sum_{s = S - m + 1}^{S} w_s,

Polyak-Ruppert averaging (Polyak & Juditsky 1992, SIAM J. Control Optim. 30 838), which
averages that wandering out (the emulator's averages over the last 150, 300 and 600 of those
steps agree within 0.0012); applied to network weights in one basin it is stochastic weight
averaging (Izmailov et al. 2018, UAI).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr
from jax import Array
from tqdm.auto import tqdm

from probdyn.errors import ConfigError
from probdyn.inference.arviz import to_datatree
from probdyn.inference.density import bind, fingerprint
from probdyn.runtime.checkpoint import read_checkpoint, write_checkpoint


@dataclasses.dataclass(frozen=True)
class PointEstimate:
    """Fitted weights, the objective at every step, and the step a checkpoint resumed from.

    ``model`` and ``data`` (set by the fitting functions) let :meth:`to_arviz` label the run.
    """

    params: dict[str, np.ndarray]
    losses: np.ndarray
    resumed_from: int = 0
    model: object = None
    data: object = None

    def draws(self, num_draws: int | None = None, *, seed: int = 0) -> dict[str, np.ndarray]:
        """The weights as one posterior draw (leading draw axis), whatever ``num_draws``.

        A point estimate is a point mass (:class:`probdyn.Posterior`).
        """
        return {name: np.asarray(value)[None] for name, value in self.params.items()}

    def to_arviz(self, *, predictive: bool = True) -> xr.DataTree:
        """ArviZ DataTree of the point (one chain, one draw); ``optimization``: the losses."""
        return point_datatree(self, self.draws(), "point estimate", predictive)


def point_datatree(result, draws: dict, inference: str, predictive: bool) -> xr.DataTree:
    """The DataTree of draws (leading draw axis, one chain) of an optimiser-driven fit.

    ``result`` kept its ``model``, ``data`` and ``losses``; the losses become the
    ``optimization`` group.
    """
    if result.model is None or result.data is None:
        raise ConfigError(
            f"this {type(result).__name__} does not know its model and data (made by hand?); "
            "build it with model= and data= to convert it"
        )
    model = result.model
    density = bind(model, model.as_data(result.data))
    samples = {name: np.asarray(value)[None] for name, value in draws.items()}
    tree = to_datatree(
        model, density, samples, seed=0, attrs={"inference": inference}, predictive=predictive
    )
    tree["optimization"] = xr.DataTree(xr.Dataset({"loss": ("step", result.losses)}))
    return tree


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """What every optimiser-driven fit shares (:func:`minimise` and the fits built on it).

    ``num_steps`` optimiser steps; a progress bar unless ``progress`` is False; ``checkpoint``,
    a file written every ``checkpoint_every`` steps from which the same call resumes exactly;
    ``average_over``: return the mean of the last this many iterates (Polyak-Ruppert
    averaging; 0: the last iterate). The fits take these as keywords
    (``fit_sinkhorn(model, ds, seed=0, num_steps=500, checkpoint="fit.ckpt")``).
    """

    num_steps: int = 2000
    progress: bool = True
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 100
    average_over: int = 0

    def __post_init__(self):
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ConfigError(f"num_steps={self.num_steps!r}; expected an integer >= 1")
        if not 0 <= self.average_over <= self.num_steps:
            raise ConfigError(
                f"average_over={self.average_over}; expected 0..num_steps={self.num_steps}"
            )
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every={self.checkpoint_every}; expected >= 1")

    @classmethod
    def from_keywords(cls, keywords: Mapping, **defaults) -> FitOptions:
        """The options named in ``keywords`` (a fit's ``**options``), over ``defaults``."""
        valid = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(keywords) - set(valid))
        if unknown:
            raise ConfigError(f"unknown fit option(s) {unknown}; expected some of {valid}")
        return cls(**{**defaults, **keywords})


def minimise(
    loss: Callable[[dict[str, Array], Array], Array],
    model,
    *,
    seed: int,
    optimizer: optax.GradientTransformation,
    init: Mapping[str, Array] | None,
    label: str,
    settings: Mapping,
    options: FitOptions,
) -> PointEstimate:
    """Minimise ``loss(params, key)`` over the model's weights with ``optimizer``.

    ``params`` is any pytree of arrays (the weights themselves, or the parameters of a
    distribution over them). Starts at ``init`` or ``model.initial_weights``; step ``s``
    uses the key ``fold_in(key(seed), 2 + s)``. The progress bar is named ``label``.

    ``settings``: what else defines the objective (the data, batch size, learning rate, ...).
    ``options`` (:class:`FitOptions`): with a ``checkpoint`` file, the weights, optimiser state
    and losses are written there every ``checkpoint_every`` steps; a run of the same signature
    (the fingerprint of the label, model, seed, number of steps, start and ``settings``)
    resumes from the file and ends exactly where an unbroken run would; another run's file is
    refused. With ``average_over`` the mean of the last iterates is returned (see the module
    docstring); ``losses`` are those of the iterates either way.
    """
    num_steps, average_over = options.num_steps, options.average_over
    checkpoint, checkpoint_every = options.checkpoint, options.checkpoint_every
    progress = options.progress
    key = jax.random.key(seed)
    if init is None:
        if not hasattr(model, "initial_weights"):
            raise ConfigError(
                f"{type(model).__name__} has no initial_weights: give init= (e.g. a prior draw)"
            )
        init = model.initial_weights(jax.random.fold_in(key, 1))
    params = jax.tree.map(jnp.asarray, dict(init))
    signature = fingerprint(
        {
            "fit": label,
            "model": model,
            "seed": seed,
            "num_steps": num_steps,
            "init": params,
            "settings": settings,
            "average_over": average_over,
        }
    )
    first_averaged = num_steps - average_over

    @jax.jit
    def update(params, state, key):
        value, grads = jax.value_and_grad(loss)(params, key)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    @jax.jit
    def running_mean(mean, params, count):
        return jax.tree.map(lambda m, w: m + (w - m) / count, mean, params)

    state = optimizer.init(params)
    mean = jax.tree.map(jnp.zeros_like, params)
    losses = np.empty(num_steps)
    path = Path(checkpoint) if checkpoint is not None else None
    first = 0
    saved = read_checkpoint(path, signature, template=(params, state, mean))
    if saved is not None:
        first = saved["step"]
        params, state, mean = jax.tree.map(jnp.asarray, saved["state"])
        losses[:first] = saved["losses"]
    with tqdm(total=num_steps, initial=first, disable=not progress, desc=label, unit="step") as bar:
        for step in range(first, num_steps):
            params, state, value = update(params, state, jax.random.fold_in(key, 2 + step))
            losses[step] = float(value)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{losses[step]:.4f}")
            bar.update()
            done = step + 1
            if done > first_averaged:
                mean = running_mean(mean, params, done - first_averaged)
            if path is not None and (done % checkpoint_every == 0 or done == num_steps):
                state_on_host = jax.tree.map(np.asarray, (params, state, mean))
                write_checkpoint(path, signature, done, losses[:done], state_on_host)
    fitted = mean if average_over else params
    return PointEstimate(jax.tree.map(np.asarray, fitted), losses, resumed_from=first, model=model)


def decaying_adam(learning_rate: float, num_steps: int) -> optax.GradientTransformation:
    """Adam, its rate decaying from ``learning_rate`` to a tenth of it along a cosine."""
    return optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.1))
