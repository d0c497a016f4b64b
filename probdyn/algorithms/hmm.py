r"""Hidden Markov models with discrete states: a NumPyro distribution and its exact inference.

:class:`DiscreteHMM` follows Pyro's ``DiscreteHMM`` signature and convention: a state
:math:`z_{-1}` is drawn from the initial distribution and then every time step moves the chain
once and emits,

.. math::
    z_{-1} \sim \mathrm{Cat}(\pi),\qquad z_t \mid z_{t-1} \sim \mathrm{Cat}(A_t[z_{t-1}]),\qquad
    y_t \mid z_t \sim p_t(\cdot \mid z_t),\qquad t = 0, \dots, T-1.

With ``initial_step=0`` the chain starts at :math:`z_0 \sim \mathrm{Cat}(\pi)` instead (dynamax's
convention; :math:`A_0` is then unused), which is the same as giving :math:`A_0` every row equal
to :math:`\pi` but keeps a homogeneous chain homogeneous. Either way the algorithms start from
the distribution of the first state, :math:`\rho = \pi A_0` or :math:`\rho = \pi`, and move with
:math:`A_1, \dots, A_{T-1}`. The states are summed out by the forward algorithm,

.. math::
    \alpha_t(j) = p(y_{0:t}, z_t = j) = \sum_i \alpha_{t-1}(i)\,A_t(i, j)\,p_t(y_t \mid j),
    \qquad \log p(y_{0:T-1}) = \log \sum_j \alpha_{T-1}(j),

either sequentially with normalised probabilities (one matrix-vector product per step, the
normaliser accumulated in log space) or, with ``method="parallel"``, as an associative scan
(depth :math:`O(\log T)`, work :math:`O(T K^3)`) of the matrices
:math:`M_t(i, j) = A_t(i, j)\, p_t(y_t \mid j)`, :math:`t \ge 1`, each kept as a scale
:math:`e^{s}` times a matrix whose largest entry is 1 (the scale carries the magnitude; entries
more than about 700 nats below a product's largest are lost, as in any probability-space
recursion). Masked steps (``observed`` False) emit nothing: their :math:`\log p_t(y_t \mid j)` is 0.

Filtering, smoothing (forward-backward) and the most probable path (Viterbi) are exact.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import Array
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints

from probdyn.errors import ConfigError


def _scan_steps(step, init, a: Array, e: Array, *, reverse: bool = False):
    """``lax.scan`` of ``step(carry, (a_t, e_t))`` over the leading time axis.

    A homogeneous ``a`` (time axis of size 1) is closed over rather than copied per step.
    """
    if a.shape[0] == 1 and e.shape[0] != 1:
        return jax.lax.scan(lambda c, e_t: step(c, (a[0], e_t)), init, e, reverse=reverse)
    return jax.lax.scan(step, init, (a, e), reverse=reverse)


def _scaled_matmul(left: tuple[Array, Array], right: tuple[Array, Array]):
    r"""Product of matrices held as (P, s) with value :math:`e^{s} P` and :math:`\max P = 1`."""
    product = left[0] @ right[0]
    peak = jnp.max(product, axis=(-2, -1), keepdims=True)
    return product / peak, left[1] + right[1] + jnp.log(peak)


class DiscreteHMM(dist.Distribution):
    """HMM with ``K`` discrete states, states summed out; event shape (T, *observation event).

    Parameters
    ----------
    initial_logits
        (..., K) logits of :math:`z_{-1}`.
    transition_logits
        (..., K, K) (homogeneous) or (..., T, K, K) logits; row ``i`` is the distribution of the
        next state from state ``i``.
    observation_dist
        Emission distribution with batch shape (..., K) (homogeneous) or (..., T, K).
    num_steps
        T, needed when neither the transitions nor the emissions carry a time axis.
    observed
        Optional boolean (..., T): False marks a missing bin (no emission term).
    method
        ``"sequential"`` (scaled forward recursion) or ``"parallel"`` (associative scan); the
        same value up to rounding.
    initial_step
        ``-1`` (Pyro's convention: ``initial_logits`` is the distribution of :math:`z_{-1}`,
        moved once by :math:`A_0`) or ``0`` (it is the distribution of :math:`z_0`).

    """

    arg_constraints: ClassVar[dict] = {
        "initial_logits": constraints.real_vector,
        "transition_logits": constraints.independent(constraints.real, 2),
    }
    pytree_data_fields = ("initial_logits", "transition_logits", "observation_dist", "observed")
    pytree_aux_fields = ("num_steps", "method", "initial_step", "_time_varying")

    def __init__(
        self,
        initial_logits: Array,
        transition_logits: Array,
        observation_dist: dist.Distribution,
        *,
        num_steps: int | None = None,
        observed: Array | None = None,
        method: str = "sequential",
        initial_step: int = -1,
        validate_args=None,
    ):
        if method not in ("sequential", "parallel"):
            raise ConfigError(f"method={method!r}; expected 'sequential' or 'parallel'")
        if initial_step not in (-1, 0):
            raise ConfigError(f"initial_step={initial_step!r}; expected -1 (z_-1) or 0 (z_0)")
        num_states = jnp.shape(initial_logits)[-1]
        if jnp.shape(transition_logits)[-2:] != (num_states, num_states):
            raise ConfigError(
                f"transition_logits has shape {jnp.shape(transition_logits)}; the last two axes "
                f"must be ({num_states}, {num_states}) for {num_states} states"
            )
        obs_batch = tuple(observation_dist.batch_shape)
        if not obs_batch or obs_batch[-1] != num_states:
            raise ConfigError(
                f"observation_dist has batch shape {obs_batch}; its last axis must be the "
                f"{num_states} states"
            )
        time_sizes = set()
        if jnp.ndim(transition_logits) >= 3:
            time_sizes.add(jnp.shape(transition_logits)[-3])
        if len(obs_batch) >= 2:
            time_sizes.add(obs_batch[-2])
        time_sizes.discard(1)
        if num_steps is not None:
            time_sizes.add(num_steps)
        if len(time_sizes) != 1:
            raise ConfigError(
                "cannot tell the number of time steps T: give num_steps, or a time axis in "
                "transition_logits (..., T, K, K) or observation_dist (..., T, K); "
                f"saw {time_sizes}"
            )
        (self.num_steps,) = time_sizes
        self._time_varying = jnp.ndim(transition_logits) >= 3
        self.initial_logits = initial_logits
        self.transition_logits = transition_logits
        self.observation_dist = observation_dist
        self.observed = observed
        self.method = method
        self.initial_step = initial_step
        batch_shape = jnp.broadcast_shapes(
            jnp.shape(initial_logits)[:-1],
            jnp.shape(transition_logits)[: -3 if self._time_varying else -2],
            obs_batch[:-2] if len(obs_batch) >= 2 else (),
        )
        event_shape = (self.num_steps, *observation_dist.event_shape)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self):
        """Each step's value lies in the emission distribution's support."""
        base = self.observation_dist.support
        return constraints.independent(base, 1) if base.event_dim == 0 else base

    @property
    def num_states(self) -> int:
        """K."""
        return jnp.shape(self.initial_logits)[-1]

    # -- pieces shared by every algorithm ------------------------------------------------------
    def _log_transitions(self) -> Array:
        """Normalised log transition matrices, (..., T, K, K) or (..., 1, K, K) if homogeneous."""
        logits = self.transition_logits
        if not self._time_varying:
            logits = logits[..., None, :, :]
        return jax.nn.log_softmax(logits, axis=-1)

    def emission_log_prob(self, value: Array) -> Array:
        r""":math:`\log p_t(y_t \mid j)` for every step and state, (..., T, K); 0 where masked."""
        event_dims = len(self.observation_dist.event_shape)
        expanded = jnp.expand_dims(value, axis=-1 - event_dims)
        log_p = self.observation_dist.log_prob(expanded)
        log_p = jnp.broadcast_to(log_p, (*log_p.shape[:-2], self.num_steps, self.num_states))
        if self.observed is not None:
            log_p = jnp.where(jnp.asarray(self.observed)[..., None], log_p, 0.0)
        return log_p

    def _chain(self) -> tuple[Array, Array]:
        r"""The first state's distribution and the later moves, in log space.

        :math:`\log \rho` (..., K) and :math:`\log A_{1:T-1}` (..., T-1, K, K), or (..., 1, K, K)
        when homogeneous.
        """
        log_a = self._log_transitions()
        log_rho = jax.nn.log_softmax(self.initial_logits, axis=-1)
        if self.initial_step == -1:
            log_rho = logsumexp(log_rho[..., :, None] + log_a[..., 0, :, :], axis=-2)
        return log_rho, log_a[..., 1:, :, :] if self._time_varying else log_a

    def _broadcast_parts(self, value: Array):
        r""":math:`\log\rho`, :math:`\log A_{1:}` and the emission terms on one batch shape."""
        log_e = self.emission_log_prob(value)
        log_rho, log_a = self._chain()
        shape = jnp.broadcast_shapes(log_e.shape[:-2], log_a.shape[:-3], log_rho.shape[:-1])
        return (
            jnp.broadcast_to(log_rho, (*shape, log_rho.shape[-1])),
            jnp.broadcast_to(log_a, (*shape, *log_a.shape[-3:])),
            jnp.broadcast_to(log_e, (*shape, *log_e.shape[-2:])),
        )

    # -- likelihood ----------------------------------------------------------------------------
    def log_prob(self, value: Array) -> Array:
        """Log marginal likelihood of the observation sequence, states summed out."""
        log_rho, log_a, log_e = self._broadcast_parts(value)
        if self.method == "parallel":
            first = log_rho + log_e[..., 0, :]
            if self.num_steps == 1:
                return logsumexp(first, axis=-1)
            steps = log_a + log_e[..., 1:, None, :]
            peak = jnp.max(steps, axis=(-2, -1), keepdims=True)
            time_axis = steps.ndim - 3
            scaled, log_scale = jax.lax.associative_scan(
                _scaled_matmul, (jnp.exp(steps - peak), peak), axis=time_axis
            )
            total = jnp.log(scaled[..., -1, :, :]) + log_scale[..., -1, :, :]
            return logsumexp(first[..., :, None] + total, axis=(-2, -1))
        _, log_norms = self._forward(log_rho, log_a, log_e)
        return jnp.sum(log_norms, axis=-1)

    def pointwise_log_prob(self, value: Array) -> Array:
        r"""The log marginal split over steps and, for vector emissions, their components.

        With :math:`\hat c_t` the predicted state distribution before step t and
        :math:`\ell_{t,j,\le n}` the log density of the first n+1 components of :math:`y_t`
        under state j, the term of component n of step t is

        .. math::
            \log \sum_j \hat c_t(j)\, e^{\ell_{t,j,\le n}}
            - \log \sum_j \hat c_t(j)\, e^{\ell_{t,j,< n}}

        (its density given everything before it); the terms sum to :meth:`log_prob`. Shape
        (..., T) for scalar emissions, (..., T, N) for N independent components (an
        ``Independent`` emission); 0 where masked.
        """
        log_rho, log_a, log_e = self._broadcast_parts(value)
        filtered, _ = self._forward(log_rho, log_a, log_e)
        moved = (filtered[..., :-1, None, :] @ jnp.exp(log_a))[..., 0, :]
        log_predicted = jnp.log(jnp.concatenate([jnp.exp(log_rho)[..., None, :], moved], -2))
        emission = self.observation_dist
        if not emission.event_shape:
            return logsumexp(log_predicted + log_e, axis=-1)
        if not (isinstance(emission, dist.Independent) and len(emission.event_shape) == 1):
            raise ConfigError("pointwise terms need scalar or Independent vector emissions")
        # (..., T, K, N): each component's log density under each state.
        parts = emission.base_dist.log_prob(jnp.expand_dims(value, -2))
        parts = jnp.broadcast_to(parts, (*log_e.shape, emission.event_shape[0]))
        if self.observed is not None:
            parts = jnp.where(jnp.asarray(self.observed)[..., None, None], parts, 0.0)
        cumulative = logsumexp(log_predicted[..., None] + jnp.cumsum(parts, axis=-1), axis=-2)
        return jnp.diff(cumulative, axis=-1, prepend=0.0)

    @staticmethod
    def _forward(log_rho: Array, log_a: Array, log_e: Array) -> tuple[Array, Array]:
        r"""Scaled forward recursion: filtered probabilities (..., T, K) and log normalisers.

        With :math:`\hat c_0 = \rho` and :math:`\hat c_t = c_{t-1} A_t` the predicted state
        distribution, :math:`v_t = \hat c_t \odot e^{\ell_t - \max \ell_t}` and
        :math:`c_t = v_t / \sum v_t`; the log normaliser of step t is
        :math:`\log \sum v_t + \max \ell_t`.
        """
        a = jnp.exp(jnp.moveaxis(log_a, -3, 0))
        e = jnp.moveaxis(log_e, -2, 0)

        def update(predicted, e_t):
            peak = jnp.max(e_t, axis=-1, keepdims=True)
            v = predicted * jnp.exp(e_t - peak)
            norm = jnp.sum(v, axis=-1, keepdims=True)
            return v / norm, jnp.log(norm[..., 0]) + peak[..., 0]

        def step(c, inputs):
            a_t, e_t = inputs
            c, log_norm = update(jnp.einsum("...i,...ij->...j", c, a_t), e_t)
            return c, (c, log_norm)

        first, first_norm = update(jnp.exp(log_rho), e[0])
        _, (filtered, log_norms) = _scan_steps(step, first, a, e[1:])
        filtered = jnp.concatenate([first[None], filtered])
        log_norms = jnp.concatenate([first_norm[None], log_norms])
        return jnp.moveaxis(filtered, 0, -2), jnp.moveaxis(log_norms, 0, -1)

    # -- posterior over states -----------------------------------------------------------------
    def filter(self, value: Array) -> Array:
        r"""Filtered marginals :math:`p(z_t \mid y_{0:t})`, shape (..., T, K)."""
        filtered, _ = self._forward(*self._broadcast_parts(value))
        return filtered

    def smooth(self, value: Array) -> Array:
        r"""Smoothed marginals :math:`p(z_t \mid y_{0:T-1})` by forward-backward, (..., T, K).

        Backward pass on normalised messages: :math:`\beta_{T-1} = 1`,
        :math:`\beta_{t}(i) \propto \sum_j A_{t+1}(i, j)\, p_{t+1}(y_{t+1} \mid j)\,
        \beta_{t+1}(j)`; the marginal is :math:`\propto c_t \odot \beta_t`.
        """
        log_rho, log_a, log_e = self._broadcast_parts(value)
        filtered, _ = self._forward(log_rho, log_a, log_e)
        a = jnp.exp(jnp.moveaxis(log_a, -3, 0))
        e = jnp.moveaxis(log_e, -2, 0)[1:]

        def step(beta, inputs):
            a_next, e_next = inputs
            weighted = beta * jnp.exp(e_next - jnp.max(e_next, axis=-1, keepdims=True))
            beta = jnp.einsum("...ij,...j->...i", a_next, weighted)
            beta = beta / jnp.sum(beta, axis=-1, keepdims=True)
            return beta, beta

        last = jnp.ones(filtered.shape[:-2] + filtered.shape[-1:])
        _, betas = _scan_steps(step, last, a, e, reverse=True)
        betas = jnp.concatenate([jnp.moveaxis(betas, 0, -2), last[..., None, :]], axis=-2)
        joint = filtered * betas
        return joint / jnp.sum(joint, axis=-1, keepdims=True)

    def viterbi(self, value: Array) -> Array:
        r"""Most probable state path :math:`\arg\max_z p(z \mid y)`, shape (..., T), int."""
        log_rho, log_a, log_e = self._broadcast_parts(value)
        a = jnp.moveaxis(log_a, -3, 0)
        e = jnp.moveaxis(log_e, -2, 0)

        def forward(score, inputs):
            a_t, e_t = inputs
            candidates = score[..., :, None] + a_t
            return jnp.max(candidates, axis=-2) + e_t, jnp.argmax(candidates, axis=-2)

        # z_{-1} (Pyro's convention) is summed out in rho: the path is z_0, ..., z_{T-1}.
        score, back = _scan_steps(forward, log_rho + e[0], a, e[1:])
        last = jnp.argmax(score, axis=-1)

        def backward(state, pointers):
            previous = jnp.take_along_axis(pointers, state[..., None], axis=-1)[..., 0]
            return previous, state

        first_state, path = jax.lax.scan(backward, last, back, reverse=True)
        return jnp.moveaxis(jnp.concatenate([first_state[None], path]), 0, -1)

    # -- generative ----------------------------------------------------------------------------
    def sample_with_states(self, key, sample_shape=()) -> tuple[Array, Array]:
        """Draw (states (..., T), observations (..., T, *event)) from the joint."""
        k_init, k_path, k_obs = jax.random.split(key, 3)
        shape = (*sample_shape, *self.batch_shape)
        K, T = self.num_states, self.num_steps
        log_rho, log_a = self._chain()
        log_a = jnp.broadcast_to(log_a, (*shape, T - 1, K, K))
        first = jax.random.categorical(k_init, log_rho, shape=shape)

        def step(z, inputs):
            k, log_a_t = inputs
            rows = jnp.take_along_axis(log_a_t, z[..., None, None], axis=-2)[..., 0, :]
            z = jax.random.categorical(k, rows)
            return z, z

        keys = jax.random.split(k_path, T - 1)
        _, later = jax.lax.scan(step, first, (keys, jnp.moveaxis(log_a, -3, 0)))
        states = jnp.moveaxis(jnp.concatenate([first[None], later]), 0, -1)
        per_state = self.observation_dist.expand((*shape, T, K)).sample(k_obs)
        event_dims = len(self.observation_dist.event_shape)
        index = states.reshape(*states.shape, 1, *([1] * event_dims))
        chosen = jnp.take_along_axis(per_state, index, axis=len(shape) + 1)
        return states, jnp.squeeze(chosen, axis=len(shape) + 1)

    def sample(self, key, sample_shape=()) -> Array:
        """Draw observation sequences (..., T, *event)."""
        return self.sample_with_states(key, sample_shape)[1]
