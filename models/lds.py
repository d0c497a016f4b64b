r"""Linear dynamical system: the reference model, with an exact evidence for Gaussian emissions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax import Array

from probdyn.data.validate import OBSERVATION_VARIABLES
from probdyn.errors import PriorError
from probdyn.kalman import LinearGaussianStateSpace, kalman_smoother
from probdyn.model import Model, ModelData, observe


@dataclasses.dataclass(frozen=True, kw_only=True)
class LDS(Model):
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

    With Gaussian emissions and ``marginalize`` (the default where possible) the latent path is
    integrated out by a Kalman filter, so the program's log density is the exact marginal
    likelihood :math:`p(y \mid \theta)`. Otherwise the path is sampled non-centred: the site
    ``latent_noise`` (trial, time, latent) holds :math:`(x_0, \epsilon_{0:T-2})` and
    ``latents`` records the path. The observation site is named after the data variable
    (``y`` or ``spikes``).

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
    latent_dim: int
    emission_dim: int | None = None
    observation: str = "gaussian"
    marginalize: bool | None = None
    priors: Mapping[str, dist.Distribution] | None = None

    def __post_init__(self):
        if self.observation not in ("gaussian", "poisson"):
            raise PriorError(
                f"LDS observation={self.observation!r}; expected 'gaussian' or 'poisson'"
            )
        if self.marginalize and self.observation != "gaussian":
            raise PriorError(
                "marginalize=True needs Gaussian emissions (Poisson has no closed form)"
            )
        super().__post_init__()

    @property
    def marginalized(self) -> bool:
        """Whether the latent path is integrated out (Gaussian emissions, not switched off)."""
        return self.observation == "gaussian" and self.marginalize is not False

    def smoothed_latents(
        self, params: Mapping[str, Array], observations: Array, mask: Array | None = None
    ) -> tuple[Array, Array]:
        r"""Moments of :math:`p(x_t \mid y_{0:T-1}, \theta)` of one trial (time, emission).

        The Rauch-Tung-Striebel smoother (:func:`probdyn.kalman.kalman_smoother`): means
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

    def latent_path(self, params: Mapping[str, Array], noise: Array) -> Array:
        """Map standard-normal ``noise`` (time, latent) to the latent path (non-centred)."""

        def advance(x, eps):
            x = self.vector_field(params, x) + params["q"] * eps
            return x, x

        _, rest = jax.lax.scan(advance, noise[0], noise[1:])
        return jnp.concatenate([noise[:1], rest])

    def program(self, data: ModelData, batch_size: int | None = None) -> None:
        """Sample parameters, then (per trial) the latent path or its marginal, and observations."""
        p = self.sample_parameters(data)
        site = OBSERVATION_VARIABLES[self.observation]
        with self.trial_plate(data, batch_size) as index:
            batch = data if batch_size is None else data.take(index)
            num_trials = index.shape[0]
            if self.marginalized:
                marginal = LinearGaussianStateSpace(
                    p["A"],
                    p["b"],
                    jnp.diag(p["q"] ** 2),
                    p["C"],
                    p["d"],
                    p["r"] ** 2,
                    data.num_timesteps,
                    mask=batch.mask,
                    batch_shape=(num_trials,),
                )
                numpyro.sample(site, marginal, obs=batch.observations)
                return
            noise = numpyro.sample(
                "latent_noise",
                dist.Normal(0.0, 1.0).expand([data.num_timesteps, self.latent_dim]).to_event(2),
            )
            latents = numpyro.deterministic(
                "latents", jax.vmap(self.latent_path, (None, 0))(p, noise)
            )
            mean = latents @ p["C"].T + p["d"]
            if self.observation == "gaussian":
                emission = dist.Normal(mean, p["r"])
            else:
                emission = dist.Poisson(jnp.exp(mean))
            observe(site, emission, batch)
