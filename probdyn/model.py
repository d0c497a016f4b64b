r"""The interface every model family implements.

A model is a frozen dataclass of hyperparameters and priors. Calling it runs its NumPyro program
on a :class:`ModelData` (or on a Dataset, which :meth:`Model.prepare` converts). It exposes

- ``kind``: ``"flow"`` (continuous time, fixed points solve :math:`f(x) = 0`) or ``"map"``
  (discrete time, fixed points solve :math:`F(x) = x`);
- :meth:`Model.vector_field` ``(params, x, u=None)``: the deterministic part of the dynamics;
- :meth:`Model.emission_mean` ``(params, x)``: the predicted observation at a latent state (the
  identifiable space in which fixed points of different posterior draws are matched);
- :meth:`Model.default_priors`: every parameter site, its shape and default prior.

Custom priors: ``Model(..., priors={"site": distribution})`` replaces a site's prior without
editing the program. A prior whose total shape (batch + event) equals the site's shape is
accepted whatever its split between batch and event dims; a scalar prior is broadcast to the
site's shape; ``dist.Delta(value)`` fixes the parameter. An unknown site, a wrong shape or a
support that does not match the site's constraint is a :class:`probdyn.PriorError` that lists the
valid sites and their shapes.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import xarray as xr
from jax import Array

from probdyn.data.validate import OBSERVATION_VARIABLES, validate
from probdyn.errors import DataError, PriorError
from probdyn.schema import field_types, violation

#: The ways a program can handle a latent path (see :mod:`probdyn.state_space`).
MARGINALS = {
    "exact": "integrated out in closed form (Kalman filter, Gaussian integral)",
    "forward": "summed over discrete states by the forward algorithm",
    "particle": "estimated by a bootstrap particle filter (unbiased in the likelihood)",
    "sample": "sampled as sites of the program",
    "observed": "the path is the data, scored by its transition density",
}


@dataclasses.dataclass(frozen=True)
class ModelData:
    """Arrays a model program reads, with the sizes it needs as static metadata.

    ``observations`` has shape (trial, time, neuron) (or (trial, time) for symbols) with missing
    bins filled by 0 and flagged False in ``mask``; ``inputs`` is (trial, time, input) or None.
    ``observations`` is None for prior predictive runs, which then need only the sizes.
    ``weights`` (like ``observations``, or None: all 1) multiply each bin's log likelihood in
    programs that emit through :func:`observe` (training regularisers set them, see
    :class:`probdyn.inference.objectives.AutoencoderELBO`). ``coords`` carries the recording's
    labels (trial and unit ids, times, unit and trial columns: name -> (dims, values)) to the
    results; labels only, they are not part of the pytree (None inside a transformed function)
    nor of the data's identity, and a subset of trials (:meth:`take`) drops them.
    """

    observations: Array | None
    mask: Array | None
    inputs: Array | None
    num_trials: int
    num_timesteps: int
    emission_dim: int
    dt: float
    weights: Array | None = None
    coords: Mapping[str, tuple[tuple[str, ...], np.ndarray]] | None = dataclasses.field(
        default=None, compare=False, repr=False
    )

    def take(self, index: Array) -> ModelData:
        """The same data restricted to the trials at ``index`` (for minibatches)."""

        def pick(a):
            return None if a is None else a[index]

        return dataclasses.replace(
            self,
            observations=pick(self.observations),
            mask=pick(self.mask),
            inputs=pick(self.inputs),
            weights=pick(self.weights),
            coords=None,
        )

    @property
    def fully_observed(self) -> bool:
        """Whether the program may skip masking (no data, or no missing bin)."""
        return self.mask is None


_ARRAYS = ("observations", "mask", "inputs", "weights")
_SIZES = ("num_trials", "num_timesteps", "emission_dim", "dt")


def _flatten_data(data: ModelData):
    """Arrays as leaves, sizes as static metadata; the coordinates are left out."""
    arrays = tuple(getattr(data, name) for name in _ARRAYS)
    return arrays, tuple(getattr(data, name) for name in _SIZES)


def _unflatten_data(sizes, arrays) -> ModelData:
    return ModelData(
        **dict(zip(_ARRAYS, arrays, strict=True)), **dict(zip(_SIZES, sizes, strict=True))
    )


# Registered by hand: register_dataclass in older JAX (0.7.2 tried) refuses a field that is
# neither data nor meta.
jax.tree_util.register_pytree_node(ModelData, _flatten_data, _unflatten_data)


class Weighted(dist.Distribution):
    """``base`` with each element's log density multiplied by ``weights`` (same batch shape)."""

    arg_constraints: ClassVar[dict] = {}

    def __init__(self, base: dist.Distribution, weights: Array):
        self.base, self.weights = base, weights
        super().__init__(base.batch_shape, base.event_shape)

    @property
    def support(self):
        """The base distribution's support."""
        return self.base.support

    def sample(self, key, sample_shape=()):
        """Draws of the base distribution (weights change densities, not draws)."""
        return self.base.sample(key, sample_shape)

    def log_prob(self, value):
        """Weighted elementwise log density."""
        return self.base.log_prob(value) * self.weights


def observe(site: str, emission: dist.Distribution, batch: ModelData) -> Array:
    """The observation site of a (trial, time[, channel]) program, inside its trial plate.

    ``emission`` has batch shape (trial, time, channel), or (trial, time) for symbols; bins
    where ``batch.mask`` is False are left out and ``batch.weights`` (if any) weight each
    bin's log density. The site's event is all but the trial axis, so its log density is one
    number per trial.
    """
    if batch.mask is not None:
        emission = emission.mask(batch.mask)
    if batch.weights is not None:
        emission = Weighted(emission, batch.weights)
    event = len(emission.batch_shape) - 1
    return numpyro.sample(site, emission.to_event(event), obs=batch.observations)


def pointwise_log_prob(distribution: dist.Distribution, value: Array) -> Array | None:
    """One observation site's log density split into one term per observed element.

    The terms have ``value``'s shape (trial, time[, channel]) and sum to the site's log density
    per trial. A distribution over whole trials that can split its density (a Kalman or
    forward-algorithm marginal: each element's density given the elements before it) offers
    ``pointwise_log_prob``; a site of independent elements (an emission given a sampled path)
    is unwrapped from its event, mask and weights. None where neither holds (a particle-filter
    estimate, which is one number per trial).
    """
    if hasattr(distribution, "pointwise_log_prob"):
        terms = distribution.pointwise_log_prob(value)
        return terms if terms.shape == value.shape else None
    if isinstance(distribution, dist.Independent):
        return pointwise_log_prob(distribution.base_dist, value)
    if isinstance(distribution, dist.MaskedDistribution):
        terms = pointwise_log_prob(distribution.base_dist, value)
        return None if terms is None else jnp.where(distribution._mask, terms, 0.0)
    if isinstance(distribution, Weighted):
        terms = pointwise_log_prob(distribution.base, value)
        return None if terms is None else terms * distribution.weights
    if distribution.event_shape:
        return None
    terms = distribution.log_prob(value)
    return terms if terms.shape == value.shape else None


def deterministic_path_marginals(given: str) -> dict[str, str | None]:
    """:meth:`Model.marginals` of a family whose path is a function of sampled ``given``."""
    reason = f"the path is deterministic given its {given}: no noise between bins to integrate"
    return {
        "sample": None,
        "particle": reason,
        "exact": reason,
        "forward": "the latent state is continuous, not discrete",
        "observed": "the path is seen through an emission",
    }


def _site_prior(name: str, prior, shape: tuple[int, ...], default) -> dist.Distribution:
    """Turn a user prior into one whose event shape is the site's shape, or explain why not."""
    if not isinstance(prior, dist.Distribution):
        raise PriorError(
            f"the prior for site {name!r} is a {type(prior).__name__}; expected a "
            "numpyro.distributions.Distribution"
        )
    total = tuple(prior.batch_shape) + tuple(prior.event_shape)
    if total == shape:
        site = prior.to_event(len(prior.batch_shape)) if prior.batch_shape else prior
    elif total == () and shape:
        site = prior.expand(shape).to_event(len(shape))
    else:
        raise PriorError(
            f"the prior for site {name!r} has shape {total} (batch {tuple(prior.batch_shape)} + "
            f"event {tuple(prior.event_shape)}); the site has shape {shape}"
        )
    # A draw from the prior must lie in the default prior's support (e.g. a scale must be
    # positive): checked on one draw, which is how a mismatched support shows up in practice.
    draw = site.sample(jax.random.key(0))
    if not bool(jnp.all(default.support(draw))):
        raise PriorError(
            f"the prior for site {name!r} puts mass outside the site's support "
            f"({default.support}); use a distribution on that support"
        )
    return site


#: One resolution of each family's annotations (``typing.get_type_hints`` is slow).
_field_types = functools.cache(field_types)


class Model(abc.ABC):
    """Base class of model families (subclasses are frozen dataclasses).

    Subclasses define the fields ``observation``, ``marginal`` and ``priors``, ``kind``, and
    implement :meth:`marginals`, :meth:`default_priors`, :meth:`program`, :meth:`vector_field`
    and :meth:`emission_mean`. Families with a Markov latent path derive from
    :class:`probdyn.state_space.StateSpaceModel`, which writes the program for them.
    """

    kind: ClassVar[str]
    #: Dims of each site beyond (chain, draw), used to label ArviZ results.
    site_dims: ClassVar[dict[str, list[str]]] = {}
    observation: str
    marginal: str
    priors: Mapping[str, dist.Distribution] | None

    def __post_init__(self):
        """Check every hyperparameter against its annotation, then the family's own rules."""
        family = type(self).__name__
        for name, annotation in _field_types(type(self)).items():
            wrong = violation(getattr(self, name), annotation)
            if wrong:
                raise PriorError(f"{family} {name}={getattr(self, name)!r}; expected {wrong}")
        self._check_hyperparameters()
        if self.observation not in OBSERVATION_VARIABLES:
            raise PriorError(
                f"observation={self.observation!r}; expected one of {sorted(OBSERVATION_VARIABLES)}"
            )
        self._check_marginal()
        if self.priors is not None and not isinstance(self.priors, Mapping):
            raise PriorError("priors must be a mapping from site name to distribution")
        # Names are checked now (shapes need the data's sizes, checked by `site_priors`).
        valid = self.default_priors(self._placeholder_emission_dim())
        unknown = sorted(set(self.priors or {}) - set(valid))
        if unknown:
            raise PriorError(
                f"unknown prior site(s) {unknown} for {family}; valid sites: "
                + self._describe_sites(valid)
            )

    def _check_hyperparameters(self) -> None:  # noqa: B027 (an optional hook)
        """The family's rules between hyperparameters (types and ranges are already checked).

        Raises :class:`~probdyn.errors.PriorError`; may fill defaults that depend on other
        hyperparameters (``object.__setattr__``, the dataclass being frozen).
        """

    def _check_marginal(self) -> None:
        """Raise a :class:`PriorError` if ``marginal`` is not one this family allows."""
        allowed = {name for name, reason in self.marginals().items() if reason is None}
        if self.marginal in allowed:
            return
        reason = self.marginals().get(self.marginal)
        why = f": {reason}" if reason else f"; expected one of {sorted(MARGINALS)}"
        raise PriorError(
            f"{type(self).__name__} marginal={self.marginal!r} is not available{why} "
            f"(this model allows {sorted(allowed)})"
        )

    def _placeholder_emission_dim(self) -> int:
        return getattr(self, "emission_dim", None) or 1

    @staticmethod
    def _describe_sites(priors: Mapping[str, dist.Distribution]) -> str:
        return ", ".join(
            f"{name} {tuple(d.batch_shape) + tuple(d.event_shape)}" for name, d in priors.items()
        )

    # -- what a family defines -------------------------------------------------------------
    @abc.abstractmethod
    def marginals(self) -> dict[str, str | None]:
        """Each way of handling the path (:data:`MARGINALS`): None where allowed, else why not.

        Depends on the hyperparameters (e.g. an LDS has ``"exact"`` only with Gaussian
        emissions).
        """

    @abc.abstractmethod
    def default_priors(self, emission_dim: int) -> dict[str, dist.Distribution]:
        """Every parameter site, in sampling order, with its default prior (shape = site shape)."""

    @abc.abstractmethod
    def program(self, data: ModelData, batch_size: int | None = None) -> None:
        """The NumPyro program (parameters, latents, observations)."""

    @abc.abstractmethod
    def vector_field(self, params: Mapping[str, Array], x: Array, u: Array | None = None) -> Array:
        """Deterministic dynamics at one latent state: f(x) for a flow, F(x) for a map."""

    @abc.abstractmethod
    def emission_mean(self, params: Mapping[str, Array], x: Array) -> Array:
        """Predicted observation mean (or rate per bin) at one latent state."""

    def spec(self) -> dict:
        """Family name and hyperparameters (priors left out), JSON-ready.

        Enough to rebuild the dynamics and readout of a saved run (see
        :func:`probdyn.models.from_spec`); fixed parameters are in its posterior draws.
        """
        fields = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "priors"
        }
        return {"family": type(self).__name__, **fields}

    @property
    def num_labels(self) -> int:
        """How many exchangeable labels (e.g. an HMM's states) :meth:`relabel` permutes.

        1 for families without such a symmetry. Evidence by bridge sampling uses it to average
        over the :math:`L!` relabellings (:func:`~probdyn.inference.log_evidence`).
        """
        return 1

    def relabel(self, params: Mapping[str, Array], order) -> dict[str, Array]:
        """``params`` with their exchangeable labels permuted: new label k is old ``order[k]``.

        ``order`` has the params' leading axes (draws) and a last axis of :attr:`num_labels`;
        sites without labels pass through. The default (no labels) is the identity.
        """
        return dict(params)

    def identify(self, draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Map draws (any leading axes) to a canonical labelling.

        Families whose likelihood has exact discrete symmetries (state permutations) override
        this, through :meth:`relabel`; the default is the identity. Applied to the draws of
        :func:`~probdyn.inference.nuts` and of SVI guides.
        """
        return dict(draws)

    # -- shared machinery ------------------------------------------------------------------
    def site_priors(self, emission_dim: int) -> dict[str, dist.Distribution]:
        """The prior of every parameter site: the user's where given, else the default."""
        # Evaluated eagerly even inside a traced program, so that the support check below sees
        # concrete values.
        with jax.ensure_compile_time_eval():
            return self._resolve_priors(emission_dim)

    def _resolve_priors(self, emission_dim: int) -> dict[str, dist.Distribution]:
        defaults = self.default_priors(emission_dim)
        resolved = {}
        for name, default in defaults.items():
            shape = tuple(default.batch_shape) + tuple(default.event_shape)
            if self.priors and name in self.priors:
                try:
                    resolved[name] = _site_prior(name, self.priors[name], shape, default)
                except PriorError as error:
                    raise PriorError(
                        f"{error}. Valid sites: {self._describe_sites(defaults)}"
                    ) from None
            else:
                resolved[name] = default.to_event(len(default.batch_shape))
        return resolved

    def sample_parameters(self, data: ModelData) -> dict[str, Array]:
        """Sample every parameter site from its prior (inside the program)."""
        return {
            name: numpyro.sample(name, prior)
            for name, prior in self.site_priors(data.emission_dim).items()
        }

    def trial_plate(self, data: ModelData, batch_size: int | None = None):
        """The plate over trials, subsampled to ``batch_size`` trials when given."""
        return numpyro.plate("trial", data.num_trials, subsample_size=batch_size)

    def prepare(self, ds: xr.Dataset) -> ModelData:
        """Validate a recording and extract the arrays this model reads.

        NaN bins become a False ``mask`` entry and their value 0 (so gradients stay finite);
        bins where ``fit_bins`` is False become False ``mask`` entries with their values kept.
        Nothing else is changed.
        """
        validate(ds, self.observation)
        name = OBSERVATION_VARIABLES[self.observation]
        values = np.asarray(ds[name].values)
        emission_dim = values.shape[-1] if values.ndim == 3 else int(ds.sizes.get("symbol", 0))
        expected = getattr(self, "emission_dim", None)
        if expected is not None and values.ndim == 3 and expected != emission_dim:
            raise DataError(
                f"{name} has {emission_dim} neurons but the model was built with "
                f"emission_dim={expected}"
            )
        self.site_priors(emission_dim)  # shape errors now, before any inference starts
        missing = np.isnan(values) if np.issubdtype(values.dtype, np.floating) else None
        observed = np.ones(values.shape, bool) if missing is None else ~missing
        if "fit_bins" in ds:
            fitted = ds["fit_bins"].broadcast_like(ds["trial"]).transpose("trial", "time").values
            observed = observed & fitted.reshape(fitted.shape + (1,) * (values.ndim - 2))
        mask = None if observed.all() else jnp.asarray(observed)
        dtype = jnp.int32 if self.observation == "categorical" else jnp.result_type(float)
        observations = jnp.asarray(values if missing is None else np.where(missing, 0, values))
        inputs = (
            jnp.asarray(ds["inputs"].values, dtype=jnp.result_type(float))
            if "inputs" in ds
            else None
        )
        return ModelData(
            observations=observations.astype(dtype),
            mask=mask,
            inputs=inputs,
            num_trials=values.shape[0],
            num_timesteps=values.shape[1],
            emission_dim=emission_dim,
            dt=float(ds.attrs["dt"]),
            coords={
                name: (tuple(coord.dims), coord.values)
                for name, coord in ds.coords.items()
                if coord.dims and set(coord.dims) <= {"trial", "time", "neuron"}
            },
        )

    def as_data(
        self,
        data: ModelData | xr.Dataset | None = None,
        *,
        num_trials: int | None = None,
        num_timesteps: int | None = None,
        emission_dim: int | None = None,
        dt: float = 1.0,
    ) -> ModelData:
        """Accept a Dataset, a ModelData, or (for prior predictive runs) just the sizes."""
        if isinstance(data, ModelData):
            return data
        if isinstance(data, xr.Dataset):
            return self.prepare(data)
        if data is not None:
            raise DataError(f"expected an xarray.Dataset or ModelData, got {type(data).__name__}")
        emission_dim = emission_dim or getattr(self, "emission_dim", None)
        if not (num_trials and num_timesteps and emission_dim):
            raise DataError(
                "without data, give num_trials, num_timesteps and emission_dim to run the program"
            )
        return ModelData(None, None, None, num_trials, num_timesteps, emission_dim, float(dt))

    def __call__(self, data: ModelData | xr.Dataset | None = None, batch_size=None, **sizes):
        """Run the NumPyro program (``sizes`` as in :meth:`as_data` when ``data`` is None)."""
        return self.program(self.as_data(data, **sizes), batch_size)


def prior_predictive(
    model: Model,
    *,
    seed: int,
    num_samples: int,
    data: xr.Dataset | None = None,
    **sizes,
) -> dict[str, np.ndarray]:
    """Draw parameters, latents and observations from the model's prior.

    With ``data`` only its sizes (and inputs) are used; otherwise give ``num_trials``,
    ``num_timesteps`` and ``emission_dim``. Returns every sample and deterministic site with a
    leading ``num_samples`` axis.
    """
    prepared = model.as_data(data, **sizes)
    unobserved = dataclasses.replace(prepared, observations=None, mask=None)
    predictive = numpyro.infer.Predictive(model.program, num_samples=num_samples)
    draws = predictive(jax.random.key(seed), unobserved)
    return {name: np.asarray(value) for name, value in draws.items()}
