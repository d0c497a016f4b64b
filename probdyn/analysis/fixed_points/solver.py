"""Levenberg-Marquardt from many starts per draw: roots, Jacobians, predictions."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from probdyn.analysis.fixed_points.dynamics import StaticModel, residual, static_model
from probdyn.errors import ConfigError
from probdyn.runtime import memory


def levenberg_marquardt(
    residual: Callable[[Array], Array], x0: Array, *, tol: float, max_steps: int
) -> tuple[Array, Array]:
    r"""Minimise :math:`\tfrac12\lVert r(x)\rVert^2` from ``x0``; return the point and max |r|.

    Stops when max |r| < ``tol`` / 100 (a converged root, polished), when the damping exceeds
    1e12 times the curvature scale (a stalled minimum that is not a root), or after
    ``max_steps`` steps. Works for non-square Jacobians (least squares).
    """
    jacobian = jax.jacfwd(residual)

    def cost(r):
        return 0.5 * jnp.sum(r**2)

    def step(state):
        x, r, lam, i = state
        J = jacobian(x)
        H = J.T @ J
        scale = jnp.maximum(jnp.max(jnp.diag(H)), 1e-12)
        delta = jnp.linalg.solve(H + lam * scale * jnp.eye(x.shape[0]), -J.T @ r)
        x_new = x + delta
        r_new = residual(x_new)
        better = jnp.isfinite(cost(r_new)) & (cost(r_new) < cost(r))
        return (
            jnp.where(better, x_new, x),
            jnp.where(better, r_new, r),
            jnp.where(better, lam * 0.3, lam * 4.0),
            i + 1,
        )

    def running(state):
        _, r, lam, i = state
        return (jnp.max(jnp.abs(r)) >= tol / 100) & (lam < 1e12) & (i < max_steps)

    r0 = residual(x0)
    x, r, _, _ = jax.lax.while_loop(running, step, (x0, r0, jnp.asarray(1e-3, x0.dtype), 0))
    return x, jnp.max(jnp.abs(r))


def search_draws(
    model, max_steps: int, params, starts, u, tol, merge_radius, progress: bool | None = None
):
    """Solve from every start of every draw; the Jacobian and predictions at each end point.

    Returns arrays with leading (draw, start) axes: end point, max |g|, Jacobian of the field,
    predicted observation at the end point and at the start, and whether the end point is a
    kept root (converged and not within ``merge_radius`` plus both points' first-order errors
    |g|_2 / sigma_min(dg/dx) of an earlier converged start). The draws run in chunks sized by
    the memory budget (:mod:`probdyn.runtime.memory`); the per-draw search is one function per
    (model, max_steps, tol), so a repeated search reuses its compiled program.
    """
    per_draw = _per_draw_search(static_model(model), max_steps, float(tol))
    shared = (u, jnp.asarray(merge_radius))
    progress = memory.shows_progress(progress)
    return memory.map_chunks(
        per_draw,
        (params, starts),
        shared=shared,
        what="fixed-point search",
        unit="draw",
        progress=progress,
        # With a bar, chunks of at most a tenth of the draws (at least 10), so that it moves.
        max_chunk=max(10, -(-len(starts) // 10)) if progress else None,
    )


@functools.lru_cache(maxsize=16)
def _per_draw_search(static: StaticModel, max_steps: int, tol: float):
    """The search of one draw, ``per_draw((params, starts), (u, merge_radius))``."""
    model = static.model

    def per_draw(item, shared):
        p, x0s = item
        u, merge_radius = shared

        def solve(x0):
            x, res = levenberg_marquardt(
                lambda x: residual(model, p, x, u),
                x0,
                tol=tol,
                max_steps=max_steps,
            )
            jac = jax.jacfwd(lambda x: model.vector_field(p, x, u))(x)
            return x, res, jac, model.emission_mean(p, x), model.emission_mean(p, x0)

        x, res, jac, emitted, emitted_start = jax.vmap(solve)(x0s)
        converged = res < tol
        # How far a converged end point may lie from the root it approximates, to first order:
        # |g|_2 / sigma_min(dg/dx). Along a slow direction (a map's eigenvalue near 1, a
        # flow's near 0) a residual under tol still leaves the point far from the root, so two
        # starts that reached the same root are one point when closer than their two errors.
        identity = jnp.eye(x.shape[-1]) if model.kind == "map" else 0.0
        smallest = jnp.linalg.svd(jac - identity, compute_uv=False)[..., -1]
        error = jnp.sqrt(x.shape[-1]) * res / jnp.maximum(smallest, 1e-12)
        distance = jnp.linalg.norm(x[:, None] - x[None], axis=-1)
        earlier = jnp.tril(jnp.ones(distance.shape, bool), k=-1)
        same = distance < merge_radius + error[:, None] + error[None]
        duplicate = jnp.any(earlier & converged[None] & same, axis=1)
        return x, res, jac, emitted, emitted_start, converged & ~duplicate

    return per_draw


@functools.partial(jax.jit, static_argnums=(0, 1))
def invert_readout(static: StaticModel, max_steps: int, params, starts, targets, tol):
    """Latent states whose predicted observations under ``params`` best match ``targets``."""

    def solve(x0, y):
        x, _ = levenberg_marquardt(
            lambda x: static.model.emission_mean(params, x) - y, x0, tol=tol, max_steps=max_steps
        )
        return x

    return jax.vmap(solve)(starts, targets)


def place_starts(
    states, per_draw, box, num_draws, num_starts, latent_dim, jitter, rng
) -> np.ndarray:
    """Starting points (draw, start, latent): states plus jitter, or uniform in the box.

    ``states`` is (draw, ..., latent) when ``per_draw`` (the posterior's own latents), else
    (..., latent) shared by every draw.
    """
    if states is not None:
        states = np.asarray(states)
        if states.shape[-1] != latent_dim:
            raise ConfigError(
                f"states have {states.shape[-1]} latent dims; the model has {latent_dim}"
            )
        flat = states.reshape(states.shape[0] if per_draw else 1, -1, latent_dim)
        flat = np.broadcast_to(flat, (num_draws, *flat.shape[1:]))
        pick = rng.integers(0, flat.shape[1], size=(num_draws, num_starts))
        chosen = np.take_along_axis(flat, pick[..., None], axis=1)
        spread = flat.std(axis=1, keepdims=True) + 1e-12
        return chosen + jitter * spread * rng.standard_normal(chosen.shape)
    low, high = (np.broadcast_to(np.asarray(b, float), (latent_dim,)) for b in box)
    if np.any(high <= low):
        raise ConfigError(f"box={box} must have every upper bound above its lower bound")
    return rng.uniform(low, high, size=(num_draws, num_starts, latent_dim))
