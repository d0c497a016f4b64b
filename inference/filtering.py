r"""Fit a noise-driven sequence generator by its particle-filter likelihood (a filtering bound).

For a model whose likelihood integrates over a latent path (the emulator's hidden states driven
by noise), each step runs a bootstrap particle filter with :math:`P` particles on a batch of
:math:`B` of the :math:`N` observed sequences and maximises

.. math::
    \frac{1}{N T}\Big[\frac{N}{B}\sum_{b} \log \hat Z_b(W) + \log p(W)\Big],

the filtering variational objective (FIVO; Maddison et al. 2017, Le et al. 2018, Naesseth et al.
2018): since :math:`\hat Z_b` is unbiased for :math:`p(y_b \mid W)`,
:math:`\mathbb{E}\log\hat Z_b \le \log p(y_b \mid W)`, a bound that tightens as :math:`P` grows
and, unlike the evidence lower bound of an amortised Gaussian over the noise, does not favour
networks whose noise posterior is easy to approximate. Gradients flow through the particles
and their weights, not through the choice of resampled ancestors (the resampling term, whose
variance grows with the sequence length, is left out, as those papers recommend). The result
is a MAP-style point estimate of the weights (:class:`~probdyn.inference.PointEstimate`).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from jax import Array
from probdyn.inference.point_estimate import PointEstimate, minimise

from probdyn import particle_filter
from probdyn.errors import ConfigError


def fit_particle_filter(
    model,
    data,
    *,
    seed: int,
    num_steps: int = 2000,
    batch_size: int = 32,
    num_particles: int = 16,
    learning_rate: float = 3e-3,
    init: Mapping[str, Array] | None = None,
    progress: bool = True,
) -> PointEstimate:
    """Maximise the particle filter's log likelihood plus the weights' log prior.

    ``model`` provides :meth:`filter_parts` (its state-space form, e.g. :class:`~probdyn.
    models.RNNEmulator`) and priors over its weights; ``data`` is a Dataset or
    :class:`~probdyn.ModelData` of observed sequences. The loss is the negative objective per
    observed symbol (see the module docstring). Starts at ``init`` or a prior draw; Adam, its
    learning rate decaying from ``learning_rate`` to a tenth of it along a cosine.
    """
    data = model.as_data(data)
    if not 1 <= batch_size <= data.num_trials:
        raise ConfigError(f"batch_size={batch_size}; expected 1..{data.num_trials} sequences")
    if num_particles < 2:
        raise ConfigError(f"num_particles={num_particles}; expected >= 2")
    observations = jnp.asarray(data.observations)
    priors = model.site_priors(model.num_symbols)
    N, T = data.num_trials, data.num_timesteps

    def loss(params, key):
        key_batch, key_filter = jax.random.split(key)
        pick = jax.random.choice(key_batch, N, (batch_size,), replace=False)
        initial, transition, log_observation = model.filter_parts(params)

        def log_z(key, sequence):
            return particle_filter.log_likelihood_estimate(
                key, initial, transition, log_observation, sequence, num_particles
            )

        keys = jax.random.split(key_filter, batch_size)
        log_likelihood = N / batch_size * jnp.sum(jax.vmap(log_z)(keys, observations[pick]))
        log_prior = sum(jnp.sum(priors[name].log_prob(params[name])) for name in priors)
        return -(log_likelihood + log_prior) / (N * T)

    return minimise(
        loss,
        model,
        seed=seed,
        num_steps=num_steps,
        optimizer=optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.1)),
        init=init,
        progress=progress,
        label="particle filter",
    )
