r"""Hidden Markov model with discrete states summed out (Torre et al., NeurIPS 2025, family 3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar, Literal

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array

from probdyn.algorithms.hmm import DiscreteHMM
from probdyn.data.validate import OBSERVATION_VARIABLES
from probdyn.errors import ConfigError
from probdyn.model import Model, ModelData
from probdyn.schema import Count, NonNegative

#: Sites whose leading axes are states (permuted together by :meth:`HMM.relabel`).
_STATE_SITES = {
    "initial": 1,
    "transition": 2,
    "emission_probs": 1,
    "rates": 1,
    "means": 1,
    "scales": 1,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class HMM(Model):
    r"""Hidden Markov model: :math:`K` discrete states, emissions per state, states marginalised.

    .. math::
        z_0 \sim \mathrm{Cat}(\pi),\qquad z_t \mid z_{t-1} \sim \mathrm{Cat}(P_{z_{t-1}}),\qquad
        y_t \mid z_t \sim \begin{cases}
            \mathrm{Cat}(E_{z_t}) & \text{categorical (symbols)}\\
            \prod_n \mathrm{Poisson}(\lambda_{z_t n}) & \text{Poisson (spike counts per bin)}\\
            \prod_n N(\mu_{z_t n}, s_{z_t n}^2) & \text{Gaussian}
        \end{cases}

    ==================  ==============  ===================================================
    site                shape           default prior
    ==================  ==============  ===================================================
    ``initial``         (K,)            Dirichlet(1)
    ``transition``      (K, K)          rows Dirichlet(1 + ``sticky`` on the diagonal)
    ``emission_probs``  (K, S)          rows Dirichlet(1) (categorical)
    ``rates``           (K, N)          Gamma(2, 2), mean 1 count per bin (Poisson)
    ``means``           (K, N)          Normal(0, 2) (Gaussian)
    ``scales``          (K, N)          HalfNormal(1) (Gaussian)
    ==================  ==============  ===================================================

    The program's likelihood is the forward algorithm (:class:`probdyn.algorithms.hmm.DiscreteHMM`),
    so NUTS and SMC run over the parameters only. Missing bins (NaN) drop out per channel.
    ``forward="parallel"`` runs it as an associative scan (depth :math:`\log T` instead of
    :math:`T`: the faster choice for long sequences on accelerators; the same value up to rounding).

    Label switching: states are exchangeable under these priors, so draws may differ by a
    permutation. :meth:`identify` (applied to NUTS and SVI draws) orders each draw's states by
    their mean emission: the expected symbol index :math:`\sum_s s\,E_{ks}` (categorical) or the
    mean over channels of :math:`\lambda_{k\cdot}` or :math:`\mu_{k\cdot}`, ascending.
    """

    kind: ClassVar[str] = "map"
    site_dims: ClassVar[dict[str, list[str]]] = {
        "initial": ["state"],
        "transition": ["state", "next_state"],
        "emission_probs": ["state", "symbol"],
        "rates": ["state", "neuron"],
        "means": ["state", "neuron"],
        "scales": ["state", "neuron"],
    }
    num_states: Count
    observation: Literal["categorical", "poisson", "gaussian"] = "categorical"
    sticky: NonNegative = 0.0
    emission_dim: Count | None = None
    forward: Literal["sequential", "parallel"] = "sequential"
    marginal: str = "forward"
    priors: Mapping[str, dist.Distribution] | None = None

    def marginals(self) -> dict[str, str | None]:
        """The forward algorithm: exact over discrete states."""
        discrete = "the states are discrete: no reparameterised path"
        return {
            "forward": None,
            "exact": "the forward algorithm is this family's exact marginal: marginal='forward'",
            "particle": "the forward algorithm is exact for discrete states; a filter adds noise",
            "sample": discrete,
            "observed": "the states are never observed",
        }

    def default_priors(self, emission_dim: int) -> dict[str, dist.Distribution]:
        """Start and transition rows, then the emission sites of the chosen observation."""
        K, N = self.num_states, emission_dim
        priors = {
            "initial": dist.Dirichlet(jnp.ones(K)),
            "transition": dist.Dirichlet(jnp.ones((K, K)) + self.sticky * jnp.eye(K)),
        }
        if self.observation == "categorical":
            priors["emission_probs"] = dist.Dirichlet(jnp.ones((K, N)))
        elif self.observation == "poisson":
            priors["rates"] = dist.Gamma(jnp.full((K, N), 2.0), 2.0)
        else:
            priors["means"] = dist.Normal(jnp.zeros((K, N)), 2.0)
            priors["scales"] = dist.HalfNormal(jnp.ones((K, N)))
        return priors

    @property
    def latent_dim(self) -> int:
        """K: the latent view of an HMM is a distribution over its states."""
        return self.num_states

    def emission_distribution(self, params: Mapping[str, Array]) -> dist.Distribution:
        """Per-state emission, batch shape (K,) (categorical) or (K, N) (Poisson, Gaussian)."""
        if self.observation == "categorical":
            return dist.Categorical(probs=params["emission_probs"])
        if self.observation == "poisson":
            return dist.Poisson(params["rates"])
        return dist.Normal(params["means"], params["scales"])

    def vector_field(self, params, x, u=None):
        """An HMM has no continuous state: use :meth:`stationary_distribution` instead."""
        raise ConfigError(
            "an HMM has discrete states and no vector field; its stationary distribution "
            "(HMM.stationary_distribution) plays the role of the fixed point"
        )

    @property
    def _mean_site(self) -> str:
        """The site holding each state's mean emission (Poisson or Gaussian)."""
        return "rates" if self.observation == "poisson" else "means"

    def emission_mean(self, params, x):
        """Expected observation under a state distribution ``x`` (K,)."""
        if self.observation == "categorical":
            return x @ params["emission_probs"]
        return x @ params[self._mean_site]

    @staticmethod
    def stationary_distribution(transition: Array) -> np.ndarray:
        r"""Stationary distribution(s) :math:`p = pP` of transition matrices (..., K, K)."""
        transition = np.asarray(transition)
        K = transition.shape[-1]
        # p (P - I) = 0 with one equation replaced by sum(p) = 1 (unique for an irreducible chain).
        system = np.swapaxes(transition, -1, -2) - np.eye(K)
        system[..., -1, :] = 1.0
        rhs = np.zeros((*transition.shape[:-2], K, 1))
        rhs[..., -1, 0] = 1.0
        return np.linalg.solve(system, rhs)[..., 0]

    @property
    def num_labels(self) -> int:
        """The states are the exchangeable labels."""
        return self.num_states

    def relabel(self, params: Mapping[str, Array], order) -> dict[str, Array]:
        """Permute the state axes of every state site (both axes of ``transition``)."""
        params = dict(params)
        lead = np.ndim(order) - 1
        xp = np if isinstance(order, np.ndarray) else jnp
        for name, state_axes in _STATE_SITES.items():
            if name not in params:
                continue
            value = params[name]
            for axis in range(lead, lead + state_axes):
                index = xp.reshape(order, (*np.shape(order), *([1] * (np.ndim(value) - lead - 1))))
                index = xp.moveaxis(index, lead, axis)
                value = xp.take_along_axis(value, index, axis=axis)
            params[name] = value
        return params

    def identify(self, draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Relabel each draw's states in ascending order of mean emission (see class doc)."""
        draws = {name: np.asarray(value) for name, value in draws.items()}
        if self.observation == "categorical":
            probs = draws["emission_probs"]
            key = probs @ np.arange(probs.shape[-1])
        else:
            key = draws[self._mean_site].mean(-1)
        return self.relabel(draws, np.argsort(key, axis=-1, kind="stable"))

    def program(self, data: ModelData, batch_size: int | None = None) -> None:
        """Sample parameters; the observation site is the HMM marginal of each trial."""
        p = self.sample_parameters(data)
        K, T = self.num_states, data.num_timesteps
        emission = self.emission_distribution(p)
        site = OBSERVATION_VARIABLES[self.observation]
        with self.trial_plate(data, batch_size) as index:
            batch = data if batch_size is None else data.take(index)
            if batch.mask is not None:
                # Per-channel missing bins: a time-varying emission with the mask inside.
                mask = batch.mask[:, :, None, :]
                emission = emission.expand((mask.shape[0], T, K, data.emission_dim)).mask(mask)
            if self.observation != "categorical":
                emission = emission.to_event(1)
            hmm = DiscreteHMM(
                jnp.log(p["initial"]),
                jnp.log(p["transition"]),
                emission,
                num_steps=T,
                method=self.forward,
                initial_step=0,
            )
            numpyro.sample(site, hmm, obs=batch.observations)
