r"""Fixed-step integrators written for one trajectory (batch them with ``jax.vmap``).

- :func:`rk4_path`: classical Runge-Kutta for :math:`\dot x = f(x)`, recording every
  ``substeps``-th step.
- :func:`euler_maruyama_path`: :math:`x_{k+1} = x_k + f(x_k) h + \sigma \sqrt{h}\,\xi_k`,
  :math:`\xi_k \sim N(0, I)`, recording every ``substeps``-th step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array


def rk4_step(f: Callable[[Array], Array], x: Array, h: float) -> Array:
    """One classical fourth-order Runge-Kutta step of size ``h``."""
    k1 = f(x)
    k2 = f(x + 0.5 * h * k1)
    k3 = f(x + 0.5 * h * k2)
    k4 = f(x + h * k3)
    return x + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def rk4_path(
    f: Callable[[Array], Array], x0: Array, *, num_points: int, interval: float, substeps: int
) -> Array:
    """Integrate from ``x0`` and return ``num_points`` states ``interval`` apart, ``x0`` first."""
    h = interval / substeps

    def advance(x, _):
        x = jax.lax.fori_loop(0, substeps, lambda _, y: rk4_step(f, y, h), x)
        return x, x

    _, path = jax.lax.scan(advance, x0, None, length=num_points - 1)
    return jnp.concatenate([x0[None], path])


def euler_maruyama_path(
    drift: Callable[[Array], Array],
    x0: Array,
    noise_scale: Array | float,
    key: Array,
    *,
    num_points: int,
    interval: float,
    substeps: int,
) -> Array:
    r"""Euler-Maruyama from ``x0``: ``num_points`` states ``interval`` apart, ``x0`` first.

    ``noise_scale`` is the diffusion matrix's square root :math:`\\sigma` (a scalar, a vector for
    diagonal noise, or a matrix).
    """
    h = interval / substeps
    noise = jax.random.normal(key, (num_points - 1, substeps, *x0.shape), dtype=x0.dtype)
    sigma = jnp.asarray(noise_scale, dtype=x0.dtype)

    def kick(xi):
        return sigma @ xi if sigma.ndim == 2 else sigma * xi

    def advance(x, xis):
        def step(y, xi):
            return y + drift(y) * h + jnp.sqrt(h) * kick(xi), None

        x, _ = jax.lax.scan(step, x, xis)
        return x, x

    _, path = jax.lax.scan(advance, x0, noise)
    return jnp.concatenate([x0[None], path])
