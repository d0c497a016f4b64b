r"""Sequential autoencoders with neural-ODE latent dynamics (family 5).

Sedler, Versteeg & Pandarinath (2023), *Expressive architectures enhance interpretability of
dynamics-based neural population models*; the injective flow readout is from their ODIN model
(Versteeg, Sedler, McCart & Pandarinath 2023).
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

from probdyn.data.validate import OBSERVATION_VARIABLES
from probdyn.errors import PriorError
from probdyn.model import Model, ModelData, deterministic_path_marginals, observe
from probdyn.schema import Count, NonNegativeInt, Positive


#: Latent dynamics: the neural ODE and the baselines of the paper at the same latent size.
class BidirectionalGRUEncoder(nn.Module):
    r"""Amortised :math:`q(z_0 \mid y) = N(\mu(y), \mathrm{diag}\,s(y)^2)`.

    A GRU runs forward and one backward over :math:`\log(1 + y_t)` (missing bins enter as 0 with
    a 0 in the mask channel); their final states, concatenated, give :math:`\mu` and
    :math:`s = \mathrm{softplus}(\cdot) + 10^{-3}` through one dense layer.
    """

    hidden: int
    latent_dim: int

    @nn.compact
    def __call__(self, observations: Array, mask: Array) -> tuple[Array, Array]:
        """(loc, scale) of :math:`z_0`, each (trial, D), from (trial, time, neuron) arrays."""
        inputs = jnp.concatenate([jnp.log1p(observations) * mask, mask], axis=-1)
        dtype = inputs.dtype  # float64 under jax_enable_x64, else float32

        def gru():
            return nn.GRUCell(self.hidden, dtype=dtype, param_dtype=dtype)

        forward, _ = nn.RNN(gru(), return_carry=True)(inputs)
        backward, _ = nn.RNN(gru(), return_carry=True, reverse=True)(inputs)
        dense = nn.Dense(2 * self.latent_dim, dtype=dtype, param_dtype=dtype)
        out = dense(jnp.concatenate([forward, backward], axis=-1))
        loc, raw = jnp.split(out, 2, axis=-1)
        return loc, jax.nn.softplus(raw) + 1e-3


@dataclasses.dataclass(frozen=True, kw_only=True)
class NODE(Model):
    r"""Latent dynamics from an initial condition, read out as Poisson (or Gaussian) activity.

    .. math::
        z_0 \sim N(0, I_D),\qquad
        \tau\frac{dz}{dt} = f_\theta(z) = W_2 \tanh(W_1 z + b_1) + b_2,\qquad
        y_{t,n} \sim \mathrm{Poisson}\big(\exp(\eta_n(z_t))\big),

    :math:`f_\theta` an MLP :math:`D \to` ``hidden`` :math:`\to D`, integrated over each bin of
    length :math:`\Delta` (the data's ``dt``) by ``substeps`` steps of RK4 (or Euler). The time
    constant :math:`\tau` (``tau``, in the data's time unit; 1 by default) sets the scale on
    which the weights' prior expects the latents to move: give it the time scale of the
    dynamics (a tenth of the attractor's period, 10-20 ms for motor cortex). The log
    rates :math:`\eta` are ``readout="linear"``: :math:`\eta(z) = C z + c`, or ``"flow"``:
    ODIN's injective readout, :math:`u \leftarrow (z, 0, \dots, 0) \in \mathbb{R}^N`, then
    ``readout_steps`` steps :math:`u \leftarrow u + h\,\mathrm{MLP}(u)`
    (:math:`N \to` ``readout_hidden`` :math:`\to N`, tanh), :math:`\eta = u`, with the step
    :math:`h` (:meth:`flow_step_size`: 0.1, smaller where the weights are large) that keeps
    every step invertible, so the readout is injective by construction.
    ``observation="gaussian"`` reads :math:`y_t \sim N(\eta(z_t), \mathrm{diag}\,r^2)`.

    The baselines of the paper share everything but the one-bin map :math:`z_{t+1} = F(z_t)`:

    - ``dynamics="node"``: :math:`F` = the flow of :math:`f_\theta/\tau` over :math:`\Delta` (the
      MLP plus the pass-through of the integrator);
    - ``"gru"``: a GRU cell with zero input and state :math:`z` (sites ``U`` (3, D, D): reset,
      update and candidate weights; ``a`` (4, D): their biases and the candidate's recurrent
      bias): :math:`r = \sigma(U_r z + a_r)`, :math:`u = \sigma(U_u z + a_u)`,
      :math:`n = \tanh(a_n + r \odot (U_n z + a_h))`, :math:`F(z) = (1 - u) \odot n + u \odot z`;
    - ``"mlp"`` (no pass-through): :math:`F(z) = W_2 \tanh(W_1 z + b_1) + b_2`;
    - ``"rnn"`` (no MLP): :math:`F(z) = \tanh(U z + a)` (``U`` (D, D), ``a`` (D,));
    - ``"residual"`` (no MLP, with the pass-through): :math:`F(z) = z + \tanh(U z + a)`, the
      fourth cell of the paper's 2 x 2 ablation (MLP or one layer, pass-through or not).

    ``kind`` is ``"flow"`` for ``"node"`` (:meth:`vector_field` is :math:`f_\theta(z)/\tau`:
    fixed points :math:`f_\theta(z) = 0`, eigenvalues per unit of the data's time) and ``"map"``
    otherwise.

    ``encoder_neurons`` (indices; default all) restricts what the encoder reads, so that trials
    where only those neurons are recorded (co-smoothing: held-in neurons) are inferred as the
    training trials were.

    ============  ==============================  ===========================================
    site          shape                           default prior
    ============  ==============================  ===========================================
    ``W1``        (hidden, D)                     Normal(0, 1/sqrt(D))
    ``b1``        (hidden,)                       Normal(0, 1)
    ``W2``        (D, hidden)                     Normal(0, 1/sqrt(hidden))
    ``b2``        (D,)                            Normal(0, 1/sqrt(hidden))
    ``U``, ``a``  (3, D, D), (4, D) / (D, D), (D,)  Normal(0, 1/sqrt(D)), Normal(0, 1)
    ``C``, ``c``  (N, D), (N,)                    Normal(0, 1/sqrt(D)), Normal(0, 1) (linear)
    ``R1``        (readout_hidden, N)             Normal(0, 1/sqrt(N)) (flow)
    ``r1``        (readout_hidden,)               Normal(0, 1) (flow)
    ``R2``        (N, readout_hidden)             Normal(0, 1/sqrt(readout_hidden)) (flow)
    ``r2``        (N,)                            Normal(0, 1) (flow)
    ``r``         (N,)                            HalfNormal(1) (Gaussian observations)
    ``initial``   (trial, D)                      Normal(0, 1) (latent: :math:`z_0`)
    ============  ==============================  ===========================================

    The latents are identifiable only up to the symmetries of the readout (an invertible affine
    map for the linear one); fixed points are matched across draws in rate space. Fit with
    ``svi(model, data, guide="amortised")`` (Gaussian over the weights, the encoder
    :class:`BidirectionalGRUEncoder` over :math:`z_0`) or ``guide="amortised-delta"`` (MAP
    weights, as the paper trains).
    """

    site_dims: ClassVar[dict[str, list[str]]] = {
        "W1": ["mlp_unit", "latent"],
        "b1": ["mlp_unit"],
        "W2": ["latent", "mlp_unit"],
        "b2": ["latent"],
        "U": ["gate", "latent", "latent_from"],
        "a": ["bias", "latent"],
        "C": ["neuron", "latent"],
        "c": ["neuron"],
        "R1": ["readout_unit", "neuron_from"],
        "r1": ["readout_unit"],
        "R2": ["neuron", "readout_unit"],
        "r2": ["neuron"],
        "r": ["neuron"],
        "initial": ["trial", "latent"],
        "latents": ["trial", "time", "latent"],
    }
    latent_dim: Count
    num_neurons: Count
    hidden: Count = 128
    dynamics: Literal["node", "gru", "mlp", "rnn", "residual"] = "node"
    observation: Literal["poisson", "gaussian"] = "poisson"
    readout: Literal["linear", "flow"] = "linear"
    readout_hidden: Count = 64
    readout_steps: Count = 10
    encoder_hidden: Count = 64
    encoder_neurons: tuple[NonNegativeInt, ...] | None = None
    tau: Positive = 1.0
    solver: Literal["euler", "rk4"] = "rk4"
    substeps: Count = 1
    marginal: str = "sample"
    priors: Mapping[str, dist.Distribution] | None = None

    def _check_hyperparameters(self):
        if self.encoder_neurons is not None:
            chosen = list(self.encoder_neurons)
            valid = all(isinstance(i, int) and 0 <= i < self.num_neurons for i in chosen)
            if not chosen or not valid or len(set(chosen)) != len(chosen):
                raise PriorError(
                    f"NODE encoder_neurons={self.encoder_neurons!r}; expected distinct neuron "
                    f"indices in 0..{self.num_neurons - 1}"
                )
            object.__setattr__(self, "encoder_neurons", tuple(chosen))
        if self.readout == "flow" and self.latent_dim > self.num_neurons:
            raise PriorError(
                f"NODE readout='flow' pads the latent state to the neurons: latent_dim="
                f"{self.latent_dim} exceeds num_neurons={self.num_neurons}"
            )

    @property
    def kind(self) -> str:
        """``"flow"`` for the neural ODE, ``"map"`` for the discrete-time baselines."""
        return "flow" if self.dynamics == "node" else "map"

    @property
    def emission_dim(self) -> int:
        """The neurons the readout predicts."""
        return self.num_neurons

    # -- sites ------------------------------------------------------------------------------
    def marginals(self) -> dict[str, str | None]:
        """Only sampled: the path is a function of its sampled initial state."""
        return deterministic_path_marginals("initial state")

    def default_priors(self, emission_dim: int) -> dict[str, dist.Distribution]:
        """Dynamics weights, then readout weights (and Gaussian noise scales)."""
        D, H, N = self.latent_dim, self.hidden, emission_dim

        def normal(shape, scale):
            return dist.Normal(jnp.zeros(shape), scale)

        if self.dynamics in ("node", "mlp"):
            priors = {
                "W1": normal((H, D), 1 / math.sqrt(D)),
                "b1": normal((H,), 1.0),
                "W2": normal((D, H), 1 / math.sqrt(H)),
                "b2": normal((D,), 1 / math.sqrt(H)),
            }
        elif self.dynamics == "gru":
            priors = {"U": normal((3, D, D), 1 / math.sqrt(D)), "a": normal((4, D), 1.0)}
        else:
            priors = {"U": normal((D, D), 1 / math.sqrt(D)), "a": normal((D,), 1.0)}
        if self.readout == "linear":
            priors |= {"C": normal((N, D), 1 / math.sqrt(D)), "c": normal((N,), 1.0)}
        else:
            R = self.readout_hidden
            priors |= {
                "R1": normal((R, N), 1 / math.sqrt(N)),
                "r1": normal((R,), 1.0),
                "R2": normal((N, R), 1 / math.sqrt(R)),
                "r2": normal((N,), 1.0),
            }
        if self.observation == "gaussian":
            priors["r"] = dist.HalfNormal(jnp.ones(N))
        return priors

    # -- dynamics ---------------------------------------------------------------------------
    def vector_field(self, params: Mapping[str, Array], x: Array, u: Array | None = None) -> Array:
        r""":math:`f_\theta(z)` (``"node"``) or the one-bin map :math:`F(z)` (baselines).

        The maps need the bin length only for ``"node"``, so a baseline's ``vector_field`` is
        the map itself; ``u`` is ignored (the dynamics are autonomous).
        """
        if self.dynamics == "node":
            return self._mlp(params, x) / self.tau
        return self.step(params, x, dt=None)

    @staticmethod
    def _mlp(params: Mapping[str, Array], z: Array) -> Array:
        return params["W2"] @ jnp.tanh(params["W1"] @ z + params["b1"]) + params["b2"]

    def step(self, params: Mapping[str, Array], z: Array, dt: float | None) -> Array:
        r"""One bin: :math:`z_{t+1} = F(z_t)` (``dt`` is the bin length, used by ``"node"``)."""
        if self.dynamics == "node":
            h = dt / self.substeps / self.tau

            def substep(y, _):
                if self.solver == "euler":
                    return y + h * self._mlp(params, y), None
                k1 = self._mlp(params, y)
                k2 = self._mlp(params, y + h / 2 * k1)
                k3 = self._mlp(params, y + h / 2 * k2)
                k4 = self._mlp(params, y + h * k3)
                return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

            return jax.lax.scan(substep, z, None, length=self.substeps)[0]
        if self.dynamics == "mlp":
            return self._mlp(params, z)
        U, a = params["U"], params["a"]
        if self.dynamics == "rnn":
            return jnp.tanh(U @ z + a)
        if self.dynamics == "residual":
            return z + jnp.tanh(U @ z + a)
        reset = jax.nn.sigmoid(U[0] @ z + a[0])
        update = jax.nn.sigmoid(U[1] @ z + a[1])
        candidate = jnp.tanh(a[2] + reset * (U[2] @ z + a[3]))
        return (1 - update) * candidate + update * z

    def rollout(self, params: Mapping[str, Array], z0: Array, num_timesteps: int, dt: float):
        """Latent path (time, D) from ``z0`` (D,): ``z0`` then ``num_timesteps - 1`` bins."""

        def advance(z, _):
            z = self.step(params, z, dt)
            return z, z

        _, rest = jax.lax.scan(advance, z0, None, length=num_timesteps - 1)
        return jnp.concatenate([z0[None], rest])

    def log_rates(self, params: Mapping[str, Array], z: Array) -> Array:
        r"""The readout :math:`\eta(z)` (..., N) at latent states ``z`` (..., D)."""
        if self.readout == "linear":
            return z @ params["C"].T + params["c"]
        pad = [(0, 0)] * (z.ndim - 1) + [(0, self.num_neurons - self.latent_dim)]
        u = jnp.pad(z, pad)
        step = self.flow_step_size(params)
        for _ in range(self.readout_steps):
            u = u + step * (
                jnp.tanh(u @ params["R1"].T + params["r1"]) @ params["R2"].T + params["r2"]
            )
        return u

    #: Bound on the Lipschitz constant of each flow-readout step's residual (< 1: invertible).
    FLOW_LIPSCHITZ = 0.9

    @classmethod
    def flow_step_size(cls, params: Mapping[str, Array]) -> Array:
        r"""The flow readout's step: 0.1, less where the weights are large.

        .. math:: h = \min\big(0.1,\ 0.9 / (\lVert R_2\rVert_2 \lVert R_1\rVert_2)\big).

        :math:`\tanh` is 1-Lipschitz, so the residual :math:`h\,\mathrm{MLP}` of each step has
        Lipschitz constant at most :math:`h \lVert R_2\rVert_2 \lVert R_1\rVert_2 \le 0.9 < 1`,
        which makes :math:`u \mapsto u + h\,\mathrm{MLP}(u)` invertible (its inverse is the
        fixed point of :math:`u = v - h\,\mathrm{MLP}(u)`, a contraction; Behrmann et al.
        2019); with the zero padding, the whole readout is injective for any weights.
        """
        gain = jnp.linalg.norm(params["R1"], ord=2) * jnp.linalg.norm(params["R2"], ord=2)
        return jnp.minimum(0.1, cls.FLOW_LIPSCHITZ / jnp.maximum(gain, 1e-12))

    def emission_mean(self, params: Mapping[str, Array], x: Array) -> Array:
        r"""Rate per bin :math:`\exp(\eta(z))` (Poisson) or the mean :math:`\eta(z)` (Gaussian)."""
        eta = self.log_rates(params, x)
        return jnp.exp(eta) if self.observation == "poisson" else eta

    def encoder(self) -> BidirectionalGRUEncoder:
        """The network of the amortised guide over ``initial`` (see :mod:`probdyn.inference`)."""
        return BidirectionalGRUEncoder(hidden=self.encoder_hidden, latent_dim=self.latent_dim)

    #: The per-trial site the encoder infers.
    local_site: ClassVar[str] = "initial"

    # -- the program ------------------------------------------------------------------------
    def program(self, data: ModelData, batch_size: int | None = None) -> None:
        """Weights, then per trial :math:`z_0`, its rollout (site ``latents``) and the data."""
        p = self.sample_parameters(data)
        site = OBSERVATION_VARIABLES[self.observation]
        with self.trial_plate(data, batch_size) as index:
            batch = data if batch_size is None else data.take(index)
            z0 = numpyro.sample(
                self.local_site, dist.Normal(0.0, 1.0).expand([self.latent_dim]).to_event(1)
            )
            paths = jax.vmap(lambda z: self.rollout(p, z, data.num_timesteps, data.dt))(z0)
            latents = numpyro.deterministic("latents", paths)
            eta = self.log_rates(p, latents)
            if self.observation == "poisson":
                emission = dist.Poisson(jnp.exp(eta))
            else:
                emission = dist.Normal(eta, p["r"])
            observe(site, emission, batch)
