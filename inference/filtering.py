r"""Fit a noise-driven sequence generator by its particle-filter likelihood.

For a model whose likelihood integrates over a latent path (the emulator's hidden states driven
by noise), each step runs a bootstrap particle filter with :math:`P` particles on a batch of
:math:`B` of the :math:`N` observed sequences, and the loss is

.. math::
    -\frac{1}{N T}\Big[\frac{N}{B}\sum_{b} \log \hat Z_b(W) + \log p(W)\Big],

the negative filtering variational objective (FIVO; Maddison et al. 2017, Le et al. 2018,
Naesseth et al. 2018): since :math:`\hat Z_b` is unbiased for :math:`p(y_b \mid W)`,
:math:`\mathbb{E}\log\hat Z_b \le \log p(y_b \mid W)`, a bound that tightens as :math:`P`
grows and, unlike the evidence lower bound of an amortised Gaussian over the noise, does not
favour networks whose noise posterior is easy to approximate.

What the weights follow is the gradient. With ``resampling_gradient=True`` (the default) it
flows through the particles, their weights and the past weights that chose their ancestors,
which makes it Fisher's identity over the filter's surviving paths: an estimate of
:math:`\nabla_W \log p(y_b \mid W)` that is consistent as :math:`P` grows, so the fit climbs
the log posterior :math:`\log p(y \mid W) + \log p(W)` itself. Without it (FIVO's gradient,
the resampling term left out as those papers recommend) each observation's score is averaged
under the filter at its own time, a bias that does not shrink with :math:`P`
(:mod:`probdyn.algorithms.particle_filter`). The result is a MAP-style point estimate of the weights
(:class:`~probdyn.inference.PointEstimate`).

:func:`fit_particle_filter_posterior` goes on from such an estimate to a mean-field Gaussian
:math:`q(W) = \prod_i N(W_i; m_i, s_i^2)` by maximising, with reparameterised draws
:math:`W = m + s \odot \varepsilon`,

.. math::
    \mathcal{L}(m, s) = \mathbb{E}_q\Big[\frac{N}{B}\sum_b \log \hat Z_b(W) + \log p(W)\Big]
    + \sum_i \log s_i + \text{const} \;\le\; \log p(y_{1:N}),

the evidence lower bound with the likelihood replaced by its filter estimate (a lower bound
still, since :math:`\mathbb{E}\log\hat Z_b \le \log p(y_b \mid W)`). Its draws carry the
weights' uncertainty into the analyses (e.g. the probability of a single stable fixed point);
as every mean-field fit, it tends to understate the posterior's spread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax import Array

from probdyn.errors import ConfigError
from probdyn.inference.point_estimate import (
    FitOptions,
    PointEstimate,
    decaying_adam,
    minimise,
    point_datatree,
)
from probdyn.state_space import filter_sequences, filtered_log_likelihoods


def _filter_log_joint(
    model, data, batch_size: int, num_particles: int, resampling_gradient: bool
) -> tuple[Callable[[Mapping[str, Array], Array], Array], int]:
    """``log_joint(weights, key)``: (N/B) sum_b log Z_b(W) + log p(W) on a random batch; N T."""
    if not 1 <= batch_size <= data.num_trials:
        raise ConfigError(f"batch_size={batch_size}; expected 1..{data.num_trials} sequences")
    if num_particles < 2:
        raise ConfigError(f"num_particles={num_particles}; expected >= 2")
    sequences = filter_sequences(data)
    priors = model.site_priors(data.emission_dim)
    N = data.num_trials

    def log_joint(params, key):
        key_batch, key_filter = jax.random.split(key)
        pick = jax.random.choice(key_batch, N, (batch_size,), replace=False)
        batch = jax.tree.map(lambda a: a[pick], sequences)
        log_z = filtered_log_likelihoods(
            model,
            params,
            batch,
            key_filter,
            num_particles,
            data.dt,
            resampling_gradient=resampling_gradient,
        )
        log_likelihood = N / batch_size * jnp.sum(log_z)
        log_prior = sum(jnp.sum(priors[name].log_prob(params[name])) for name in priors)
        return log_likelihood + log_prior

    return log_joint, N * data.num_timesteps


def fit_particle_filter(
    model,
    data,
    *,
    seed: int,
    batch_size: int = 32,
    num_particles: int = 16,
    learning_rate: float = 3e-3,
    resampling_gradient: bool = True,
    init: Mapping[str, Array] | None = None,
    **options,
) -> PointEstimate:
    """Maximise the particle filter's log likelihood plus the weights' log prior.

    ``model`` is a :class:`~probdyn.state_space.StateSpaceModel` (any family with a Markov
    latent path, e.g. :class:`~probdyn.models.RNNEmulator` or a Poisson
    :class:`~probdyn.models.LDS`); ``data`` is a Dataset or
    :class:`~probdyn.ModelData` of observed sequences. The loss is the negative objective per
    observed symbol (see the module docstring). Starts at ``init`` or
    ``model.initial_weights``; Adam, its learning rate decaying from ``learning_rate`` to a
    tenth of it along a cosine. ``resampling_gradient``: the consistent (Fisher) gradient;
    False gives FIVO's.
    ``options``: those of every fit (:class:`~probdyn.inference.point_estimate.FitOptions`:
    ``num_steps`` (2000), ``progress``, ``checkpoint`` (the same call resumes from it),
    ``checkpoint_every``, ``average_over`` (the mean of the last this many iterates)).
    """
    fit = FitOptions.from_keywords(options)
    data = model.as_data(data)
    log_joint, num_symbols = _filter_log_joint(
        model, data, batch_size, num_particles, resampling_gradient
    )
    fitted = minimise(
        lambda params, key: -log_joint(params, key) / num_symbols,
        model,
        seed=seed,
        optimizer=decaying_adam(learning_rate, fit.num_steps),
        init=init,
        label="particle filter",
        settings=_filter_settings(
            data, batch_size, num_particles, learning_rate, resampling_gradient
        ),
        options=fit,
    )
    return dataclasses.replace(fitted, data=data)


@dataclasses.dataclass(frozen=True)
class WeightPosterior:
    """Mean-field Gaussian over the weights: ``loc`` and ``scale`` per site, loss per step."""

    loc: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]
    losses: np.ndarray
    resumed_from: int = 0
    model: object = None
    data: object = None

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The posterior mean, where one set of weights is wanted (e.g. to generate)."""
        return self.loc

    def draws(self, num_draws: int | None = None, *, seed: int = 0) -> dict[str, np.ndarray]:
        """``num_draws`` (default 200) weights from the posterior (leading draw axis)."""
        num_draws = num_draws or 200
        keys = jax.random.split(jax.random.key(seed), len(self.loc))
        return {
            name: np.asarray(
                self.loc[name]
                + self.scale[name] * jax.random.normal(key, (num_draws, *self.loc[name].shape))
            )
            for key, name in zip(keys, self.loc, strict=True)
        }

    def to_arviz(
        self, *, num_samples: int = 500, seed: int = 0, predictive: bool = True
    ) -> xr.DataTree:
        """ArviZ DataTree of ``num_samples`` draws (one chain); ``optimization``: the losses."""
        draws = self.draws(num_samples, seed=seed)
        return point_datatree(self, draws, "particle-filter mean field", predictive)


def fit_particle_filter_posterior(
    model,
    data,
    init: PointEstimate | Mapping[str, Array],
    *,
    seed: int,
    batch_size: int = 32,
    num_particles: int = 16,
    learning_rate: float = 3e-3,
    resampling_gradient: bool = True,
    init_scale: float = 1e-3,
    **options,
) -> WeightPosterior:
    r"""Mean-field Gaussian posterior over the weights by the filter's evidence bound.

    Starts at means ``init`` (a fit's weights, e.g. :func:`fit_particle_filter`'s) and scales
    ``init_scale``; the scales are :math:`s = \mathrm{softplus}(\rho)` of free :math:`\rho`.
    Each step draws one set of weights and runs the filter on ``batch_size`` sequences (module
    docstring); the loss is the negative bound per observed symbol. Adam and ``checkpoint`` as
    :func:`fit_particle_filter`.
    """
    if init_scale <= 0:
        raise ConfigError(f"init_scale={init_scale}; expected > 0")
    fit = FitOptions.from_keywords(options, num_steps=1000)
    data = model.as_data(data)
    log_joint, num_symbols = _filter_log_joint(
        model, data, batch_size, num_particles, resampling_gradient
    )
    start = init.params if isinstance(init, PointEstimate) else init
    rho = float(np.log(np.expm1(init_scale)))  # softplus(rho) = init_scale

    def loss(variational, key):
        key_weights, key_filter = jax.random.split(key)
        names = sorted(variational["loc"])
        keys = dict(zip(names, jax.random.split(key_weights, len(names)), strict=True))
        scale = jax.tree.map(jax.nn.softplus, variational["rho"])
        weights = {
            name: variational["loc"][name]
            + scale[name] * jax.random.normal(keys[name], variational["loc"][name].shape)
            for name in names
        }
        entropy = sum(jnp.sum(jnp.log(value)) for value in scale.values())
        return -(log_joint(weights, key_filter) + entropy) / num_symbols

    fitted = minimise(
        loss,
        model,
        seed=seed,
        optimizer=decaying_adam(learning_rate, fit.num_steps),
        init={
            "loc": {name: jnp.asarray(value) for name, value in start.items()},
            "rho": {name: jnp.full(jnp.shape(value), rho) for name, value in start.items()},
        },
        label="weight posterior",
        settings=_filter_settings(
            data, batch_size, num_particles, learning_rate, resampling_gradient
        ),
        options=fit,
    )
    scale = {
        name: np.asarray(jax.nn.softplus(value)) for name, value in fitted.params["rho"].items()
    }
    return WeightPosterior(
        fitted.params["loc"], scale, fitted.losses, fitted.resumed_from, model=model, data=data
    )


def _filter_settings(
    data, batch_size: int, num_particles: int, learning_rate: float, resampling_gradient: bool
) -> dict:
    """What defines a filter fit's objective besides the model, seed, steps and start."""
    return {
        "data": data,
        "batch_size": batch_size,
        "num_particles": num_particles,
        "learning_rate": learning_rate,
        "resampling_gradient": resampling_gradient,
    }
