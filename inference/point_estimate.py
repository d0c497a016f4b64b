r"""Point estimates of a sequence generator's weights by a stochastic objective and optax.

The fits of :mod:`probdyn.inference.sinkhorn` (distribution matching) and
:mod:`probdyn.inference.filtering` (particle-filter likelihood) differ only in the objective:
both start at the model's ``initial_weights`` (or given weights), take ``num_steps`` optimiser
steps on a fresh random key each, and keep the objective at every step.
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
from jax import Array
from probdyn.inference.checkpoint import read_checkpoint, write_checkpoint
from probdyn.inference.density import fingerprint
from tqdm.auto import tqdm

from probdyn.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class PointEstimate:
    """Fitted weights, the objective at every step, and the step a checkpoint resumed from."""

    params: dict[str, np.ndarray]
    losses: np.ndarray
    resumed_from: int = 0

    def draws(self) -> dict[str, np.ndarray]:
        """The weights as a single posterior draw (leading draw axis), for the analyses."""
        return {name: value[None] for name, value in self.params.items()}


def minimise(
    loss: Callable[[dict[str, Array], Array], Array],
    model,
    *,
    seed: int,
    num_steps: int,
    optimizer: optax.GradientTransformation,
    init: Mapping[str, Array] | None,
    progress: bool,
    label: str,
    settings: Mapping,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
) -> PointEstimate:
    """Minimise ``loss(params, key)`` over the model's weights with ``optimizer``.

    ``params`` is any pytree of arrays (the weights themselves, or the parameters of a
    distribution over them). Starts at ``init`` or ``model.initial_weights``; step ``s``
    uses the key ``fold_in(key(seed), 2 + s)``. The progress bar is named ``label``.

    ``settings``: what else defines the objective (the data, batch size, learning rate, ...).
    With ``checkpoint`` (a file), the weights, optimiser state and losses are written there
    every ``checkpoint_every`` steps; a run of the same signature (the fingerprint of the
    label, model, seed, number of steps, start and ``settings``) resumes from the file and ends
    exactly where an unbroken run would; another run's file is refused.
    """
    if num_steps < 1:
        raise ConfigError(f"num_steps={num_steps}; expected >= 1")
    if checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every={checkpoint_every}; expected >= 1")
    key = jax.random.key(seed)
    if init is None:
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
        }
    )

    @jax.jit
    def update(params, state, key):
        value, grads = jax.value_and_grad(loss)(params, key)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    state = optimizer.init(params)
    losses = np.empty(num_steps)
    path = Path(checkpoint) if checkpoint is not None else None
    first = 0
    saved = read_checkpoint(path, signature)
    if saved is not None:
        first = saved["step"]
        params, state = jax.tree.map(jnp.asarray, saved["state"])
        losses[:first] = saved["losses"]
    with tqdm(total=num_steps, initial=first, disable=not progress, desc=label, unit="step") as bar:
        for step in range(first, num_steps):
            params, state, value = update(params, state, jax.random.fold_in(key, 2 + step))
            losses[step] = float(value)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{losses[step]:.4f}")
            bar.update()
            done = step + 1
            if path is not None and (done % checkpoint_every == 0 or done == num_steps):
                state_on_host = jax.tree.map(np.asarray, (params, state))
                write_checkpoint(path, signature, done, losses[:done], state_on_host)
    return PointEstimate(jax.tree.map(np.asarray, params), losses, resumed_from=first)
