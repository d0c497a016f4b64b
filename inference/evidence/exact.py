"""Quadrature over at most two free dimensions of an exact likelihood (``method="exact"``)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from probdyn.errors import ConfigError
from probdyn.inference.density import Density
from probdyn.inference.evidence.result import Evidence, without_free_parameters
from probdyn.inference.mode import find_mode
from probdyn.schema import Count


def exact(density: Density, key, *, model=None, num_grid: Count = 2001) -> Evidence:
    """``method="exact"``: quadrature of an exact likelihood over <= 2 free dims."""
    if density.dim == 0:
        return without_free_parameters(density)
    if density.dim > 2:
        raise ConfigError(
            f"method='exact' integrates at most 2 free dimensions by quadrature; this model has "
            f"{density.dim} (fix parameters with dist.Delta or use method='smc')"
        )
    mode, peak = find_mode(density, key)
    scale = jnp.sqrt(jnp.diag(jnp.linalg.inv(-jax.hessian(density.log_posterior)(mode))))
    log_post = jax.jit(jax.vmap(density.log_posterior))
    width = 10.0
    points = num_grid if density.dim == 1 else int(math.sqrt(num_grid * 20)) | 1
    # Widen the box until its boundary is 40 nats below the peak on every side.
    for _ in range(8):
        axes = [
            jnp.linspace(-width, width, points) * s + m for m, s in zip(mode, scale, strict=True)
        ]
        grid = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)
        values = np.asarray(log_post(grid.reshape(-1, density.dim))).reshape(grid.shape[:-1])
        values = np.where(np.isfinite(values), values, -np.inf)
        edge = max(np.take(values, [0, -1], axis=a).max() for a in range(density.dim))
        if edge < peak - 40.0:
            break
        width *= 2.0
    fine = _trapezoid_log(values, [a[1] - a[0] for a in axes])
    coarse = _trapezoid_log(
        values[(slice(None, None, 2),) * density.dim], [2 * (a[1] - a[0]) for a in axes]
    )
    return Evidence(
        float(fine),
        float(abs(fine - coarse)),
        "exact",
        False,
        "quadrature over the parameters; error bounded by the half-resolution grid",
        0.0,
        int(values.size),
        {"grid_points": int(values.size), "half_width_sd": width},
    )


def _trapezoid_log(log_values, steps) -> float:
    """Log of the trapezoid rule of exp(log_values) on a regular grid."""
    weights = jnp.zeros(log_values.shape)
    for axis, _ in enumerate(steps):
        edge = jnp.ones(log_values.shape[axis]).at[jnp.array([0, -1])].set(0.5)
        shape = [1] * log_values.ndim
        shape[axis] = -1
        weights = weights + jnp.log(edge).reshape(shape)
    return float(logsumexp(log_values + weights) + sum(math.log(s) for s in steps))
