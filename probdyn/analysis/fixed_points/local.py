r"""What the dynamics do around a fixed point where the field has a kink.

A piecewise-linear network (ReLU units) is not differentiable where a unit's input is zero.
A network without biases, :math:`F(h) = \mathrm{ReLU}(W h)`, has its fixed point
:math:`h^* = 0` on every unit's kink at once, and the Jacobian there is whatever the
automatic derivative picks (JAX's :math:`\mathrm{relu}'(0) = 0`, i.e. :math:`\partial F = 0`)
or whatever linear region the solver stopped in: the eigenvalues at such a point say nothing.

Around :math:`x^*` the field is, to first order, piecewise linear and positively homogeneous
in the perturbation :math:`\delta = x - x^*`: :math:`g(x^* + \delta) \approx J_{r(\delta)}
\delta`, with one Jacobian per linear region :math:`r` that meets at :math:`x^*`. So:

**Detection.** The Jacobians :math:`J_k = \partial f(x^* + \epsilon d_k)` one-sided along
``num_directions`` random unit directions :math:`d_k` are compared with the Jacobian at the
point: a largest relative difference :math:`\max_k \lVert J_k - J \rVert_F / \lVert J \rVert_F`
above ``kink_tol`` marks a kink (for a smooth field the difference is
:math:`O(\epsilon)`, for a kink :math:`O(1)`).

**Growth along each direction.** Each perturbation is run through the dynamics itself,
renormalised to length :math:`\epsilon` after every step (exact for a positively homogeneous
local map, as power iteration is for a linear one):

.. math::
    \delta_{n+1} = \Phi(\delta_n),\qquad
    \rho_n = \log \frac{\lVert\delta_{n+1}\rVert}{\lVert\delta_n\rVert},\qquad
    \delta_{n+1} \leftarrow \epsilon\,\delta_{n+1} / \lVert\delta_{n+1}\rVert,

with :math:`\Phi(\delta) = F(x^* + \delta) - F(x^*)` for a map and, for a flow, one classical
Runge-Kutta step of length :math:`h` of :math:`\dot\delta = f(x^* + \delta) - f(x^*)`
(:math:`h = 0.1 / \max_k \lVert J_k \rVert_2`, rates then divided by :math:`h`); subtracting
the field at :math:`x^*` removes the residual the solver left. The growth rate of direction
:math:`k` is the mean of :math:`\rho_n` over the second half of ``num_steps`` (log per step for
maps, per unit time for flows), the rate the perturbation settles to: exact where it settles on
one direction (a ray), within about 1% where it keeps turning through the regions (a
finite-time average; on the 20-unit emulators of the tests it lay 0.5-2% above the rate of
400-step averages from the visited states); a perturbation mapped to zero (rectified away)
grows at :math:`-\infty`.

**Class.** With the leading rate :math:`\sigma = \max_k \sigma_k`: marginal if
:math:`|\sigma| \le` ``marginal_tol``; stable if :math:`\sigma < 0` (every perturbation tried
decays); otherwise unstable when every region's Jacobian expands in every direction, else a
saddle (some region contracts along some direction: e.g. perturbations a ReLU rectifies away).
Stable and unstable points are spirals where the leading perturbation keeps turning (its
direction, up to sign, still moves by more than ``turn_tol`` per step at the end), else nodes.
On a linear (smooth) point these rules give the eigenvalue classes of
:func:`~probdyn.analysis.fixed_points.classification.classify` for the leading mode; the
eigenvalues reported at a kink are those of the region the leading perturbation ends in.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from probdyn.analysis.fixed_points.classification import class_codes, growth_rates
from probdyn.analysis.fixed_points.dynamics import StaticModel, static_model
from probdyn.runtime import memory

#: log growth per step recorded for a perturbation mapped exactly to zero.
ANNIHILATED = -50.0


def _step(model, params, x_star: Array, u, h) -> callable:
    """One step of the perturbation dynamics: the map, or an RK4 step of length ``h``."""
    rest = model.vector_field(params, x_star, u)  # the residual the solver left, subtracted

    def field(delta):
        return model.vector_field(params, x_star + delta, u) - rest

    if model.kind == "map":
        return field

    def rk4(delta):
        k1 = field(delta)
        k2 = field(delta + 0.5 * h * k1)
        k3 = field(delta + 0.5 * h * k2)
        k4 = field(delta + h * k3)
        return delta + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)

    return rk4


def _jacobian(model, params, u):
    return jax.jacfwd(lambda x: model.vector_field(params, x, u))


def jacobian_change(model, params, x_star: Array, jac: Array, u, directions: Array, eps):
    r""":math:`\max_k \lVert J_k - J \rVert_F / \lVert J \rVert_F` over the one-sided Jacobians.

    :math:`J_k = \partial f(x^* + \epsilon d_k)` along each unit direction :math:`d_k`
    (``directions``, (K, D)); :math:`O(\epsilon)` for a smooth field, :math:`O(1)` at a kink.
    """
    one_sided = jax.vmap(lambda d: _jacobian(model, params, u)(x_star + eps * d))(directions)
    size = jnp.maximum(jnp.linalg.norm(jac), 1e-12)
    return jnp.max(jnp.linalg.norm(one_sided - jac, axis=(-2, -1))) / size


def perturbation_growth(model, params, x_star: Array, u, directions: Array, eps, num_steps: int):
    """Growth and turning of each direction's perturbation, and what the regions do.

    ``directions`` (K, D) unit vectors, ``eps`` the perturbation length. Returns
    ``(growth (K,), turning (K,), end_jacobian (D, D), expands)``: the end region's Jacobian
    at the end point of the fastest-growing perturbation, and whether every one-sided Jacobian
    has every growth rate positive (:func:`~probdyn.analysis.fixed_points.classification.
    growth_rates`).
    """
    jacobian = _jacobian(model, params, u)
    one_sided = jax.vmap(lambda d: jacobian(x_star + eps * d))(directions)
    expands = jnp.all(growth_rates(jnp.linalg.eigvals(one_sided), model.kind, jnp) > 0)
    if model.kind == "map":
        h = jnp.asarray(1.0, x_star.dtype)
    else:
        h = 0.1 / jnp.maximum(jnp.max(jnp.linalg.norm(one_sided, ord=2, axis=(-2, -1))), 1e-12)
    step = _step(model, params, x_star, u, h)

    def advance(carry, _):
        delta, _ = carry
        moved = step(delta)
        length = jnp.linalg.norm(moved)
        alive = length > 0
        rate = jnp.where(alive, jnp.log(jnp.where(alive, length, 1.0) / eps), ANNIHILATED)
        renormalised = jnp.where(alive, eps * moved / jnp.where(alive, length, 1.0), 0.0)
        return (renormalised, delta), rate

    def run(d):
        (last, previous), rates = jax.lax.scan(advance, (eps * d, eps * d), None, length=num_steps)
        settled = jnp.mean(rates[num_steps // 2 :]) / h
        a, b = last / eps, previous / eps
        turn = jnp.minimum(jnp.linalg.norm(a - b), jnp.linalg.norm(a + b))
        return settled, turn, last

    growth, turning, ends = jax.vmap(run)(directions)
    return growth, turning, jacobian(x_star + ends[jnp.argmax(growth)]), expands


@functools.lru_cache(maxsize=16)
def _per_draw_detection(static: StaticModel):
    model = static.model

    def per_draw(item, shared):
        params, points, jacs = item
        u, directions, eps = shared
        return jax.vmap(lambda x, j: jacobian_change(model, params, x, j, u, directions, eps))(
            points, jacs
        )

    return per_draw


@functools.lru_cache(maxsize=16)
def _per_draw_growth(static: StaticModel, num_steps: int):
    model = static.model

    def per_draw(item, shared):
        params, points = item
        u, directions, eps = shared
        return jax.vmap(
            lambda x: perturbation_growth(model, params, x, u, directions, eps, num_steps)
        )(points)

    return per_draw


def local_dynamics(
    model,
    params,
    points: np.ndarray,
    jacobians: np.ndarray,
    u,
    *,
    scale: float,
    marginal_tol: float,
    kink_tol: float = 0.05,
    turn_tol: float = 1e-3,
    num_directions: int = 16,
    num_steps: int = 1000,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, np.ndarray]:
    r"""Kinks and the classes their local dynamics give, for points (draw, point, D).

    ``points`` is NaN where a draw lacks the point; ``jacobians`` (draw, point, D, D) are the
    field's Jacobians at the points; ``scale`` sets the perturbation length
    (:math:`\epsilon` = 1e-6 times it in 64-bit, 1e-3 times it in 32-bit precision). Returns
    ``kink`` (draw, point) bool, and where there is a kink (else -1, NaN and the given
    Jacobian): ``stability`` codes, ``growth`` (the leading growth rate) and ``jacobian`` (the
    end region's). The perturbation dynamics run only for draws with a point on a kink, so a
    smooth model pays for the one-sided Jacobians alone.
    """
    points = np.asarray(points)
    dim = points.shape[-1]
    present = ~np.isnan(points).any(axis=-1)
    dtype = jnp.result_type(float)
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((num_directions, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    eps = (1e-6 if dtype == jnp.float64 else 1e-3) * max(float(scale), 1e-12)
    jacs = np.where(present[..., None, None], np.nan_to_num(jacobians), 0.0)
    safe = np.where(present[..., None], points, 0.0)
    shared = (u, jnp.asarray(directions, dtype), jnp.asarray(eps, dtype))
    progress = memory.shows_progress(progress)
    change = np.asarray(
        memory.map_chunks(
            _per_draw_detection(static_model(model)),
            (params, jnp.asarray(safe, dtype), jnp.asarray(jacs, dtype)),
            shared=shared,
            what="kink detection at fixed points",
            unit="draw",
            progress=progress,
        )
    )
    kink = present & (change > kink_tol)
    code = np.full(kink.shape, -1)
    lead = np.full(kink.shape, np.nan)
    jacobian = np.array(jacobians)
    # The perturbation dynamics run only for the draws that have a point on a kink.
    rows = np.flatnonzero(kink.any(axis=1))
    if rows.size:
        growth, turning, end_jacobian, expands = (
            np.asarray(a)
            for a in memory.map_chunks(
                _per_draw_growth(static_model(model), num_steps),
                (jax.tree.map(lambda v: v[rows], params), jnp.asarray(safe[rows], dtype)),
                shared=shared,
                what="local dynamics at kinks",
                unit="draw",
                progress=progress,
            )
        )
        fastest = growth.max(axis=-1)
        turns = np.take_along_axis(turning, growth.argmax(axis=-1)[..., None], axis=-1)[..., 0]
        codes = class_codes(
            stable=fastest < -marginal_tol,
            unstable=expands & (fastest > marginal_tol),
            rotating=turns > turn_tol,
            marginal=np.abs(fastest) <= marginal_tol,
        )
        on_kink = kink[rows]
        code[rows] = np.where(on_kink, codes, -1)
        lead[rows] = np.where(on_kink, fastest, np.nan)
        jacobian[rows] = np.where(on_kink[..., None, None], end_jacobian, jacobian[rows])
    return {"kink": kink, "stability": code, "growth": lead, "jacobian": jacobian}
