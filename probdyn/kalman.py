r"""Exact marginal likelihood of a linear-Gaussian state-space model (Kalman filter).

For one trial

.. math::
    x_0 \sim N(m_0, P_0),\quad x_{t+1} = A x_t + b + N(0, Q),\quad y_t = C x_t + d + N(0, R),

the filter propagates the predictive moments :math:`(m_t, P_t)` of :math:`x_t \mid y_{<t}` and
accumulates :math:`\log p(y_{1:T}) = \sum_t \log N(y_t;\ C m_t + d,\ S_t)`,
:math:`S_t = C P_t C^\top + R`. For numerical stability :math:`S_t` is factorised by Cholesky,
and the covariance update uses the Joseph form
:math:`P^+ = (I - K C) P (I - K C)^\top + K R K^\top`, which stays symmetric positive
semi-definite under round-off.

Missing entries (``mask`` False) are removed exactly: their row of :math:`C` and their residual
are zeroed and their noise variance set to 1, so each contributes the constant
:math:`\log N(0; 0, 1)`, which is added back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpyro.distributions as dist
from jax import Array
from numpyro.distributions import constraints

_LOG_2PI = jnp.log(2.0 * jnp.pi)


def kalman_log_marginal(
    A: Array,
    b: Array,
    Q: Array,
    C: Array,
    d: Array,
    R_diag: Array,
    y: Array,
    mask: Array | None = None,
    m0: Array | None = None,
    P0: Array | None = None,
) -> Array:
    r"""Return :math:`\log p(y_{0:T-1})` for one trial ``y`` of shape (time, emission)."""
    latent_dim = A.shape[0]
    m0 = jnp.zeros(latent_dim, y.dtype) if m0 is None else m0
    P0 = jnp.eye(latent_dim, dtype=y.dtype) if P0 is None else P0
    mask = jnp.ones(y.shape, bool) if mask is None else mask
    eye = jnp.eye(latent_dim, dtype=y.dtype)

    def step(carry, inputs):
        m, P, total = carry
        y_t, observed = inputs
        C_t = jnp.where(observed[:, None], C, 0.0)
        R_t = jnp.where(observed, R_diag, 1.0)
        residual = jnp.where(observed, y_t - C @ m - d, 0.0)
        S = C_t @ P @ C_t.T + jnp.diag(R_t)
        chol = jnp.linalg.cholesky(S)
        whitened = jsl.solve_triangular(chol, residual, lower=True)
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
        log_lik = -0.5 * (whitened @ whitened + log_det + y_t.shape[0] * _LOG_2PI)
        log_lik = log_lik + 0.5 * _LOG_2PI * jnp.sum(~observed)
        # Gain K = P C^T S^{-1}, through the Cholesky factor.
        gain = jsl.cho_solve((chol, True), C_t @ P).T
        m_post = m + gain @ residual
        joseph = eye - gain @ C_t
        P_post = joseph @ P @ joseph.T + (gain * R_t) @ gain.T
        m_next = A @ m_post + b
        P_next = A @ P_post @ A.T + Q
        return (m_next, 0.5 * (P_next + P_next.T), total + log_lik), None

    (_, _, total), _ = jax.lax.scan(step, (m0, P0, jnp.zeros((), y.dtype)), (y, mask))
    return total


class LinearGaussianStateSpace(dist.Distribution):
    """Distribution of a trial's observations with the latent path integrated out.

    Event shape (time, emission); batch shape that of ``mask`` minus its last two axes (one
    entry per trial). ``log_prob`` is :func:`kalman_log_marginal`; ``sample`` simulates the
    model forward.
    """

    support = constraints.independent(constraints.real, 2)
    pytree_data_fields = ("A", "b", "Q", "C", "d", "R_diag", "observed")
    pytree_aux_fields = ("num_timesteps",)

    def __init__(self, A, b, Q, C, d, R_diag, num_timesteps, mask=None, batch_shape=()):
        self.A, self.b, self.Q, self.C, self.d, self.R_diag = A, b, Q, C, d, R_diag
        self.num_timesteps = num_timesteps
        self.observed = mask
        if mask is not None:
            batch_shape = tuple(mask.shape[:-2])
        super().__init__(batch_shape=batch_shape, event_shape=(num_timesteps, C.shape[0]))

    def log_prob(self, value):
        """Kalman-filter log marginal of each trial in ``value`` (..., time, emission)."""

        def one(y, mask):
            return kalman_log_marginal(self.A, self.b, self.Q, self.C, self.d, self.R_diag, y, mask)

        mask = jnp.ones(value.shape, bool) if self.observed is None else self.observed
        flat_y = value.reshape((-1, *self.event_shape))
        flat_mask = jnp.broadcast_to(mask, value.shape).reshape(flat_y.shape)
        return jax.vmap(one)(flat_y, flat_mask).reshape(value.shape[:-2])

    def sample(self, key, sample_shape=()):
        """Simulate latent paths and observations forward."""
        shape = tuple(sample_shape) + tuple(self.batch_shape)
        key_x, key_y = jax.random.split(key)
        chol_q = jnp.linalg.cholesky(self.Q)

        def path(eps):  # eps: (time, latent); x_0 = eps_0 ~ N(0, I)
            def advance(x, e):
                x = self.A @ x + self.b + chol_q @ e
                return x, x

            _, rest = jax.lax.scan(advance, eps[0], eps[1:])
            return jnp.concatenate([eps[:1], rest])

        noise = jax.random.normal(key_x, (*shape, self.num_timesteps, self.A.shape[0]))
        xs = jnp.vectorize(path, signature="(t,l)->(t,l)")(noise)
        ys = xs @ self.C.T + self.d
        return ys + jnp.sqrt(self.R_diag) * jax.random.normal(key_y, ys.shape)
