r"""The state-space core: families stated as initial distribution, transition and emission.

A family with a Markov latent path states, for parameters :math:`\theta`,

.. math::
    x_0 = \iota_\theta(\xi_0),\qquad x_{t} = a_\theta(x_{t-1}, \xi_t, u_{t-1}),\qquad
    y_t \sim e_\theta(\cdot \mid x_t),\qquad \xi_t \sim N(0, I),

by :meth:`StateSpaceModel.initial_state` (:math:`\iota`), :meth:`StateSpaceModel.transition`
(:math:`a` as a function of one bin, which may take several Euler-Maruyama substeps:
:math:`\xi_t` is then (substeps, noise dim)) and :meth:`StateSpaceModel.emission`
(:math:`e`, a distribution over one bin's channels). How the path is handled is the one
option ``marginal``:

==============  ===========================================================================
``marginal``    the program's likelihood term
==============  ===========================================================================
``"sample"``    the noise :math:`\xi_{0:T-1}` is a site (``latent_noise``), the path a
                deterministic function of it (non-centred); the density is the joint
                :math:`p(y, \xi \mid \theta)`
``"particle"``  :math:`\log \hat p(y \mid \theta)` of a bootstrap particle filter
                (:mod:`probdyn.algorithms.particle_filter`), unbiased in :math:`p(y \mid \theta)`; a
                random estimate, so only for methods that accept one (SVI, importance
                sampling: ``log_evidence(method="iwae" | "heldout")``, held-out likelihoods)
``"exact"``     the family's closed form (Kalman filter, a Gaussian integral)
``"forward"``   the forward algorithm over discrete states
``"observed"``  the path is the data, scored by its transition density
==============  ===========================================================================

Which of these a family allows is :meth:`~probdyn.model.Model.marginals` (a refusal says why);
the plate over trials, the mask of missing bins, the weights of training regularisers and the
observation site are handled here once for every family (:meth:`StateSpaceModel.program`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array

from probdyn.algorithms import particle_filter
from probdyn.data.validate import OBSERVATION_VARIABLES
from probdyn.errors import ConfigError
from probdyn.model import Model, ModelData, observe


class FilterStep(NamedTuple):
    """What the particle filter reads at bin t: the data, its mask and weights, the input."""

    observation: Array
    mask: Array | None
    weight: Array | None
    previous_input: Array | None


def filter_sequences(data: ModelData) -> FilterStep:
    """The per-bin items of every trial, each (trial, time, ...), the input shifted by one.

    The transition into bin t reads the input of bin t-1 (held over the bin, as the sampled
    path does); bin 0 gets a zero input, which no transition reads.
    """
    inputs = data.inputs
    if inputs is not None:
        inputs = jnp.concatenate([jnp.zeros_like(inputs[:, :1]), inputs[:, :-1]], axis=1)
    return FilterStep(data.observations, data.mask, data.weights, inputs)


class StateSpaceModel(Model):
    """A family with a Markov latent path (module docstring): what it states, what it gets.

    Subclasses are frozen dataclasses with the fields ``marginal`` and ``num_particles``;
    they define :meth:`initial_state`, :meth:`transition`, :meth:`emission`, :attr:`noise_shape`
    and :attr:`latent_dim`, and :meth:`exact_marginal` where they allow ``"exact"``,
    ``"forward"`` or ``"observed"``.
    """

    #: Name of the noise site under ``marginal="sample"``.
    noise_site: ClassVar[str] = "latent_noise"
    marginal: str
    num_particles: int

    # -- what a family states ------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def noise_shape(self) -> tuple[int, int]:
        r"""(steps per bin, noise dimension) of :math:`\xi_t` for t >= 1."""

    @abc.abstractmethod
    def initial_state(self, params: Mapping[str, Array], noise: Array) -> Array:
        r""":math:`x_0` from standard-normal ``noise`` (noise dimension,)."""

    @abc.abstractmethod
    def transition(
        self, params: Mapping[str, Array], dt: float
    ) -> Callable[[Array, Array, Array | None], Array]:
        r"""``advance(x, noise, u)``: one bin :math:`x_{t-1} \to x_t`, ``noise`` (steps, dim).

        Work that depends only on the parameters is done here, once, outside the time loop.
        """

    @abc.abstractmethod
    def emission(self, params: Mapping[str, Array], x: Array) -> dist.Distribution:
        r""":math:`p(y_t \mid x_t)` at states ``x`` (..., latent): batch (..., channel)."""

    def exact_marginal(
        self, params: Mapping[str, Array], batch: ModelData, num_trials: int
    ) -> dist.Distribution:
        """The likelihood of ``num_trials`` trials in closed form (batch (trial,))."""
        raise ConfigError(f"{type(self).__name__} has no closed-form marginal")

    def marginals(self) -> dict[str, str | None]:
        """Bootstrap filter and sampled path, unless a family says otherwise."""
        return {"sample": None, "particle": None} | _no_closed_form(type(self).__name__)

    def derived_sites(self, params: dict[str, Array]) -> dict[str, Array]:
        """Deterministic sites recorded beside the parameters (none by default)."""
        return params

    # -- what every family gets ----------------------------------------------------------------
    @property
    def observation_site(self) -> str:
        """The observed site: the data variable's name (``y``, ``spikes``, ``symbols``)."""
        return OBSERVATION_VARIABLES[self.observation]

    def latent_path(
        self, params: Mapping[str, Array], noise: Array, dt: float, inputs: Array | None = None
    ) -> Array:
        r"""The path (time, latent) driven by ``noise`` (1 + (time - 1) steps, noise dim).

        ``noise[0]`` gives :math:`x_0`; each later bin takes the next ``steps`` rows; the
        input of bin t-1 drives the step into bin t.
        """
        steps, dim = self.noise_shape
        num_bins = (noise.shape[0] - 1) // steps
        x0 = self.initial_state(params, noise[0])
        advance = self.transition(params, dt)

        def step(x, item):
            xi, u = item
            x = advance(x, xi, u)
            return x, x

        items = (noise[1:].reshape(num_bins, steps, dim), None if inputs is None else inputs[:-1])
        _, rest = jax.lax.scan(step, x0, items)
        return jnp.concatenate([x0[None], rest])

    def filter_parts(self, params: Mapping[str, Array], dt: float = 1.0):
        """(initial, transition, log_observation) for :mod:`probdyn.algorithms.particle_filter`.

        The transition reads a :class:`FilterStep`; the log observation density leaves out
        masked channels and multiplies by the bins' weights.
        """
        steps, dim = self.noise_shape
        first = jax.vmap(lambda xi: self.initial_state(params, xi))
        move = jax.vmap(self.transition(params, dt), (0, 0, None))

        def initial(key, num):
            noise = jax.random.normal(key, (num, dim))
            return first(noise)

        def transition(key, states, item: FilterStep):
            noise = jax.random.normal(key, (states.shape[0], steps, dim))
            return move(states, noise, item.previous_input)

        def log_observation(states, item: FilterStep):
            log_p = self.emission(params, states).log_prob(item.observation)
            if item.mask is not None:
                log_p = jnp.where(item.mask, log_p, 0.0)
            if item.weight is not None:
                log_p = log_p * item.weight
            return log_p.reshape(states.shape[0], -1).sum(-1)

        return initial, transition, log_observation

    def particle_log_likelihood(
        self,
        params: Mapping[str, Array],
        data,
        *,
        num_particles: int | None = None,
        num_repeats: int = 4,
        seed: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        r"""Per-trial :math:`\log \hat p(y \mid \theta)` of a Dataset or ModelData, and its error.

        ``num_repeats`` independent filters of ``num_particles`` (default: the model's)
        particles; see :func:`probdyn.algorithms.particle_filter.log_likelihood`.
        """
        self._require_allowed("particle")
        data = self.as_data(data)
        params = {name: jnp.asarray(value) for name, value in params.items()}
        initial, transition, log_observation = self.filter_parts(params, data.dt)
        return particle_filter.log_likelihood(
            initial,
            transition,
            log_observation,
            filter_sequences(data),
            num_particles=num_particles or self.num_particles,
            num_repeats=num_repeats,
            seed=seed,
        )

    def program(self, data: ModelData, batch_size: int | None = None) -> None:
        """Parameters, then per trial the path (handled as ``marginal`` says) and the data."""
        p = self.derived_sites(self.sample_parameters(data))
        site = self.observation_site
        # Without data (prior or posterior predictive) a filtered path is simulated instead.
        unobserved = data.observations is None and self.marginal == "particle"
        marginal = "sample" if unobserved else self.marginal
        with self.trial_plate(data, batch_size) as index:
            batch = data if batch_size is None else data.take(index)
            if marginal == "sample":
                self._sampled_path(p, batch, site)
            elif marginal == "particle":
                key = numpyro.prng_key()
                if key is None:
                    raise ConfigError(
                        "marginal='particle' draws a random likelihood estimate and needs a "
                        "random key: run the program under numpyro.handlers.seed"
                    )
                likelihood = ParticleMarginal(self, p, batch, key)
                numpyro.sample(site, likelihood, obs=batch.observations)
            else:
                marginal = self.exact_marginal(p, batch, index.shape[0])
                numpyro.sample(site, marginal, obs=batch.observations)

    def _sampled_path(self, params, batch: ModelData, site: str) -> None:
        steps, dim = self.noise_shape
        T = batch.num_timesteps
        noise = numpyro.sample(
            self.noise_site, dist.Normal(0.0, 1.0).expand([1 + (T - 1) * steps, dim]).to_event(2)
        )
        inputs = batch.inputs if getattr(self, "input_dim", 0) else None
        if inputs is None:
            paths = jax.vmap(lambda xi: self.latent_path(params, xi, batch.dt))(noise)
        else:
            paths = jax.vmap(lambda xi, u: self.latent_path(params, xi, batch.dt, u))(noise, inputs)
        latents = numpyro.deterministic("latents", paths)
        observe(site, self.emission(params, latents), batch)

    def _require_allowed(self, marginal: str) -> None:
        reason = self.marginals().get(marginal, f"{marginal!r} is not a way to handle a path")
        if reason is not None:
            raise ConfigError(f"{type(self).__name__} cannot use marginal={marginal!r}: {reason}")


class ParticleMarginal(dist.Distribution):
    r"""Each trial's :math:`\log \hat p(y \mid \theta)` by a bootstrap particle filter.

    Batch (trial,), event one trial's observations. ``log_prob`` is a random estimate, drawn
    with ``key`` (split over trials), unbiased in :math:`p(y \mid \theta)`; its gradient is the
    filter's path-space (Fisher) estimate (``resampling_gradient``,
    :mod:`probdyn.algorithms.particle_filter`).
    """

    arg_constraints: ClassVar[dict] = {}
    support = dist.constraints.real

    def __init__(self, model: StateSpaceModel, params, batch: ModelData, key: Array):
        self.model, self.params, self.batch, self.key = model, params, batch, key
        shape = batch.observations.shape
        event = shape[1:]
        super().__init__(batch_shape=shape[:1], event_shape=event)

    def sample(self, key, sample_shape=()):
        """Not offered: simulate through ``marginal="sample"`` (the program does so)."""
        raise ConfigError("a particle-filter marginal has no sampler; simulate the sampled path")

    def log_prob(self, value):
        """Per-trial log likelihood estimates (the filter reads ``value`` and the batch)."""
        sequences = filter_sequences(self.batch)._replace(observation=value)
        return filtered_log_likelihoods(
            self.model, self.params, sequences, self.key, self.model.num_particles, self.batch.dt
        )


def filtered_log_likelihoods(
    model: StateSpaceModel,
    params: Mapping[str, Array],
    sequences: FilterStep,
    key: Array,
    num_particles: int,
    dt: float,
    *,
    resampling_gradient: bool = True,
) -> Array:
    r"""One particle filter per trial: :math:`\log\hat p(y_s \mid \theta)`, shape (trial,).

    ``resampling_gradient``: the path-space (Fisher) gradient; False gives FIVO's
    (:mod:`probdyn.algorithms.particle_filter`).
    """
    initial, transition, log_observation = model.filter_parts(params, dt)

    def one(key, sequence):
        return particle_filter.log_likelihood_estimate(
            key,
            initial,
            transition,
            log_observation,
            sequence,
            num_particles,
            resampling_gradient=resampling_gradient,
        )

    keys = jax.random.split(key, jax.tree.leaves(sequences)[0].shape[0])
    return jax.vmap(one)(keys, sequences)


def linear_readout(params: Mapping[str, Array], x: Array, observation: str) -> dist.Distribution:
    r"""The emission of the families with a linear readout (sites ``C``, ``d``, ``r``).

    :math:`N(Cx + d, \mathrm{diag}(r^2))` (``"gaussian"``) or
    :math:`\mathrm{Poisson}(\exp(Cx + d))`.
    """
    mean = x @ params["C"].T + params["d"]
    if observation == "gaussian":
        return dist.Normal(mean, params["r"])
    return dist.Poisson(jnp.exp(mean))


def _no_closed_form(family: str) -> dict[str, str]:
    reason = f"{family}'s path has no closed-form marginal"
    return {
        "exact": reason,
        "forward": f"{family}'s latent state is continuous, not discrete",
        "observed": f"{family} observes its path through an emission",
    }
