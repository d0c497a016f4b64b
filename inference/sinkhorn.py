r"""Fit a sequence generator by matching whole-sequence distributions (Sinkhorn divergence).

Torre et al. (2025) train their HMM-emulating RNNs this way: each step generates a batch of
sequences from fresh noise, one-hot encodes them with a straight-through Gumbel-softmax (the
forward pass uses the sampled one-hot symbols, the backward pass the gradient of the relaxed
softmax at temperature ``temperature``; Jang, Gu & Poole 2017), flattens each sequence to a
(time x symbols) vector and minimises the debiased Sinkhorn divergence
(:func:`probdyn.algorithms.optimal_transport.sinkhorn_divergence`, blur 0.2) to a batch of observed
sequences. The result is a point estimate of the weights; its likelihood on held-out sequences
comes from :meth:`probdyn.models.RNNEmulator.log_likelihood`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from jax import Array

from probdyn.algorithms.optimal_transport import sinkhorn_divergence
from probdyn.errors import ConfigError
from probdyn.inference.point_estimate import FitOptions, PointEstimate, minimise


def _straight_through_one_hot(key: Array, logits: Array, temperature: float) -> Array:
    """Sampled one-hot symbols whose gradient is the Gumbel-softmax relaxation's."""
    gumbel = jax.random.gumbel(key, logits.shape, logits.dtype)
    soft = jax.nn.softmax((logits + gumbel) / temperature)
    hard = jax.nn.one_hot(jnp.argmax(logits + gumbel, axis=-1), logits.shape[-1])
    return hard + soft - jax.lax.stop_gradient(soft)


def fit_sinkhorn(
    model,
    data,
    *,
    seed: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    blur: float = 0.2,
    temperature: float = 1.0,
    init: Mapping[str, Array] | None = None,
    **options,
) -> PointEstimate:
    """Minimise the Sinkhorn divergence between generated and observed symbol sequences.

    ``model`` generates sequences from parameters and noise (:class:`~probdyn.models.
    RNNEmulator`); ``data`` is a Dataset or :class:`~probdyn.ModelData` of ``symbols``. Starts at
    ``init`` or ``model.initial_weights``; Adam with ``learning_rate``. ``options``: those of
    every fit (:class:`~probdyn.inference.point_estimate.FitOptions`: ``num_steps`` (2000),
    ``progress``, ``checkpoint``, ``checkpoint_every``, ``average_over``).
    """
    fit = FitOptions.from_keywords(options)
    data = model.as_data(data)
    if batch_size < 2:
        raise ConfigError(f"batch_size={batch_size}; expected >= 2")
    observed = jax.nn.one_hot(data.observations, model.num_symbols)
    observed = observed.reshape(data.num_trials, -1)
    T = data.num_timesteps

    def loss(params, key):
        key_noise, key_symbols, key_batch = jax.random.split(key, 3)
        noise = jax.random.normal(key_noise, (batch_size, T, model.noise_dim))
        hidden = jax.vmap(lambda xi: model.latent_path(params, xi, 1.0))(noise)
        generated = _straight_through_one_hot(
            key_symbols, hidden @ params["W_out"].T, temperature
        ).reshape(batch_size, -1)
        pick = jax.random.choice(
            key_batch, data.num_trials, (min(batch_size, data.num_trials),), replace=False
        )
        return sinkhorn_divergence(generated, observed[pick], blur=blur)

    fitted = minimise(
        loss,
        model,
        seed=seed,
        optimizer=optax.adam(learning_rate),
        init=init,
        label="sinkhorn",
        settings={
            "data": data,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "blur": blur,
            "temperature": temperature,
        },
        options=fit,
    )
    return dataclasses.replace(fitted, data=data)
