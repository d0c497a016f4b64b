r"""A sequential variational autoencoder for spiking recordings: a noise-driven GRU generator.

The generator of LFADS (Sussillo, Jozefowicz, Abbott & Pandarinath 2016; Pandarinath et al.
2018), written as a generative program: an initial condition and a path of inputs, both latent
and inferred per trial, drive a GRU whose state is read out through a low-dimensional factor
layer as Poisson rates. In our terms it is a latent stochastic dynamical system whose noise path
(LFADS' "inferred inputs") is inferred by the encoder. AutoLFADS (Keshtkaran et al. 2022) and
the Neural Latents Benchmark (Pei et al. 2021) set the regularisation this module is fitted with:
coordinated dropout and KL warm-up, which :func:`probdyn.inference.svi` provides for any
amortised model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax import Array

from probdyn.errors import PriorError
from probdyn.model import Model, ModelData, deterministic_path_marginals, observe
from probdyn.schema import Count, NonNegativeInt, Positive


def gru_step(params: Mapping[str, Array], h: Array, u: Array | None) -> Array:
    r"""One step of the generator's GRU cell, :math:`h' = z \odot h + (1 - z) \odot n`.

    .. math::
        r = \sigma(W_r h + V_r u + b_r),\quad z = \sigma(W_z h + V_z u + b_z),\quad
        n = \tanh(V_n u + b_n + r \odot (W_n h + b_h)),

    with ``Wh`` (3, G, G) = :math:`(W_r, W_z, W_n)`, ``Wu`` (3, G, U) = :math:`(V_r, V_z, V_n)`
    (absent without inputs) and ``bh`` (4, G) = :math:`(b_r, b_z, b_n, b_h)`.
    """
    W, b = params["Wh"], params["bh"]
    recurrent = jnp.einsum("kij,...j->...ki", W, h)
    driven = b[:3] if u is None else b[:3] + jnp.einsum("kij,...j->...ki", params["Wu"], u)
    reset = jax.nn.sigmoid(driven[..., 0, :] + recurrent[..., 0, :])
    update = jax.nn.sigmoid(driven[..., 1, :] + recurrent[..., 1, :])
    candidate = jnp.tanh(driven[..., 2, :] + reset * (recurrent[..., 2, :] + b[3]))
    return update * h + (1 - update) * candidate


class SequenceEncoder(nn.Module):
    r"""Amortised posteriors of a trial's initial condition and input path.

    Reads :math:`x_t = \log(1 + y_t)` of the observed bins among the first ``read_bins`` (all
    by default), each bin rescaled by the number of neurons over the number observed in it (so
    that bins hidden by coordinated dropout or missing do not shrink the input), with a
    bidirectional GRU:

    - :math:`q(g_0 \mid y) = N(\mu, \mathrm{diag}\,s^2)` from the two final states;
    - :math:`q(u_t \mid y) = N(\mu_t, \mathrm{diag}\,s_t^2)`, :math:`t = 1..T-1`, from a second
      bidirectional GRU's state at each bin read (only when the model has inputs); past the
      bins read, the prior :math:`N(0, \sigma_u^2)` (``input_scale``).

    Scales are :math:`\mathrm{softplus}(\cdot) + 10^{-4}`.
    """

    hidden: int
    initial_dim: int
    input_dim: int
    input_hidden: int
    read_bins: int | None = None
    input_scale: float = 1.0

    @nn.compact
    def __call__(self, observations: Array, mask: Array) -> dict[str, tuple[Array, Array]]:
        """``{"initial": (loc, scale), "inputs": (loc, scale)}`` from (trial, time, neuron)."""
        dtype = observations.dtype
        T = observations.shape[1]
        read = T if self.read_bins is None else min(self.read_bins, T)
        observations, mask = observations[:, :read], mask[:, :read]
        observed = jnp.sum(mask, axis=-1, keepdims=True)
        inputs = jnp.log1p(observations) * mask * (mask.shape[-1] / jnp.maximum(observed, 1.0))

        def bidirectional(hidden):
            def gru():
                return nn.GRUCell(hidden, dtype=dtype, param_dtype=dtype)

            forward_final, forward = nn.RNN(gru(), return_carry=True)(inputs)
            backward_final, backward = nn.RNN(gru(), return_carry=True, reverse=True)(inputs)
            return (
                jnp.concatenate([forward_final, backward_final], axis=-1),
                jnp.concatenate([forward, backward], axis=-1),
            )

        def gaussian(features, dim):
            loc, raw = jnp.split(nn.Dense(2 * dim, dtype=dtype, param_dtype=dtype)(features), 2, -1)
            return loc, jax.nn.softplus(raw) + 1e-4

        final, _ = bidirectional(self.hidden)
        posteriors = {"initial": gaussian(final, self.initial_dim)}
        if self.input_dim:
            _, path = bidirectional(self.input_hidden)
            loc, scale = gaussian(path[:, 1:], self.input_dim)
            # Bins past those read carry no information on their inputs: the prior there.
            unread = (loc.shape[0], T - read, self.input_dim)
            loc = jnp.concatenate([loc, jnp.zeros(unread, dtype)], axis=1)
            scale = jnp.concatenate([scale, jnp.full(unread, self.input_scale, dtype)], axis=1)
            posteriors["inputs"] = (loc, scale)
        return posteriors


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeqVAE(Model):
    r"""Poisson spikes from a GRU generator driven by a latent initial condition and inputs.

    .. math::
        g_0 \sim N(0, \sigma_0^2 I_G),\quad u_t \sim N(0, \sigma_u^2 I_U)\ (t = 1..T-1),\quad
        g_t = \mathrm{GRU}_\theta(g_{t-1}, u_t),\\
        f_t = F g_t\ (\text{factors}),\qquad
        y_{t,n} \sim \mathrm{Poisson}\big(\exp(C_n f_t + c_n)\big),

    with ``generator`` = G units, ``factors`` = K, ``inputs`` = U (0: the generator runs free
    from :math:`g_0`, a deterministic latent path given the initial condition; > 0: a latent
    stochastic path, the noise :math:`u_t` being inferred per trial like LFADS' controller
    outputs). :math:`\sigma_0` = ``initial_scale``, :math:`\sigma_u` = ``input_scale``.

    The weights have Normal priors; with ``svi(guide="amortised-delta")`` they are MAP
    estimates and the priors act as the L2 penalties of LFADS (the recurrent weights' scale
    ``recurrent_scale`` sets the strongest one). ``encoder_neurons`` and ``encoder_bins``
    restrict what the encoder reads (co-smoothing: held-in neurons; forward prediction: the
    bins before the forward window), so new trials are inferred from what they record and the
    generator runs on past the last bin read.

    ``kind`` is ``"map"``: :meth:`vector_field` is the input-free step
    :math:`F(g) = \mathrm{GRU}_\theta(g, 0)`, whose fixed points :math:`F(g) = g` are the
    generator's, and :meth:`emission_mean` the rates :math:`\exp(C F g + c)`.

    ============  ===============  ===================================================
    site          shape            default prior
    ============  ===============  ===================================================
    ``Wh``        (3, G, G)        Normal(0, ``recurrent_scale`` / sqrt(G))
    ``bh``        (4, G)           Normal(0, 1)
    ``Wu``        (3, G, U)        Normal(0, 1) (only with inputs)
    ``F``         (K, G)           Normal(0, 1)
    ``C``         (N, K)           Normal(0, 1)
    ``c``         (N,)             Normal(-2, 2) (log spikes per bin)
    ``initial``   (trial, G)       Normal(0, ``initial_scale``) (latent: :math:`g_0`)
    ``inputs``    (trial, T-1, U)  Normal(0, ``input_scale``) (latent: :math:`u`)
    ============  ===============  ===================================================

    Deterministic sites: ``latents`` (trial, time, G), the generator's path, and ``factors``.
    """

    site_dims: ClassVar[dict[str, list[str]]] = {
        "Wh": ["gate", "unit", "unit_from"],
        "bh": ["bias", "unit"],
        "Wu": ["gate", "unit", "input"],
        "F": ["factor", "unit"],
        "C": ["neuron", "factor"],
        "c": ["neuron"],
        "initial": ["trial", "unit"],
        "inputs": ["trial", "step", "input"],
        "latents": ["trial", "time", "unit"],
        "factors": ["trial", "time", "factor"],
    }
    kind: ClassVar[str] = "map"
    #: The per-trial site that :func:`~probdyn.inference.amortised.refine_local` refines.
    local_site: ClassVar[str] = "initial"

    num_neurons: Count
    generator: Count = 64
    factors: Count = 40
    inputs: NonNegativeInt = 0
    encoder_hidden: Count = 64
    input_encoder_hidden: Count = 32
    initial_scale: Positive = 0.3
    input_scale: Positive = 0.3
    recurrent_scale: Positive = 2.5
    encoder_neurons: tuple[NonNegativeInt, ...] | None = None
    encoder_bins: Count | None = None
    observation: Literal["poisson"] = "poisson"
    marginal: str = "sample"
    priors: Mapping[str, dist.Distribution] | None = None

    def _check_hyperparameters(self):
        if self.encoder_neurons is not None:
            chosen = list(self.encoder_neurons)
            valid = all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < self.num_neurons
                for i in chosen
            )
            if not chosen or not valid or len(set(chosen)) != len(chosen):
                raise PriorError(
                    f"SeqVAE encoder_neurons={self.encoder_neurons!r}; expected distinct neuron "
                    f"indices in 0..{self.num_neurons - 1}"
                )
            object.__setattr__(self, "encoder_neurons", tuple(chosen))

    @property
    def latent_dim(self) -> int:
        """The generator's state size (where fixed points are sought)."""
        return self.generator

    @property
    def emission_dim(self) -> int:
        """The neurons the readout predicts."""
        return self.num_neurons

    @property
    def local_sites(self) -> tuple[str, ...]:
        """Per-trial sites the encoder infers: the initial condition, and inputs if any."""
        return ("initial", "inputs") if self.inputs else ("initial",)

    def marginals(self) -> dict[str, str | None]:
        """Only sampled: the path is a function of its sampled initial state and inputs."""
        return deterministic_path_marginals("initial state and inputs")

    def default_priors(self, emission_dim: int) -> dict[str, dist.Distribution]:
        """Generator weights, factor and rate readouts."""
        G, K, U, N = self.generator, self.factors, self.inputs, emission_dim

        def normal(shape, scale, loc=0.0):
            return dist.Normal(jnp.full(shape, loc), scale)

        priors = {
            "Wh": normal((3, G, G), self.recurrent_scale / math.sqrt(G)),
            "bh": normal((4, G), 1.0),
        }
        if U:
            priors["Wu"] = normal((3, G, U), 1.0)
        return priors | {
            "F": normal((K, G), 1.0),
            "C": normal((N, K), 1.0),
            "c": normal((N,), 2.0, loc=-2.0),
        }

    def initial_weights(self, key: Array, counts: Array) -> dict[str, Array]:
        r"""Where fits start: the usual network initialisation, whatever the priors.

        Weights :math:`\sim N(0, 1/\text{fan-in})` (the readout :math:`C` half that, so the
        first rates stay near the mean), gate biases 0 but the update gate's 1 (the generator
        starts by holding its state), and :math:`c = \log` ``counts``, each neuron's mean
        count per bin (floored at :math:`10^{-3}`).
        """
        G, K, U, N = self.generator, self.factors, self.inputs, self.num_neurons
        k_h, k_u, k_f, k_c = jax.random.split(key, 4)
        weights = {
            "Wh": jax.random.normal(k_h, (3, G, G)) / math.sqrt(G),
            "bh": jnp.zeros((4, G)).at[1].set(1.0),
        }
        if U:
            weights["Wu"] = jax.random.normal(k_u, (3, G, U)) / math.sqrt(U)
        return weights | {
            "F": jax.random.normal(k_f, (K, G)) / math.sqrt(G),
            "C": 0.5 * jax.random.normal(k_c, (N, K)) / math.sqrt(K),
            "c": jnp.log(jnp.maximum(jnp.asarray(counts, float), 1e-3)),
        }

    # -- dynamics ---------------------------------------------------------------------------
    def vector_field(self, params: Mapping[str, Array], x: Array, u: Array | None = None) -> Array:
        r"""The generator's step :math:`\mathrm{GRU}_\theta(g, u)` (``u`` None: no input)."""
        return gru_step(params, x, u if self.inputs else None)

    def log_rates(self, params: Mapping[str, Array], g: Array) -> Array:
        r""":math:`C F g + c` at generator states ``g`` (..., G)."""
        return (g @ params["F"].T) @ params["C"].T + params["c"]

    def emission_mean(self, params: Mapping[str, Array], x: Array) -> Array:
        """Spikes per bin at generator state ``x``."""
        return jnp.exp(self.log_rates(params, x))

    def rollout(self, params: Mapping[str, Array], g0: Array, inputs: Array | None, length: int):
        """Generator path (time, G) from ``g0`` (G,) under ``inputs`` (length - 1, U) or None."""

        def advance(g, u):
            g = gru_step(params, g, u)
            return g, g

        if inputs is None:
            _, rest = jax.lax.scan(lambda g, _: advance(g, None), g0, None, length=length - 1)
        else:
            _, rest = jax.lax.scan(advance, g0, inputs)
        return jnp.concatenate([g0[None], rest])

    def encoder(self) -> SequenceEncoder:
        """The network of the amortised guide over :attr:`local_sites`."""
        return SequenceEncoder(
            hidden=self.encoder_hidden,
            initial_dim=self.generator,
            input_dim=self.inputs,
            input_hidden=self.input_encoder_hidden,
            read_bins=self.encoder_bins,
            input_scale=self.input_scale,
        )

    # -- the program ------------------------------------------------------------------------
    def program(self, data: ModelData, batch_size: int | None = None) -> None:
        """Weights, then per trial :math:`g_0`, inputs, the generator's path and the spikes."""
        p = self.sample_parameters(data)
        T = data.num_timesteps
        with self.trial_plate(data, batch_size) as index:
            batch = data if batch_size is None else data.take(index)
            g0 = numpyro.sample(
                "initial",
                dist.Normal(0.0, self.initial_scale).expand([self.generator]).to_event(1),
            )
            if self.inputs:
                prior = dist.Normal(0.0, self.input_scale).expand([T - 1, self.inputs])
                u = numpyro.sample("inputs", prior.to_event(2))
                paths = jax.vmap(lambda g, v: self.rollout(p, g, v, T))(g0, u)
            else:
                paths = jax.vmap(lambda g: self.rollout(p, g, None, T))(g0)
            latents = numpyro.deterministic("latents", paths)
            factors = numpyro.deterministic("factors", latents @ p["F"].T)
            emission = dist.Poisson(jnp.exp(factors @ p["C"].T + p["c"]))
            observe("spikes", emission, batch)
