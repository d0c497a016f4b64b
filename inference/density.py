r"""A model's posterior as a flat density on unconstrained space.

Every engine in this package (SVI, NUTS, SMC, Laplace, IWAE) works on the same object: the model
bound to its data, with parameters fixed by a ``Delta`` prior conditioned away (a point mass has
no density to explore), and its free sites mapped to one vector :math:`z \in \mathbb{R}^n` by
the bijections onto their supports. On that vector

.. math::
    \log \pi_0(z) = \log p(\theta(z)) + \log\left|\det \tfrac{\partial\theta}{\partial z}\right|,
    \qquad \log L(z) = \log p(y \mid \theta(z)),

so that :math:`\int \pi_0(z) L(z)\, dz = p(y)`, the evidence. ``log L`` sums the observed sites
(``numpyro.factor`` terms included, so penalties are tempered with the likelihood); fixed and
given sites, conditioned on, count in :math:`\log \pi_0` (a point mass adds 0).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import log_density

from probdyn.errors import ConfigError
from probdyn.model import Model, ModelData
from probdyn.runtime.compilation import run_once


def _point_mass_value(fn) -> Array | None:
    """The value of a Delta prior (possibly wrapped by ``to_event``/``expand``), else None."""
    while isinstance(fn, dist.Independent | dist.ExpandedDistribution):
        fn = fn.base_dist
    if isinstance(fn, dist.Delta):
        return fn.v
    return None


@dataclasses.dataclass(frozen=True)
class Density:
    """The bound program, its free sites and the maps between them and a flat vector."""

    program: Callable
    data: ModelData
    fixed: dict[str, Array]
    #: Shapes of the free sites (constrained; the flat vector holds their unconstrained form).
    shapes: dict[str, tuple[int, ...]]
    supports: dict[str, dist.constraints.Constraint]
    unravel: Callable[[Array], dict[str, Array]]
    dim: int
    deterministic: tuple[str, ...] = ()
    #: The model bound (for :attr:`identity`); not compared.
    model: Model | None = dataclasses.field(default=None, compare=False, repr=False)

    @functools.cached_property
    def identity(self) -> str | None:
        """:func:`fingerprint` of the model, its data and the fixed values (None without a model).

        Equal for two bindings of one log density, so compiled programs can be reused across
        calls.
        """
        if self.model is None:
            return None
        return fingerprint({"model": self.model, "fixed": self.fixed, "data": self.data})

    def constrain(self, z: Array) -> dict[str, Array]:
        """Flat unconstrained vector -> free sites on their supports."""
        u = self.unravel(z)
        return {name: biject_to(self.supports[name])(u[name]) for name in self.shapes}

    def unconstrain(self, params: dict[str, Array]) -> Array:
        """Free sites on their supports -> flat unconstrained vector."""
        u = {name: biject_to(self.supports[name]).inv(params[name]) for name in self.shapes}
        return ravel_pytree(u)[0]

    def log_jacobian(self, z: Array) -> Array:
        r""":math:`\log|\det \partial\theta/\partial z|` of :meth:`constrain`."""
        u = self.unravel(z)
        total = 0.0
        for name in self.shapes:
            transform = biject_to(self.supports[name])
            log_det = transform.log_abs_det_jacobian(u[name], transform(u[name]))
            total = total + jnp.sum(log_det)
        return total

    def log_prior_and_likelihood(self, z: Array) -> tuple[Array, Array]:
        r""":math:`(\log \pi_0(z), \log L(z))` (see the module docstring)."""
        params = self.constrain(z)
        log_joint, trace = log_density(self.program, (self.data,), {}, params)
        log_lik = sum(
            (
                _site_log_prob(site)
                for name, site in trace.items()
                if _is_observed(site) and name not in self.fixed
            ),
            start=jnp.zeros(()),
        )
        return log_joint - log_lik + self.log_jacobian(z), log_lik

    def log_prior(self, z: Array) -> Array:
        """Log prior density of ``z`` on unconstrained space (Jacobian included)."""
        return self.log_prior_and_likelihood(z)[0]

    def log_likelihood(self, z: Array) -> Array:
        """Log likelihood of the data at ``z`` (all observed and factor sites)."""
        return self.log_prior_and_likelihood(z)[1]

    def log_posterior(self, z: Array) -> Array:
        """Unnormalised log posterior on unconstrained space."""
        prior, lik = self.log_prior_and_likelihood(z)
        return prior + lik

    def sample_prior(self, key: Array, num_samples: int) -> Array:
        """Draws from the prior of the free sites, as flat unconstrained vectors.

        The observed sites stay observed: a latent whose prior depends on recorded values (a
        FacRNN's codes read the previous bin's activity) is drawn given them.
        """
        draws = numpyro.infer.Predictive(self.program, num_samples=num_samples)(key, self.data)
        return jax.vmap(self.unconstrain)({name: draws[name] for name in self.shapes})


def _is_observed(site) -> bool:
    return site["type"] == "sample" and site["is_observed"]


def _site_log_prob(site) -> Array:
    log_prob = site["fn"].log_prob(site["value"])
    if site.get("mask") is not None:
        log_prob = jnp.where(site["mask"], log_prob, 0.0)
    if site.get("scale") is not None:
        log_prob = site["scale"] * log_prob
    return jnp.sum(log_prob)


def bind(
    model: Model,
    data: ModelData,
    *,
    key: Array | None = None,
    given: dict[str, Array] | None = None,
) -> Density:
    """Bind ``model`` to ``data``: condition away point-mass priors, find the free sites.

    ``given`` holds values of other sites to condition on as well (a NODE's per-trial initial
    states from an amortised fit, say): like point masses they leave the free sites, and their
    prior density enters the log prior, not the likelihood.
    """
    key = jax.random.key(0) if key is None else key  # the trace's values are not used
    with run_once():  # the model runs op by op, each op compiled for this one run
        trace = numpyro.handlers.trace(numpyro.handlers.seed(model.program, key)).get_trace(data)
    given = {name: jnp.asarray(value) for name, value in (given or {}).items()}
    for name, value in given.items():
        site = trace.get(name)
        if site is None or site["type"] != "sample" or site["is_observed"]:
            raise ConfigError(
                f"given site {name!r} is not a latent sample site of {type(model).__name__}"
            )
        if jnp.shape(value) != jnp.shape(site["value"]):
            raise ConfigError(
                f"given site {name!r} has shape {jnp.shape(value)}; the site has shape "
                f"{jnp.shape(site['value'])}"
            )
    fixed, shapes, supports = dict(given), {}, {}
    deterministic = tuple(name for name, site in trace.items() if site["type"] == "deterministic")
    for name, site in trace.items():
        if site["type"] != "sample" or site["is_observed"] or name in given:
            continue
        value = _point_mass_value(site["fn"])
        if value is not None:
            fixed[name] = jnp.broadcast_to(value, jnp.shape(site["value"]))
        else:
            shapes[name] = jnp.shape(site["value"])
            supports[name] = site["fn"].support
    program = numpyro.handlers.condition(model.program, data=fixed)
    # Unconstrained shapes may differ from the sites' (a simplex of K entries has K - 1).
    zeros = {
        name: jnp.zeros(biject_to(supports[name]).inverse_shape(shape))
        for name, shape in shapes.items()
    }
    flat, unravel = ravel_pytree(zeros)
    return Density(
        program,
        data,
        fixed,
        shapes,
        supports,
        unravel,
        int(flat.shape[0]),
        deterministic,
        model,
    )


def fingerprint(value) -> str:
    """A process-independent hash of ``value``: models, distributions, arrays, data, settings.

    ``repr`` will not do: distributions and optax transformations print memory addresses, which
    differ between a killed process and the one that resumes. Nor will a distribution's pytree
    leaves: NumPyro gathers its data fields through a ``set``, whose order follows the process's
    string-hash seed. So a distribution counts by its class, shapes and fields taken in name
    order; arrays by shape, dtype and bytes; other pytree nodes (NumPyro's transforms) by class
    and leaves; functions by qualified name. Used to recognise a checkpoint's run and to reuse a
    compiled sampler.
    """
    digest = hashlib.sha256()
    _feed(value, digest)
    return digest.hexdigest()


def _feed(value, digest) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(type(value).__qualname__.encode())
        for field in dataclasses.fields(value):
            if not field.compare:
                continue  # labels (a recording's coordinates), not what the run computes
            digest.update(field.name.encode())
            _feed(getattr(value, field.name), digest)
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _feed(value[key], digest)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__qualname__}{len(value)}".encode())
        for item in value:
            _feed(item, digest)
    elif isinstance(value, numpyro.distributions.Distribution):
        digest.update(f"{type(value).__qualname__}{value.batch_shape}{value.event_shape}".encode())
        for name in sorted(type(value).gather_pytree_data_fields()):
            digest.update(name.encode())
            _feed(value.__dict__.get(name), digest)
    elif hasattr(value, "shape") and hasattr(value, "dtype"):
        array = np.asarray(jax.device_get(value))
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    elif callable(value) and hasattr(value, "__qualname__"):
        digest.update(f"{getattr(value, '__module__', '')}.{value.__qualname__}".encode())
    elif (leaves := jax.tree_util.tree_leaves(value)) != [value]:
        digest.update(type(value).__qualname__.encode())
        for leaf in leaves:
            _feed(leaf, digest)
    else:
        digest.update(repr(value).encode())
