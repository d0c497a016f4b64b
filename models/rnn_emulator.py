r"""Noise-driven RNN that emulates an HMM's symbol sequences (family 3).

Torre, Viscione, Pompe, Grewe & Mante (NeurIPS 2025), *Mechanistic interpretability of RNNs
emulating hidden Markov models*.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import xarray as xr
from jax import Array

from probdyn.errors import DataError
from probdyn.model import ModelData
from probdyn.schema import Count
from probdyn.state_space import StateSpaceModel


class NoisePathEncoder(nn.Module):
    r"""Amortised :math:`q(\xi_{1:T} \mid y_{1:T}) = \prod_t N(\mu_t(y), \mathrm{diag}\,s_t(y)^2)`.

    The symbols, one-hot, are read by a GRU forward and one backward; at each bin their two
    states give :math:`\mu_t` and :math:`s_t = \mathrm{softplus}(\cdot) + 10^{-3}` through one
    dense layer. Both directions are needed: the noise of bin :math:`t` moves the hidden state,
    and so the symbols, of every later bin.
    """

    hidden: int
    noise_dim: int
    num_symbols: int

    @nn.compact
    def __call__(self, observations: Array, mask: Array) -> tuple[Array, Array]:
        """(loc, scale), each (trial, time, noise_dim), from symbols (trial, time)."""
        dtype = observations.dtype  # float64 under jax_enable_x64, else float32
        inputs = jax.nn.one_hot(observations.astype(jnp.int32), self.num_symbols, dtype=dtype)

        def gru():
            return nn.GRUCell(self.hidden, dtype=dtype, param_dtype=dtype)

        forward = nn.RNN(gru())(inputs)
        backward = nn.RNN(gru(), reverse=True, keep_order=True)(inputs)
        dense = nn.Dense(2 * self.noise_dim, dtype=dtype, param_dtype=dtype)
        loc, raw = jnp.split(dense(jnp.concatenate([forward, backward], axis=-1)), 2, axis=-1)
        return loc, jax.nn.softplus(raw) + 1e-3


@dataclasses.dataclass(frozen=True, kw_only=True)
class RNNEmulator(StateSpaceModel):
    r"""A ReLU network driven by Gaussian noise, read out as symbol probabilities.

    .. math::
        \xi_t \sim N(0, I_{\text{noise}}),\quad
        h_t = \mathrm{ReLU}(W_{\text{in}}\,\xi_t + W_{hh}\,h_{t-1} + b),\quad h_{-1} = 0,\quad
        y_t \sim \mathrm{Categorical}(\mathrm{softmax}(W_{\text{out}} h_t)),

    with :math:`b = 0` unless ``biases=True`` (the paper's networks, and its authors' code by
    default, have none). The noise is the network's only input: without it the activity decays
    to (or stays at) a fixed point of :math:`h \mapsto \mathrm{ReLU}(W_{hh}h + b)`; without
    biases :math:`h = 0` always is one, on the kink of every unit, so its class comes from the
    dynamics around it (:mod:`probdyn.analysis.fixed_points.local`), not from a Jacobian. Under
    the noise the network generates symbol sequences whose statistics can match an HMM's.
    ``biases=True`` lets a user test whether a conclusion survives them.

    ==============  ====================  =====================================
    site            shape                 default prior
    ==============  ====================  =====================================
    ``W_in``        (hidden, noise_dim)   Normal(0, 3/sqrt(noise_dim))
    ``W_hh``        (hidden, hidden)      Normal(0, 3/sqrt(hidden))
    ``W_out``       (symbols, hidden)     Normal(0, 3/sqrt(hidden))
    ``b``           (hidden,)             Normal(0, 1) (only with ``biases=True``)
    ``noise``       (trial, time, noise)  Normal(0, 1) (latent)
    ==============  ====================  =====================================

    The likelihood of observed sequences integrates over the noise: ``marginal="sample"`` (the
    default) samples it (non-centred, site ``noise``), ``"particle"`` estimates it by a
    particle filter of ``num_particles`` hidden states, unbiased in :math:`p(y)`
    (:mod:`probdyn.state_space`; :meth:`log_likelihood` gives it per sequence). Fit as the
    paper does with :func:`probdyn.inference.fit_sinkhorn`, or by the evidence lower bound
    with ``svi(..., guide="amortised-delta")`` (MAP weights, the noise path of each sequence
    inferred by :class:`NoisePathEncoder`, ``encoder_hidden`` units per direction).
    """

    kind: ClassVar[str] = "map"
    site_dims: ClassVar[dict[str, list[str]]] = {
        "W_in": ["unit", "noise_dim"],
        "W_hh": ["unit", "unit_from"],
        "W_out": ["symbol", "unit"],
        "b": ["unit"],
        "noise": ["trial", "time", "noise_dim"],
    }
    hidden: Count = 150
    noise_dim: Count = 100
    num_symbols: Count = 3
    observation: Literal["categorical"] = "categorical"
    priors: Mapping[str, dist.Distribution] | None = None
    encoder_hidden: Count = 64
    marginal: str = "sample"
    num_particles: Count = 64
    biases: bool = False

    #: The per-trial site the amortised guide's encoder infers.
    local_site: ClassVar[str] = "noise"
    noise_site: ClassVar[str] = "noise"

    @property
    def latent_dim(self) -> int:
        """The hidden units: the network's state."""
        return self.hidden

    def _placeholder_emission_dim(self) -> int:
        return self.num_symbols

    def default_priors(self, emission_dim: int) -> dict[str, dist.Distribution]:
        """Input, recurrent and readout weights: three times the fan-in scale.

        The fan-in scale itself (where the fits start, :meth:`initial_weights`) acted as a
        strong weight decay on MAP fits: of the 3-state HMM's sequences, a filter fit under
        it made the output switch too often (volatility 0.329 against 0.317) where one under
        these made it 0.323 (docs/models/hmm.md).
        """
        priors = {
            name: dist.Normal(jnp.zeros(shape), 3.0 / math.sqrt(fan_in))
            for name, (shape, fan_in) in self._weight_layout().items()
        }
        if self.biases:
            priors["b"] = dist.Normal(jnp.zeros(self.hidden), 1.0)
        return priors

    def initial_weights(self, key: Array) -> dict[str, Array]:
        r"""Where the point-estimate fits start: weights :math:`\sim N(0, 1/\text{fan-in})`.

        The usual fan-in scale, whatever the priors: it keeps the noise-free map's spectral
        radius near 1, so the first sequences the network generates are neither silent nor
        explosive. (A draw from the default priors, three times as wide, starts at radius about
        3, logits of order :math:`3^T`, and an optimiser that spends hundreds of steps only
        shrinking them.)
        """
        layout = self._weight_layout()
        keys = jax.random.split(key, len(layout))
        weights = {
            name: jax.random.normal(k, shape) / math.sqrt(fan_in)
            for (name, (shape, fan_in)), k in zip(layout.items(), keys, strict=True)
        }
        return weights | ({"b": jnp.zeros(self.hidden)} if self.biases else {})

    def _weight_layout(self) -> dict[str, tuple[tuple[int, int], int]]:
        """Each weight matrix's shape and fan-in (the inputs each unit sums)."""
        H, X, S = self.hidden, self.noise_dim, self.num_symbols
        return {"W_in": ((H, X), X), "W_hh": ((H, H), H), "W_out": ((S, H), H)}

    def encoder(self) -> NoisePathEncoder:
        """The network of the amortised guide over ``noise`` (see :mod:`probdyn.inference`)."""
        return NoisePathEncoder(self.encoder_hidden, self.noise_dim, self.num_symbols)

    # -- dynamics ----------------------------------------------------------------------------
    def vector_field(self, params: Mapping[str, Array], x: Array, u: Array | None = None) -> Array:
        r"""The map :math:`h \mapsto \mathrm{ReLU}(W_{hh}h + W_{\text{in}}u + b)` (noise ``u``)."""
        drive = params["W_hh"] @ x
        if self.biases:
            drive = drive + params["b"]
        if u is not None:
            drive = drive + params["W_in"] @ u
        return jax.nn.relu(drive)

    def emission_mean(self, params: Mapping[str, Array], x: Array) -> Array:
        r"""Symbol probabilities :math:`\mathrm{softmax}(W_{out} h)`."""
        return jax.nn.softmax(params["W_out"] @ x)

    # -- the state-space statement -------------------------------------------------------------
    @property
    def noise_shape(self) -> tuple[int, int]:
        """One noise vector per bin."""
        return 1, self.noise_dim

    def initial_state(self, params: Mapping[str, Array], noise: Array) -> Array:
        r""":math:`h_0 = \mathrm{ReLU}(W_{\text{in}}\xi_0 + b)`: the map from :math:`h_{-1} = 0`."""
        return self.vector_field(params, jnp.zeros(self.hidden, noise.dtype), noise)

    def transition(self, params: Mapping[str, Array], dt: float):
        """One step of the map, driven by this bin's noise (``u`` and ``dt`` unused)."""

        def advance(x, noise, u):
            return self.vector_field(params, x, noise[0])

        return advance

    def emission(self, params: Mapping[str, Array], x: Array) -> dist.Distribution:
        r""":math:`\mathrm{Categorical}(\mathrm{softmax}(W_{out} h))`."""
        return dist.Categorical(logits=x @ params["W_out"].T)

    def generate(
        self, params: Mapping[str, Array], key: Array, num_trials: int, num_timesteps: int
    ) -> tuple[Array, Array]:
        """Symbols (trial, time) and hidden states (trial, time, hidden) of new sequences."""
        key_noise, key_symbols = jax.random.split(key)
        noise = jax.random.normal(key_noise, (num_trials, num_timesteps, self.noise_dim))
        hidden = jax.vmap(lambda xi: self.latent_path(params, xi, 1.0))(noise)
        symbols = jax.random.categorical(key_symbols, hidden @ params["W_out"].T)
        return symbols, hidden

    # -- the program -------------------------------------------------------------------------
    def prepare(self, ds: xr.Dataset) -> ModelData:
        """As :meth:`probdyn.Model.prepare`; the data's symbols must fit ``num_symbols``."""
        data = super().prepare(ds)
        if data.mask is not None:
            raise DataError("RNNEmulator needs every symbol; the sequences have missing bins")
        largest = int(jnp.max(data.observations))
        if largest >= self.num_symbols:
            raise DataError(
                f"symbols go up to {largest} but the model has num_symbols={self.num_symbols}"
            )
        return data

    def log_likelihood(
        self,
        params: Mapping[str, Array],
        symbols,
        *,
        num_particles: int = 1000,
        num_repeats: int = 4,
        seed: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        r"""Per-sequence :math:`\log p(y \mid W)` by a particle filter, and its standard error.

        The particles are hidden states; the noise is the proposal (bootstrap filter). See
        :func:`probdyn.algorithms.particle_filter.log_likelihood`.
        """
        params = {name: params[name] for name in self.default_priors(self.num_symbols)}
        symbols = jnp.asarray(symbols)
        data = ModelData(symbols, None, None, *symbols.shape, self.num_symbols, 1.0)
        return self.particle_log_likelihood(
            params, data, num_particles=num_particles, num_repeats=num_repeats, seed=seed
        )
