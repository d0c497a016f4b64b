r"""Bootstrap particle filter: an unbiased estimate of a state-space model's likelihood.

For latent states :math:`h_t` with transition :math:`p(h_t \mid h_{t-1})` and observations
:math:`p(y_t \mid h_t)`, :math:`P` particles are propagated through the transition, weighted by
the observation density and resampled (systematically) at every step:

.. math::
    \hat Z = \prod_{t=0}^{T-1} \frac{1}{P} \sum_{i=1}^{P} p(y_t \mid h_t^{(i)}),

an unbiased estimate of :math:`p(y_{0:T-1})` (Del Moral 2004, *Feynman-Kac Formulae*; Andrieu,
Doucet & Holenstein 2010, JRSS B 72 269). :math:`\log \hat Z` is biased low by about half its
variance; :func:`log_likelihood` returns it with the spread over independent repeats, so that the
bias can be judged (variance well below 1 means it is negligible).

**Gradients.** With reparameterised transitions, autodiff of :math:`\log\hat Z` through the
particles and weights but not the resampling choices gives
:math:`\sum_t \sum_i W_t^{(i)} \nabla \log p(y_t \mid h_t^{(i)})`, each observation's score
averaged under the *filter* at its own time (:math:`W_t` the normalised weights). That is what
the filtering variational objectives use (Maddison et al. 2017; Le et al. 2018; Naesseth et al.
2018), and it is not consistent: it leaves out how the parameters move the past weights that
chose the ancestors, and its bias does not shrink as :math:`P` grows. With
``resampling_gradient=True`` each resampled particle keeps
:math:`\ell^{(a)} - \bot(\ell^{(a)})` of its ancestor's accumulated log weight :math:`\ell`
(:math:`\bot` stops the gradient; the value is zero, so :math:`\hat Z` is unchanged), which
turns the gradient into

.. math::
    \nabla \log \hat Z = \sum_i W_T^{(i)} \nabla \log p\big(y_{0:T-1} \mid
    h^{(i)}_{0:T-1}\big),

Fisher's identity :math:`\nabla \log p(y) = \mathbb{E}[\nabla \log p(y, \xi)
\mid y]` (the latent being the noise :math:`\xi`, whose law has no parameters) with the
smoothing distribution approximated by the filter's surviving paths: the stop-gradient
resampling of Scibior & Wood (2021, arXiv:2106.10314), the path-space score estimate of
Poyiadjis, Doucet & Singh (2011, Biometrika 98 65). It is consistent as :math:`P` grows, with a
variance that grows with :math:`T` as the paths coalesce.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from probdyn.errors import ConfigError

#: ``initial(key, num_particles) -> states``: particles for time 0 (leading axis: particle).
Initial = Callable[[Array, int], Array]
#: ``transition(key, states, item_t) -> states``: one step of the latent dynamics into bin t
#: (``item_t``: what the sequence holds at t, e.g. the observation and the previous input).
Transition = Callable[[Array, Array, Any], Array]
#: ``log_observation(states, item_t) -> (num_particles,)``: log density of one observation.
LogObservation = Callable[[Array, Any], Array]


def _systematic_resample(key: Array, log_weights: Array) -> Array:
    """Indices of a systematic resample of particles with the given (unnormalised) weights."""
    num = log_weights.shape[0]
    cumulative = jnp.cumsum(jax.nn.softmax(log_weights))
    positions = (jax.random.uniform(key) + jnp.arange(num)) / num
    return jnp.clip(jnp.searchsorted(cumulative, positions), 0, num - 1)


def log_likelihood_estimate(
    key: Array,
    initial: Initial,
    transition: Transition,
    log_observation: LogObservation,
    observations: Array,
    num_particles: int,
    *,
    resampling_gradient: bool = False,
) -> Array:
    r""":math:`\log \hat Z` for one sequence ``observations`` (an array or pytree of arrays).

    Each array has a leading time axis; the transition and observation read its items at t.

    The particles carry accumulated log weights :math:`\ell`; after a resample each restarts at
    :math:`\log \hat Z_{0:t}` (the log of the running estimate), plus, with
    ``resampling_gradient``, its ancestor's :math:`\ell^{(a)} - \bot(\ell^{(a)})` (module
    docstring). Both give the same value.
    """
    key_init, key_loop = jax.random.split(key)
    states = initial(key_init, num_particles)
    first = jax.tree.map(lambda a: a[0], observations)
    rest = jax.tree.map(lambda a: a[1:], observations)
    log_weights = log_observation(states, first)

    def step(carry, inputs):
        states, log_weights = carry
        key, y = inputs
        key_resample, key_move = jax.random.split(key)
        log_z = jax.nn.logsumexp(log_weights) - jnp.log(num_particles)
        ancestors = _systematic_resample(key_resample, log_weights)
        if resampling_gradient:
            kept = log_weights[ancestors]
            restart = jax.lax.stop_gradient(log_z) + (kept - jax.lax.stop_gradient(kept))
        else:
            restart = log_z
        states = transition(key_move, states[ancestors], y)
        return (states, restart + log_observation(states, y)), None

    keys = jax.random.split(key_loop, jax.tree.leaves(rest)[0].shape[0])
    (_, log_weights), _ = jax.lax.scan(step, (states, log_weights), (keys, rest))
    return jax.nn.logsumexp(log_weights) - jnp.log(num_particles)


def log_likelihood(
    initial: Initial,
    transition: Transition,
    log_observation: LogObservation,
    observations,
    *,
    num_particles: int = 1000,
    num_repeats: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-sequence :math:`\log \hat Z` of ``observations`` (sequence, time, ...), with its spread.

    ``observations`` may be a pytree of such arrays (see :func:`log_likelihood_estimate`).

    Returns the log of the mean of :math:`\hat Z` over ``num_repeats`` independent filters (still
    unbiased in :math:`Z`) and the standard error of that log-mean, both of shape (sequence,).
    """
    if num_particles < 1 or num_repeats < 2:
        raise ConfigError(
            f"num_particles={num_particles}, num_repeats={num_repeats}; expected >= 1 and >= 2 "
            "(the standard error needs two repeats)"
        )
    observations = jax.tree.map(jnp.asarray, observations)
    num_sequences = jax.tree.leaves(observations)[0].shape[0]
    keys = jax.random.split(jax.random.key(seed), (num_repeats, num_sequences))

    def one(key, sequence):
        return log_likelihood_estimate(
            key, initial, transition, log_observation, sequence, num_particles
        )

    runs = np.asarray(jax.jit(jax.vmap(jax.vmap(one), in_axes=(0, None)))(keys, observations))
    top = runs.max(axis=0)
    ratios = np.exp(runs - top)
    mean = ratios.mean(axis=0)
    # delta method: se(log mean Z) = sd(Z) / (sqrt(R) mean Z)
    se = ratios.std(axis=0, ddof=1) / (np.sqrt(num_repeats) * mean)
    return top + np.log(mean), se
