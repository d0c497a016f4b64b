r"""Amortised guides: an autoguide over the global sites, an encoder network over a local one.

For models with a per-trial latent (a sequential autoencoder's initial condition :math:`z_0`,
an HMM emulator's noise path: any event shape, named by ``model.local_site``)

.. math::
    q(\theta, z_{0,1:M}) = q_\phi(\theta)\,\prod_{m} N\big(z_{0,m};\ \mu_\psi(y_m),
    \mathrm{diag}\,s_\psi(y_m)^2\big),

with :math:`q_\phi` an ``AutoNormal`` (mean-field Gaussian over the weights: a posterior over
the dynamics) or an ``AutoDelta`` (MAP weights), and the encoder :math:`(\mu_\psi, s_\psi)` a
Flax module the model provides (``model.encoder()``, registered with
``numpyro.contrib.module.flax_module``). Because the encoder reads each trial's data, the fitted
guide infers new trials (held-out or evaluation sets) without refitting.

An encoder trained on few trials generalises poorly to new ones (the amortisation gap, Cremer,
Li & Duvenaud 2018). :func:`refine_local` closes it as semi-amortised inference does (Kim et al.
2018): from the encoder's draw it climbs each new trial's own posterior under the fitted weights
and draws from the Laplace approximation at the mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from jax import Array
from numpyro.contrib.module import flax_module
from numpyro.infer import autoguide
from numpyro.infer.util import log_density

from probdyn.errors import ConfigError
from probdyn.model import Model, ModelData

#: Guide names :func:`probdyn.inference.svi` accepts, and the autoguide each uses for weights.
AMORTISED_GUIDES = {"amortised": autoguide.AutoNormal, "amortised-delta": autoguide.AutoDelta}


class AmortisedGuide:
    """``q(theta) q(local | y)``; call it as the model's program is called: ``(data, batch_size)``.

    ``global_guide`` is an autoguide built on the program with the local site blocked.
    """

    def __init__(self, model: Model, program, global_guide: autoguide.AutoGuide):
        self.model = model
        self.program = program
        self.global_guide = global_guide

    def __call__(self, data: ModelData, batch_size: int | None = None):
        """Draw the weights, then each trial's local sites from the encoder's Gaussians."""
        values = dict(self.global_guide(data, batch_size))
        observations, mask = encoder_view(self.model, data)
        example = jnp.ones((1, *observations.shape[1:]))
        encoder = flax_module("encoder", self.model.encoder(), example, example)
        with self.model.trial_plate(data, batch_size) as index:
            if batch_size is not None:
                observations, mask = observations[index], mask[index]
            encoded = encoder(observations, mask)
            if not isinstance(encoded, dict):  # one local site: the encoder gives (loc, scale)
                encoded = {self.model.local_site: encoded}
            for site, (loc, scale) in encoded.items():
                posterior = dist.Normal(loc, scale).to_event(jnp.ndim(loc) - 1)  # per trial
                values[site] = numpyro.sample(site, posterior)
        return values

    def median(self, params) -> dict:
        """Median of the weights (the local site depends on data, so it is left out)."""
        return self.global_guide.median(params)


def local_sites(model: Model) -> tuple[str, ...]:
    """The per-trial sites a model's encoder infers (``local_sites``, else ``local_site``)."""
    return tuple(getattr(model, "local_sites", (model.local_site,)))


def encoder_view(model: Model, data: ModelData) -> tuple[Array, Array]:
    """(observations, mask) as float arrays restricted to what the encoder reads.

    ``model.encoder_neurons`` (indices) and ``model.encoder_bins`` (the first bins: later ones
    are masked, as missing bins are), where the model has them and they are not None.
    """
    observations = data.observations.astype(float)
    mask = jnp.ones_like(observations) if data.mask is None else data.mask.astype(float)
    neurons = getattr(model, "encoder_neurons", None)
    if neurons is not None:
        observations, mask = observations[..., list(neurons)], mask[..., list(neurons)]
    bins = getattr(model, "encoder_bins", None)
    if bins is not None:  # later bins stay, unread: the encoder's outputs cover every bin
        mask = mask * (jnp.arange(mask.shape[1]) < bins)[:, None]
        observations = observations * mask
    return observations, mask


def amortised_guide(name: str, model: Model, program, **options) -> AmortisedGuide:
    """Build the guide ``name`` (a key of :data:`AMORTISED_GUIDES`) for ``model``."""
    if not hasattr(model, "encoder"):
        raise ConfigError(
            f"guide={name!r} needs a model with an encoder network; {type(model).__name__} has "
            "none (use 'auto', 'normal', 'mvn', 'delta' or 'laplace')"
        )
    blocked = numpyro.handlers.block(program, hide=list(local_sites(model)))
    return AmortisedGuide(model, program, AMORTISED_GUIDES[name](blocked, **options))


def refine_local(
    program,
    site: str,
    weights: dict[str, Array],
    local: Array,
    data: ModelData,
    *,
    num_steps: int,
    key: Array,
    learning_rate: float = 0.05,
    min_precision: float = 1e-3,
) -> Array:
    r"""Draws of each trial's ``site`` from the Laplace approximation of its own posterior.

    For every weight draw :math:`\theta_s` (leading axis of ``weights`` and ``local``, the
    latter (draw, trial, D)) and trial :math:`m`, Adam takes ``num_steps`` steps from the given
    :math:`z_{s,m}` (the encoder's draw) up :math:`\log p(y_m, z_m \mid \theta_s)` to a mode
    :math:`\hat z`, and the draw is :math:`\hat z + H^{-1/2}\epsilon`, :math:`H` the negative
    Hessian there with eigenvalues floored at ``min_precision``. Trials are independent given
    the weights (the trial plate), so the Hessian is block diagonal and its (trial, D, D)
    blocks come from D Hessian-vector products. Needs a real-valued, vector ``site`` (a matrix
    per trial, such as a noise path, would need a Hessian over all its entries together).
    """
    if jnp.ndim(local) != 3:
        raise ConfigError(
            f"refine needs a vector per trial at site {site!r}; it has shape "
            f"{tuple(jnp.shape(local))[2:]} per trial (refine=0 keeps the encoder's draws)"
        )

    def negative_log_joint(z, theta):
        return -log_density(program, (data,), {}, {**theta, site: z})[0]

    gradient = jax.grad(negative_log_joint)
    optimiser = optax.adam(learning_rate)

    def climb(z, theta):
        def step(carry, _):
            z, state = carry
            updates, state = optimiser.update(gradient(z, theta), state)
            return (optax.apply_updates(z, updates), state), None

        return jax.lax.scan(step, (z, optimiser.init(z)), None, length=num_steps)[0][0]

    def laplace_draw(z, theta, key):
        dim = z.shape[-1]
        basis = jnp.broadcast_to(jnp.eye(dim)[:, None, :], (dim, *z.shape))
        columns = jax.vmap(lambda v: jax.jvp(lambda x: gradient(x, theta), (z,), (v,))[1])(basis)
        hessian = jnp.moveaxis(columns, 0, -1)
        values, vectors = jnp.linalg.eigh((hessian + jnp.swapaxes(hessian, -1, -2)) / 2)
        noise = jax.random.normal(key, z.shape) / jnp.sqrt(jnp.maximum(values, min_precision))
        return z + jnp.einsum("...ij,...j->...i", vectors, noise)

    def refine(z, theta, key):
        return laplace_draw(climb(z, theta), theta, key)

    keys = jax.random.split(key, local.shape[0])
    return jax.jit(jax.vmap(refine))(local, weights, keys)
