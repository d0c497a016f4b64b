"""What the analyses and inference methods require of a model or a result, declared once.

Each requirement is a :class:`typing.Protocol`: a class meets it by having the members, and
:func:`require` names the members a model lacks, so that a family added later learns what to
write from the error rather than from a traceback.

==========================  ===============================================================
protocol                    required by
==========================  ===============================================================
:class:`Posterior`          :func:`probdyn.fixed_points`, ``log_evidence(method=
                            "predictive")``, ``probdyn report``: every inference result
                            (``SVIResult``, ``MCMCResult``, ``PointEstimate``,
                            ``WeightPosterior``) implements it
:class:`Dynamical`          :func:`probdyn.fixed_points` (a vector field, its state size and
                            the readout in which draws are matched)
:class:`Amortisable`        amortised guides (``svi(guide="amortised" | "amortised-delta")``)
:class:`Filterable`         particle-filter likelihoods (``marginal="particle"``,
                            :func:`~probdyn.inference.fit_particle_filter`): the state-space
                            statement of :class:`probdyn.state_space.StateSpaceModel`
==========================  ===============================================================

Methods that need the log density to be a deterministic, differentiable function of the
parameters (NUTS, tempered SMC, bridge sampling, Laplace, quadrature) refuse a model whose
path is filtered (:func:`require_deterministic_density`); importance sampling and SVI take the
filter's unbiased estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
from jax import Array

from probdyn.errors import ConfigError


@runtime_checkable
class Posterior(Protocol):
    """Draws of the parameters and an ArviZ view: what every inference result offers."""

    def draws(self, num_draws: int | None = None, *, seed: int = 0) -> dict[str, np.ndarray]:
        """Parameter (and deterministic) draws with a leading draw axis.

        ``None``: every draw a sampler holds, or a guide's default number; a point estimate
        gives its one point whatever is asked.
        """
        ...

    def to_arviz(self) -> Any:
        """The result as an ArviZ DataTree (posterior group at least)."""
        ...


@runtime_checkable
class Dynamical(Protocol):
    """A model whose deterministic dynamics have fixed points to find."""

    kind: str
    latent_dim: int

    def vector_field(self, params: Mapping[str, Array], x: Array, u: Array | None = None):
        """:math:`f(x)` (a flow) or :math:`F(x)` (a map) at one latent state."""
        ...

    def emission_mean(self, params: Mapping[str, Array], x: Array) -> Array:
        """The predicted observation at one latent state."""
        ...


@runtime_checkable
class Amortisable(Protocol):
    """A model whose per-trial latent sites an encoder network can infer.

    ``local_site`` names the site (a model with several also gives ``local_sites``).
    """

    local_site: str

    def encoder(self) -> Any:
        """The Flax module mapping (observations, mask) to each local site's Gaussian."""
        ...


@runtime_checkable
class Filterable(Protocol):
    """A Markov latent path stated for a particle filter."""

    noise_shape: tuple[int, int]

    def initial_state(self, params: Mapping[str, Array], noise: Array) -> Array:
        """:math:`x_0` from standard-normal noise."""
        ...

    def transition(self, params: Mapping[str, Array], dt: float) -> Any:
        """``advance(x, noise, u)``: one bin of the dynamics."""
        ...

    def emission(self, params: Mapping[str, Array], x: Array) -> Any:
        """The distribution of one bin's observation given the state."""
        ...


def require(obj: Any, protocol: type, purpose: str) -> None:
    """Raise a :class:`ConfigError` naming what ``obj`` lacks for ``purpose``."""
    members = [
        name for name in getattr(protocol, "__protocol_attrs__", ()) if not name.startswith("_")
    ]
    missing = sorted(name for name in members if not hasattr(obj, name))
    if missing:
        raise ConfigError(
            f"{purpose} needs a {protocol.__name__}: {type(obj).__name__} has no "
            f"{', '.join(missing)} (see probdyn.capabilities)"
        )


def require_deterministic_density(model: Any, purpose: str) -> None:
    """Refuse a filtered path where the log density must be a deterministic function."""
    if getattr(model, "marginal", None) == "particle":
        raise ConfigError(
            f"{purpose} needs a deterministic log density; marginal='particle' gives a random "
            "estimate of the likelihood: use marginal='sample' (the path sampled with the "
            "parameters) or a closed form, or SVI / importance sampling with the filter"
        )
