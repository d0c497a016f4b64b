r"""Linear dynamical system: the reference model, with an exact evidence for Gaussian emissions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar, Literal

import jax.numpy as jnp
import numpyro.distributions as dist
from jax import Array

from probdyn.algorithms.kalman import LinearGaussianStateSpace, kalman_smoother
from probdyn.errors import PriorError
from probdyn.model import ModelData
from probdyn.schema import Count
from probdyn.state_space import StateSpaceModel, linear_readout


@dataclasses.dataclass(frozen=True, kw_only=True)
class LDS(StateSpaceModel):
    r"""Linear dynamical system with Gaussian or Poisson emissions.

    .. math::
        x_0 \sim N(0, I),\qquad x_{t+1} = A x_t + b + \mathrm{diag}(q)\,\epsilon_t,\quad
        \epsilon_t \sim N(0, I),

        y_t \sim N(C x_t + d,\ \mathrm{diag}(r^2))\quad\text{or}\quad
        y_t \sim \mathrm{Poisson}(\exp(C x_t + d)).

    ============  ====================  =====================================
    site          shape                 default prior
    ============  ====================  =====================================
    ``A``         (latent, latent)      Normal(0, 0.5) per entry
    ``b``         (latent,)             Normal(0, 1)
    ``q``         (latent,)             HalfNormal(1)
    ``C``         (emission, latent)    Normal(0, 1)
    ``d``         (emission,)           Normal(0, 1)
    ``r``         (emission,)           HalfNormal(1) (Gaussian emissions only)
    ============  ====================  =====================================

    The latent path (``marginal``, :mod:`probdyn.state_space`): ``"exact"`` (the default with
    Gaussian emissions) integrates it out by a Kalman filter, so the program's log density is
    the exact marginal likelihood :math:`p(y \mid \theta)`; ``"sample"`` (the default with
    Poisson emissions) samples it non-centred: the site ``latent_noise`` (trial, time, latent)
    holds :math:`(x_0, \epsilon_{0:T-2})` and ``latents`` records the path; ``"particle"``
    estimates :math:`p(y \mid \theta)` by a particle filter of ``num_particles`` states. The
    observation site is named after the data variable (``y`` or ``spikes``).

    As dynamics this is a map, :math:`F(x) = A x + b`.
    """

    kind: ClassVar[str] = "map"
    site_dims: ClassVar[dict[str, list[str]]] = {
        "A": ["latent", "latent_from"],
        "b": ["latent"],
        "q": ["latent"],
        "C": ["neuron", "latent"],
        "d": ["neuron"],
        "r": ["neuron"],
        "latent_noise": ["trial", "time", "latent"],
        "latents": ["trial", "time", "latent"],
    }
    latent_dim: Count
    emission_dim: Count | None = None
    observation: Literal["gaussian", "poisson"] = "gaussian"
    marginal: str | None = None
    num_particles: Count = 64
    priors: Mapping[str, dist.Distribution] | None = None

    def _check_hyperparameters(self):
        if self.marginal is None:
            default = "exact" if self.observation == "gaussian" else "sample"
            object.__setattr__(self, "marginal", default)

    def marginals(self) -> dict[str, str | None]:
        """Exact (Kalman) with Gaussian emissions; sampled or filtered paths always."""
        exact = None if self.observation == "gaussian" else "Poisson emissions have no closed form"
        return super().marginals() | {"exact": exact}

    @property
    def noise_shape(self) -> tuple[int, int]:
        """One standard-normal vector per bin."""
        return 1, self.latent_dim

    def initial_state(self, params: Mapping[str, Array], noise: Array) -> Array:
        r""":math:`x_0 = \xi_0 \sim N(0, I)`."""
        return noise

    def transition(self, params: Mapping[str, Array], dt: float):
        r""":math:`x_t = A x_{t-1} + b + q \odot \xi_t` (``u``, ``dt`` unused)."""

        def advance(x, noise, u):
            return self.vector_field(params, x) + params["q"] * noise[0]

        return advance

    def emission(self, params: Mapping[str, Array], x: Array) -> dist.Distribution:
        r""":math:`N(C x + d, \mathrm{diag}(r^2))` or :math:`\mathrm{Poisson}(\exp(C x + d))`."""
        return linear_readout(params, x, self.observation)

    def exact_marginal(
        self, params: Mapping[str, Array], batch: ModelData, num_trials: int
    ) -> dist.Distribution:
        """Each trial's Kalman-filter marginal likelihood."""
        p = params
        return LinearGaussianStateSpace(
            p["A"],
            p["b"],
            jnp.diag(p["q"] ** 2),
            p["C"],
            p["d"],
            p["r"] ** 2,
            batch.num_timesteps,
            mask=batch.mask,
            batch_shape=(num_trials,),
        )

    def smoothed_latents(
        self, params: Mapping[str, Array], observations: Array, mask: Array | None = None
    ) -> tuple[Array, Array]:
        r"""Moments of :math:`p(x_t \mid y_{0:T-1}, \theta)` of one trial (time, emission).

        The Rauch-Tung-Striebel smoother (:func:`probdyn.algorithms.kalman.kalman_smoother`): means
        (time, latent), covariances (time, latent, latent). Gaussian emissions only.
        """
        if self.observation != "gaussian":
            raise PriorError(
                "smoothed_latents needs observation='gaussian' (a linear-Gaussian model)"
            )
        p = params
        return kalman_smoother(
            p["A"], p["b"], jnp.diag(p["q"] ** 2), p["C"], p["d"], p["r"] ** 2, observations, mask
        )

    def default_priors(self, emission_dim: int) -> dict[str, dist.Distribution]:
        """Sites ``A, b, q, C, d`` (and ``r`` for Gaussian emissions) with their defaults."""
        D, N = self.latent_dim, emission_dim
        priors = {
            "A": dist.Normal(jnp.zeros((D, D)), 0.5),
            "b": dist.Normal(jnp.zeros(D), 1.0),
            "q": dist.HalfNormal(jnp.ones(D)),
            "C": dist.Normal(jnp.zeros((N, D)), 1.0),
            "d": dist.Normal(jnp.zeros(N), 1.0),
        }
        if self.observation == "gaussian":
            priors["r"] = dist.HalfNormal(jnp.ones(N))
        return priors

    def vector_field(self, params: Mapping[str, Array], x: Array, u: Array | None = None) -> Array:
        r"""The map :math:`F(x) = A x + b`."""
        return params["A"] @ x + params["b"]

    def emission_mean(self, params: Mapping[str, Array], x: Array) -> Array:
        r""":math:`C x + d` (Gaussian) or the rate per bin :math:`\exp(C x + d)` (Poisson)."""
        mean = params["C"] @ x + params["d"]
        return jnp.exp(mean) if self.observation == "poisson" else mean
