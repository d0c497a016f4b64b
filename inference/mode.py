"""The posterior mode and the dense Hessian there, on unconstrained space.

Shared by the Laplace evidence, the exact evidence's grid and the fitted references the samplers
start from (:mod:`probdyn.inference.reference`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from probdyn.errors import MemoryBudgetError
from probdyn.inference.density import Density
from probdyn.runtime import memory


def find_mode(
    density: Density,
    key,
    *,
    num_starts: int = 4,
    num_steps: int = 1000,
    with_hessian: bool = False,
):
    """Maximise the log posterior on unconstrained space.

    Adam with a decaying learning rate from ``num_starts`` prior draws (vectorised), then damped
    Newton steps from the best of them. Returns the mode and its log posterior, and with
    ``with_hessian`` the Hessian of the log posterior there (float64, dense): the Newton steps'
    compiled Hessian is reused, so it costs one more evaluation, not one more compilation.
    """
    starts = density.sample_prior(key, num_starts)
    descend, gradient, value, hessian_at = _search_programs(density, num_steps)
    modes, values = memory.map_chunks(descend, starts, what="mode search", unit="start")
    values = np.where(np.isfinite(values), values, -np.inf)
    best = jnp.asarray(modes[int(np.argmax(values))])

    at_best = None  # the Hessian at `best`, once a Newton step no longer moves it
    for _ in range(5):
        # In place: at thousands of dimensions each copy of the matrix is gigabytes.
        hessian = hessian_at(best)
        np.negative(hessian, out=hessian)
        hessian[np.diag_indices_from(hessian)] += 1e-8
        step = np.linalg.solve(hessian, np.asarray(gradient(best), np.float64))
        candidate = best - jnp.asarray(step, best.dtype)
        if np.max(np.abs(step)) < 1e-9 or not value(candidate) < value(best):
            at_best = hessian  # a step that does not help now would not help later either
            break
        best = candidate
        del hessian
    if not with_hessian:
        return best, float(-value(best))
    if at_best is None:
        return best, float(-value(best)), hessian_at(best)
    at_best[np.diag_indices_from(at_best)] -= 1e-8
    np.negative(at_best, out=at_best)
    return best, float(-value(best)), at_best


#: Compiled searches kept per log density (:attr:`Density.identity`), most recent last: a
#: second search on the same model and data (the next seed of an evidence estimate) then
#: skips tracing and compiling, which on a 15-dimensional LDS took 10 of the search's 11 s.
CACHED_SEARCHES = 4
_searches: dict[tuple, tuple] = {}


def _search_programs(density: Density, num_steps: int) -> tuple:
    """(descend, gradient, value, hessian) for ``density``, reused for the same log density.

    Adam from one start, the gradient and value of minus the log posterior, and
    :func:`hessian_function` of the log posterior: the same function objects for the same log
    density, so their compiled programs are reused.
    """
    key = None if density.identity is None else (density.identity, num_steps)
    programs = _searches.pop(key, None)
    if programs is None:

        def loss(z):
            return -density.log_posterior(z)

        adam = optax.adam(optax.exponential_decay(0.1, num_steps, 0.01))

        def descend(z):
            def adam_step(carry, _):
                z, state = carry
                updates, state = adam.update(jax.grad(loss)(z), state)
                return (z + updates, state), None

            (z, _), _ = jax.lax.scan(adam_step, (z, adam.init(z)), None, length=num_steps)
            return z, -loss(z)

        gradient, value = jax.jit(jax.grad(loss)), jax.jit(loss)
        programs = descend, gradient, value, hessian_function(density.log_posterior)
    if key is not None:
        _searches[key] = programs
        while len(_searches) > CACHED_SEARCHES:
            _searches.pop(next(iter(_searches)))
    return programs


def require_dense_hessian(dim: int) -> None:
    """Raise a MemoryBudgetError unless a dense Hessian fits the limit three times over.

    In float64, with its LU factor; and the columns as computed (float32 where JAX is) with
    their concatenation, as much again.
    """
    needed = 3 * dim * dim * np.dtype(np.float64).itemsize
    free = memory.settings().resolved_limit() - memory.resident_bytes()
    if needed > free:
        raise MemoryBudgetError(
            f"the Hessian of {dim} free dimensions needs {memory.format_size(needed)} (dense, "
            f"with its factorisation) but {memory.format_size(max(free, 0))} of the "
            f"{memory.format_size(memory.settings().resolved_limit())} memory limit is free; "
            "use the iwae or smc evidence for models this large"
        )


def hessian_matrix(fn, z: Array) -> np.ndarray:
    r"""The Hessian of a scalar ``fn`` at ``z``, column by column, in chunks sized by the budget.

    Column :math:`j` is the Hessian-vector product with the unit vector :math:`e_j` (forward
    over reverse); the dense result is checked against the memory limit before any is computed.
    """
    return hessian_function(fn)(z)


def hessian_function(fn):
    """``z -> hessian_matrix(fn, z)`` compiled once for every point it is asked at."""

    def column(j, z):
        unit = jax.nn.one_hot(j, z.shape[0], dtype=z.dtype)
        return jax.jvp(jax.grad(fn), (z,), (unit,))[1]

    cost = {}  # the memory per column, traced at the first point only

    def hessian(z: Array) -> np.ndarray:
        dim = z.shape[0]
        require_dense_hessian(dim)
        columns = jnp.arange(dim)
        if dim not in cost:
            cost[dim] = memory.item_cost(column, columns[0], z)
        columns = memory.map_chunks(
            column, columns, shared=z, cost=cost[dim], what="Hessian columns", unit="column"
        )
        return columns.astype(np.float64).T  # row j is column j: the transpose is a view

    return hessian
