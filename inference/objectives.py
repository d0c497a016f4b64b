"""Objectives SVI climbs: the ELBO with an ordered trace, and the autoencoder regularisers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax import Array
from numpyro.infer.elbo import ELBO
from numpyro.infer.util import log_density
from numpyro.util import check_model_guide_match

from probdyn.errors import ConfigError
from probdyn.model import Model, ModelData


class OrderedTraceELBO(ELBO):
    r"""The ELBO :math:`\frac1S\sum_s \log p(y, \theta_s) - \log q(\theta_s)`, summed in order.

    The same estimator as NumPyro's ``Trace_ELBO`` (``num_particles`` draws
    :math:`\theta_s \sim q`, the model replayed against each). NumPyro 0.22 collects the site
    terms through a Python ``set``, whose order follows string hashing and so changes from one
    process to the next; the compiled step then differs between processes in the order of its
    additions, which defeats the persistent compilation cache and changes the last bits of the
    result. Here the model's and the guide's log densities are each summed in trace order.
    Guides with mutable state (``numpyro.mutable``) are not supported.
    """

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        """``{"loss": -ELBO, "mutable_state": None}``."""
        return self._estimate(rng_key, param_map, model, guide, args, args, kwargs)

    def _estimate(self, rng_key, param_map, model, guide, model_args, guide_args, kwargs):
        """The estimator with the model and the guide each run on its own arguments."""

        def elbo(key):
            model_key, guide_key = jax.random.split(key)
            seeded_guide = numpyro.handlers.seed(guide, guide_key)
            guide_density, guide_trace = log_density(seeded_guide, guide_args, kwargs, param_map)
            if any(site["type"] == "mutable" for site in guide_trace.values()):
                raise ConfigError("the guide has mutable state, which svi does not carry")
            replayed = numpyro.handlers.replay(numpyro.handlers.seed(model, model_key), guide_trace)
            model_density, model_trace = log_density(replayed, model_args, kwargs, param_map)
            check_model_guide_match(model_trace, guide_trace)
            return model_density - guide_density

        if self.num_particles == 1:
            return {"loss": -elbo(rng_key), "mutable_state": None}
        keys = jax.random.split(rng_key, self.num_particles)
        return {"loss": -jnp.mean(self.vectorize_particles_fn(elbo, keys)), "mutable_state": None}


class _ScaleLatent(numpyro.primitives.Messenger):
    """Multiply the log density of every unobserved sample site by ``factor``."""

    def __init__(self, fn, factor):
        self.factor = factor
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.factor if msg["scale"] is None else msg["scale"] * self.factor


class AutoencoderELBO(OrderedTraceELBO):
    r"""The ELBO under the training regularisers of sequential autoencoders.

    For a model fitted with an amortised guide (its encoder reads the neurons
    ``model.encoder_neurons`` of the bins ``model.encoder_bins``, by default all), at each step:

    - *coordinated dropout* (``coordinated_dropout`` = :math:`p`; Keshtkaran & Pandarinath
      2019): every observed bin (trial, time, neuron) the encoder could read is hidden from it
      with probability :math:`p`, and the likelihood counts only those hidden bins, each with
      weight :math:`1/p` (an unbiased estimate of the full likelihood), and every bin the
      encoder never reads (other neurons, later bins) with weight 1. A network cannot then
      lower its loss by passing a spike from the encoder's input to the same bin's rate: it
      must predict each bin from the others, the co-smoothing task itself. The weights reach
      programs that emit through :func:`probdyn.model.observe`;
    - *encoder dropout* (``encoder_dropout`` = :math:`q`): a further fraction :math:`q` of the
      bins the encoder would read is hidden from it but kept in the likelihood;
    - *warm-up* (``warmup`` = :math:`W` steps): the log densities of every latent and parameter
      site, in the model (prior) and in the guide, are scaled by
      :math:`\beta_i = \min(1, (i + 1)/W)` at step :math:`i`: the KL terms and the weights'
      priors (the L2 penalties) come in gradually, as LFADS schedules them.

    After the warm-up and with both dropouts at 0 this is :class:`OrderedTraceELBO`. The loss
    trace of a run records the objective as trained (with :math:`\beta_i` and the hidden bins).
    """

    def __init__(
        self,
        model: Model,
        *,
        coordinated_dropout: float = 0.0,
        encoder_dropout: float = 0.0,
        warmup: int = 0,
        num_particles: int = 1,
    ):
        for name, value in (
            ("coordinated_dropout", coordinated_dropout),
            ("encoder_dropout", encoder_dropout),
        ):
            if not (isinstance(value, int | float) and 0 <= value < 1):
                raise ConfigError(f"{name} = {value!r}; expected a fraction in [0, 1)")
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise ConfigError(f"warmup = {warmup!r}; expected a number of steps >= 0")
        super().__init__(num_particles)
        self.model = model
        self.coordinated_dropout = float(coordinated_dropout)
        self.encoder_dropout = float(encoder_dropout)
        self.warmup = warmup

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        """The estimate at step ``kwargs["step"]``, the model and guide seeing their own bins."""
        step = kwargs.pop("step")
        rng_key, key_hide, key_drop = jax.random.split(rng_key, 3)
        data, *rest = args
        observed = jnp.ones(data.observations.shape, bool) if data.mask is None else data.mask
        readable = self._readable(data)
        hidden = readable & jax.random.bernoulli(key_hide, self.coordinated_dropout, readable.shape)
        dropped = readable & jax.random.bernoulli(key_drop, self.encoder_dropout, readable.shape)
        guide_data = dataclasses.replace(data, mask=observed & ~hidden & ~dropped)
        if self.coordinated_dropout:
            # Each readable bin is counted with probability p and weight 1/p: in expectation
            # the full log likelihood, so the objective stays an unbiased ELBO estimate.
            weights = jnp.where(readable, hidden / self.coordinated_dropout, 1.0)
            model_data = dataclasses.replace(
                data, mask=observed & (hidden | ~readable), weights=weights
            )
        else:
            model_data = data
        if self.warmup:
            beta = jnp.minimum(1.0, (step + 1.0) / self.warmup)
            model, guide = _ScaleLatent(model, beta), _ScaleLatent(guide, beta)
        return self._estimate(
            rng_key, param_map, model, guide, (model_data, *rest), (guide_data, *rest), kwargs
        )

    def _readable(self, data: ModelData) -> Array:
        """Boolean (trial, time, neuron): the bins the model's encoder reads."""
        shape = data.observations.shape
        readable = np.zeros(shape[1:], bool)
        neurons = getattr(self.model, "encoder_neurons", None)
        bins = getattr(self.model, "encoder_bins", None)
        readable[slice(bins), list(neurons) if neurons is not None else slice(None)] = True
        return jnp.broadcast_to(jnp.asarray(readable), shape)
