r"""Amortised guides: an autoguide over the global sites, an encoder network over a local one.

For models with a per-trial latent (a sequential autoencoder's initial condition :math:`z_0`)

.. math::
    q(\theta, z_{0,1:M}) = q_\phi(\theta)\,\prod_{m} N\big(z_{0,m};\ \mu_\psi(y_m),
    \mathrm{diag}\,s_\psi(y_m)^2\big),

with :math:`q_\phi` an ``AutoNormal`` (mean-field Gaussian over the weights: a posterior over
the dynamics) or an ``AutoDelta`` (MAP weights), and the encoder :math:`(\mu_\psi, s_\psi)` a
Flax module the model provides (``model.encoder()``, registered with
``numpyro.contrib.module.flax_module``). Because the encoder reads each trial's data, the fitted
guide infers new trials (held-out or evaluation sets) without refitting.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.module import flax_module
from numpyro.infer import autoguide

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
        """Draw the weights, then each trial's local site from the encoder's Gaussian."""
        values = dict(self.global_guide(data, batch_size))
        observations = data.observations.astype(float)
        mask = jnp.ones_like(observations) if data.mask is None else data.mask.astype(float)
        read = getattr(self.model, "encoder_neurons", None)
        if read is not None:
            observations, mask = observations[..., list(read)], mask[..., list(read)]
        example = jnp.ones((1, *observations.shape[1:]))
        encoder = flax_module("encoder", self.model.encoder(), example, example)
        with self.model.trial_plate(data, batch_size) as index:
            if batch_size is not None:
                observations, mask = observations[index], mask[index]
            loc, scale = encoder(observations, mask)
            site = self.model.local_site
            values[site] = numpyro.sample(site, dist.Normal(loc, scale).to_event(1))
        return values

    def median(self, params) -> dict:
        """Median of the weights (the local site depends on data, so it is left out)."""
        return self.global_guide.median(params)


def amortised_guide(name: str, model: Model, program, **options) -> AmortisedGuide:
    """Build the guide ``name`` (a key of :data:`AMORTISED_GUIDES`) for ``model``."""
    if not hasattr(model, "encoder"):
        raise ConfigError(
            f"guide={name!r} needs a model with an encoder network; {type(model).__name__} has "
            "none (use 'auto', 'normal', 'mvn', 'delta' or 'laplace')"
        )
    blocked = numpyro.handlers.block(program, hide=[model.local_site])
    return AmortisedGuide(model, program, AMORTISED_GUIDES[name](blocked, **options))
