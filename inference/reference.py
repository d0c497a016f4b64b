r"""Gaussian references on unconstrained space, fitted to a posterior before sampling it.

A reference :math:`q(z) = N(z; \mu, \Sigma)` on the sampler's coordinates (the flat vector of
:class:`~probdyn.inference.density.Density`) is where the samplers start when it is free to
know where the posterior lies:

- NUTS takes its covariance as inverse mass matrix and its draws as starting points
  (:func:`~probdyn.inference.nuts` with ``init``), so its warm-up only tunes the step size;
- tempered SMC and AIS temper from :math:`q` to the posterior instead of from the prior,

  .. math::
      \pi_\beta(z) \propto q(z)^{1-\beta}\,\big(\pi_0(z) L(z)\big)^\beta,

  which keeps :math:`\hat Z` unbiased for :math:`p(y) = \int \pi_0 L` (:math:`q` is
  normalised) and needs few steps when :math:`q` is close.

Two fits: :func:`laplace_reference`, the Laplace approximation at the mode
(:math:`\mu = \hat z`, :math:`\Sigma = H^{-1}`), and :func:`guide_reference`, the mean and
covariance of an SVI guide's draws (any guide). ``scale`` widens :math:`\Sigma` by
:math:`\text{scale}^2`: a reference a little wider than the posterior keeps the importance
weights of its tails bounded.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from probdyn.errors import ConfigError
from probdyn.inference.density import Density
from probdyn.inference.mode import find_mode

#: Guide draws that set a reference's covariance: this many per free dimension, at least
#: MIN_GUIDE_DRAWS.
GUIDE_DRAWS_PER_DIM = 20
MIN_GUIDE_DRAWS = 1000


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["mean", "chol"], meta_fields=["source"]
)
@dataclasses.dataclass(frozen=True)
class GaussianReference:
    r""":math:`N(\mu, L L^\top)` on the unconstrained vector; ``source`` says how it was fitted."""

    mean: Array
    chol: Array
    source: str

    @property
    def covariance(self) -> Array:
        r""":math:`\Sigma = L L^\top`."""
        return self.chol @ self.chol.T

    def sample(self, key: Array, num_samples: int) -> Array:
        """(num_samples, dim) draws."""
        noise = jax.random.normal(key, (num_samples, self.mean.shape[0]), self.mean.dtype)
        return self.mean + noise @ self.chol.T

    def log_prob(self, z: Array) -> Array:
        r""":math:`\log N(z; \mu, L L^\top)` of one vector."""
        white = jax.scipy.linalg.solve_triangular(self.chol, z - self.mean, lower=True)
        log_det = jnp.sum(jnp.log(jnp.diagonal(self.chol)))
        return -0.5 * (white @ white) - log_det - 0.5 * z.shape[0] * math.log(2 * math.pi)


def _from_covariance(mean, covariance: np.ndarray, scale: float, source: str):
    covariance = 0.5 * (covariance + covariance.T)
    jitter = 1e-10 * max(1.0, float(np.max(np.diag(covariance))))
    chol = np.linalg.cholesky(covariance + jitter * np.eye(covariance.shape[0]))
    dtype = jnp.result_type(float)
    return GaussianReference(jnp.asarray(mean, dtype), jnp.asarray(scale * chol, dtype), source)


def laplace_reference(
    density: Density, key: Array, *, num_starts: int = 16, scale: float = 1.0
) -> GaussianReference:
    r"""The Laplace approximation: :math:`N(\hat z, \text{scale}^2 H^{-1})` at the mode.

    The mode is the best of ``num_starts`` searches from prior draws. A reference at a lesser
    local mode misleads every sampler started from it: a canonical LDS whose first channel
    barely loads has one (the latent axis flipped, held by the positive diagonal of C), and 4
    starts all ended there on one of ten seeds of docs/geometry.md's benchmark (SMC 12.9 nats
    low); hence 16.
    """
    mode, _, hessian = find_mode(density, key, num_starts=num_starts, with_hessian=True)
    np.negative(hessian, out=hessian)
    try:
        covariance = np.linalg.inv(np.linalg.cholesky(hessian))
    except np.linalg.LinAlgError:
        raise FloatingPointError(
            "the Hessian at the mode is not positive definite: no Laplace reference; use "
            "reference='prior' or a guide"
        ) from None
    covariance = covariance.T @ covariance
    return _from_covariance(mode, covariance, scale, "laplace")


def guide_reference(
    svi_result, density: Density, *, seed: int, scale: float = 1.0, dense: bool = True
) -> GaussianReference:
    r"""Mean and covariance (its diagonal unless ``dense``) of an SVI guide's draws.

    :math:`\max(1000, 20 n)` draws mapped to the sampler's coordinates, so every guide
    (mean-field, full-rank, Laplace) gives its reference the same way.
    """
    num = max(MIN_GUIDE_DRAWS, GUIDE_DRAWS_PER_DIM * density.dim)
    draws = svi_result.sample_posterior(num, seed=seed)
    z = jax.vmap(density.unconstrain)({k: draws[k] for k in density.shapes})
    z = np.asarray(z, np.float64)
    covariance = np.cov(z, rowvar=False).reshape(density.dim, density.dim)
    if not dense:
        covariance = np.diag(np.diag(covariance))
    return _from_covariance(z.mean(axis=0), covariance, scale, "guide")


class TemperingPath(NamedTuple):
    r"""The two ends of a tempering path :math:`\pi_\beta \propto q\,\ell^\beta`.

    ``log_start(z, reference)``: :math:`\log q` (normalised); ``log_increment(z, reference)``:
    :math:`\log \ell`, so that :math:`q\,\ell = \pi_0 L`; ``draw(key, n, reference)``: n
    draws of :math:`q`. ``reference`` holds the fitted Gaussian (None from the prior): the
    samplers pass it to their compiled programs as an argument, so a program compiled for one
    fit is reused for the next (a closed-over fit would be a constant of the program).
    ``label`` names the start.
    """

    log_start: Callable[[Array, GaussianReference | None], Array]
    log_increment: Callable[[Array, GaussianReference | None], Array]
    draw: Callable[[Array, int, GaussianReference | None], Array]
    reference: GaussianReference | None
    label: str


def tempering_path(
    density: Density,
    key: Array,
    *,
    reference: str,
    svi_result=None,
    scale: float = 1.5,
    prior_weight: float = 0.05,
) -> TemperingPath:
    r"""From the prior (:math:`q = \pi_0`, :math:`\ell = L`), a Laplace fit or a guide's.

    A fitted start is the defensive mixture (Hesterberg 1995)

    .. math::
        q = (1 - \epsilon)\,N(\mu, \text{scale}^2\Sigma) + \epsilon\,\pi_0,

    :math:`\epsilon` = ``prior_weight``: the Gaussian, a little wider than the fit, puts the
    particles where the posterior is; the prior's share keeps :math:`\ell = \pi_0 L / q \le
    L / \epsilon` bounded wherever the Gaussian's tails are too light (a skewed posterior) or
    the fit is poor, as the prior's path is. Widening costs efficiency in every dimension (a
    Gaussian target seen through one ``scale`` times wider keeps
    :math:`\sqrt{2s^2 - 1}/s^2` of its effective sample size per dimension: 0.95 at 1.2, 0.83
    at 1.5), which the tempering then pays in steps; on the 15-dimensional LDS of
    docs/geometry.md 1.5 gave the more accurate estimates for one more step, hence the default.
    """
    if (reference == "guide") != (svi_result is not None):
        raise ConfigError("reference='guide' needs svi_result, and svi_result needs it")
    if reference == "prior":
        return TemperingPath(
            lambda z, _: density.log_prior(z),
            lambda z, _: density.log_likelihood(z),
            lambda key, num, _: density.sample_prior(key, num),
            None,
            "prior",
        )
    if reference == "laplace":
        q = laplace_reference(density, key, scale=scale)
    elif reference == "guide":
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        q = guide_reference(svi_result, density, seed=seed, scale=scale)
    else:
        raise ConfigError(f"reference={reference!r}; expected 'prior', 'laplace' or 'guide'")
    log_share = (math.log1p(-prior_weight), math.log(prior_weight) if prior_weight else -math.inf)

    def log_start(z, q):
        parts = jnp.stack([q.log_prob(z) + log_share[0], density.log_prior(z) + log_share[1]])
        return jax.nn.logsumexp(parts)

    def log_increment(z, q):
        return density.log_posterior(z) - log_start(z, q)

    def draw(key, num, q):
        key_gauss, key_prior, key_pick = jax.random.split(key, 3)
        from_prior = jax.random.bernoulli(key_pick, prior_weight, (num,))
        gauss, prior = q.sample(key_gauss, num), density.sample_prior(key_prior, num)
        return jnp.where(from_prior[:, None], prior, gauss)

    label = f"{reference} x {scale:g}, prior share {prior_weight:g}"
    return TemperingPath(log_start, log_increment, draw, q, label)
