r"""Fixed-step integrators written for one trajectory (batch them with ``jax.vmap``).

- :func:`rk4_path`: classical Runge-Kutta for :math:`\dot x = f(x)`, recording every
  ``substeps``-th step.
- :func:`euler_maruyama_path`: :math:`x_{k+1} = x_k + f(x_k) h + G(x_k) \sqrt{h}\,\xi_k`,
  :math:`\xi_k \sim N(0, I)` (Ito), recording every ``substeps``-th step; :math:`G` constant
  (additive noise) or a function of the state (multiplicative noise).
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
    noise_scale: Array | float | Callable[[Array], Array],
    key: Array,
    *,
    num_points: int,
    interval: float,
    substeps: int,
    noise_dim: int | None = None,
) -> Array:
    r"""Euler-Maruyama from ``x0``: ``num_points`` states ``interval`` apart, ``x0`` first.

    ``noise_scale`` is the noise factor :math:`G` of :math:`dx = f\,dt + G\,dW`: a scalar, a
    vector (diagonal noise) or a matrix, or a function of the state returning one of those
    (state-dependent noise, integrated in the Ito sense: :math:`G` taken at the step's start).
    ``noise_dim``: the number of independent Wiener processes when :math:`G` is not square
    (default: the state's dimension).
    """
    h = interval / substeps
    shape = x0.shape if noise_dim is None else (noise_dim,)
    noise = jax.random.normal(key, (num_points - 1, substeps, *shape), dtype=x0.dtype)
    factor = noise_scale if callable(noise_scale) else (lambda _: noise_scale)

    def kick(y, xi):
        sigma = jnp.asarray(factor(y), dtype=x0.dtype)
        return sigma @ xi if sigma.ndim == 2 else sigma * xi

    def advance(x, xis):
        def step(y, xi):
            return y + drift(y) * h + jnp.sqrt(h) * kick(y, xi), None

        x, _ = jax.lax.scan(step, x, xis)
        return x, x

    _, path = jax.lax.scan(advance, x0, noise)
    return jnp.concatenate([x0[None], path])
