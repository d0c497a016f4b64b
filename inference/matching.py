r"""Drift-diffusion matching: fit a network's latent drift and diffusion to a given SDE.

Nartallo-Kaluarachchi, Lambiotte & Goriely (2026) embed a target SDE
:math:`dx = f(x)\,dt + G(x)\,dW` in a recurrent network by regression: at states :math:`x_i`
drawn from the target's stationary distribution, the network's latent drift :math:`g` and noise
factor :math:`L` are fitted to the target's,

.. math::
    \ell = \frac{1}{N}\sum_i \frac{\|g(x_i) - f(x_i)\|^2}{s_f^2}
         + \lambda\,\frac{\|L(x_i) - \mathrm{chol}\,G G^\top(x_i)\|_F^2}{s_G^2},

with :math:`s_f^2`, :math:`s_G^2` the targets' mean squares (both terms are relative errors;
:math:`\lambda` = ``diffusion_weight``). A covariance has exactly one lower-triangular factor
with a positive diagonal, so matching factors matches covariances while staying linear in the
network's noise readout. The network's noise is state-dependent when the model's is
(:class:`probdyn.models.SDERNN` with ``diffusion="state"``); with a constant diffusion the
factor is fitted to the mean of the target's.

The other route needs only trajectories, not :math:`f` and :math:`G`: the path likelihood
(``SDERNN(observation="latent")`` with :func:`probdyn.inference.svi` or
:func:`~probdyn.inference.nuts`), which also gives a posterior. This one is a point estimate, as
in the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from probdyn.algorithms.sde import noise_covariance
from probdyn.errors import ConfigError
from probdyn.inference.point_estimate import FitOptions, PointEstimate, decaying_adam, minimise


def match_sde(
    model,
    drift: Callable[[Array], Array],
    noise,
    states: Array,
    *,
    seed: int,
    learning_rate: float = 1e-2,
    batch_size: int = 1024,
    diffusion_weight: float = 1.0,
    init: Mapping[str, Array] | None = None,
    **options,
) -> PointEstimate:
    r"""Fit ``model``'s latent drift and noise factor to a target SDE at ``states``.

    Parameters
    ----------
    model
        A model with ``vector_field``, ``noise_factor`` and ``latent_dim`` equal to the
        target's dimension (:class:`probdyn.models.SDERNN`).
    drift
        The target drift :math:`f` at one state, (dim,) -> (dim,).
    noise
        The target noise factor :math:`G`: constant (scalar, (dim,) or (dim, k)) or a function
        of one state returning one (:func:`probdyn.algorithms.sde.noise_covariance`).
    states
        (..., dim) states of the target, ideally from its stationary distribution (the loss
        weighs the state space as they do).
    batch_size
        States per step (all of them when fewer).
    init
        Starting weights; default a draw from the model's priors (``seed``) with the noise
        readout set to the target's mean factor
        (:meth:`~probdyn.models.SDERNN.with_constant_noise`), so that the noise term starts
        small instead of swamping the drift's.
    options
        Those of every fit (:class:`~probdyn.inference.point_estimate.FitOptions`:
        ``num_steps``, ``progress``, ``checkpoint``, ``checkpoint_every``, ``average_over``).

    Adam with ``learning_rate`` decaying along a cosine to a tenth. Returns the weights as a
    :class:`~probdyn.inference.point_estimate.PointEstimate` (``losses``: :math:`\ell` per step).

    """
    fit = FitOptions.from_keywords(options)
    states = np.asarray(states, dtype=float)
    if states.ndim < 2 or not np.isfinite(states).all():
        raise ConfigError(f"states must be finite, shaped (..., dim); got shape {states.shape}")
    states = states.reshape(-1, states.shape[-1])
    dim = states.shape[-1]
    if model.latent_dim != dim:
        raise ConfigError(
            f"the target has {dim} dims and the model's latent space {model.latent_dim}; "
            "matching embeds the target in the latent space, so they must agree"
        )
    if batch_size < 1 or diffusion_weight < 0:
        raise ConfigError(f"batch_size={batch_size}, diffusion_weight={diffusion_weight}")
    x = jnp.asarray(states)
    target_drift = jax.vmap(drift)(x)
    covariances = jax.vmap(noise_covariance(noise, dim))(x)
    target_factor = jnp.linalg.cholesky(covariances + 1e-10 * jnp.eye(dim))
    if not (jnp.isfinite(target_drift).all() and jnp.isfinite(target_factor).all()):
        raise ConfigError("the target's drift or noise is not finite at some of the states")
    drift_scale = jnp.mean(jnp.sum(target_drift**2, -1))
    noise_scale = jnp.mean(jnp.sum(target_factor**2, (-2, -1)))
    batch = min(batch_size, x.shape[0])

    def loss(params, key):
        pick = jax.random.choice(key, x.shape[0], (batch,), replace=False)
        field, factor = model.drift(params), model.noise_factor(params)
        drift_error = jax.vmap(lambda z, f: jnp.sum((field(z) - f) ** 2))(
            x[pick], target_drift[pick]
        )
        noise_error = jax.vmap(lambda z, L: jnp.sum((factor(z) - L) ** 2))(
            x[pick], target_factor[pick]
        )
        return (
            drift_error.mean() / drift_scale + diffusion_weight * noise_error.mean() / noise_scale
        )

    if init is None:
        priors = model.site_priors(dim)
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1), len(priors))
        init = {
            name: prior.sample(k) for k, (name, prior) in zip(keys, priors.items(), strict=True)
        }
        init = model.with_constant_noise(init, jnp.mean(target_factor, axis=0))
    return minimise(
        loss,
        model,
        seed=seed,
        optimizer=decaying_adam(learning_rate, fit.num_steps),
        init=init,
        label="drift-diffusion matching",
        settings={
            "states": x,
            "drift": target_drift,
            "noise": target_factor,
            "batch_size": batch,
            "learning_rate": learning_rate,
            "diffusion_weight": diffusion_weight,
        },
        options=fit,
    )
