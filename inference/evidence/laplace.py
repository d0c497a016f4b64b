"""The posterior mode, the dense Hessian and the Laplace approximation (``method="laplace"``)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from probdyn.errors import MemoryBudgetError
from probdyn.inference.density import Density
from probdyn.inference.evidence.result import Evidence, without_free_parameters
from probdyn.runtime import memory
from probdyn.schema import Count


def find_mode(density: Density, key, *, num_starts: int = 4, num_steps: int = 1000):
    """Maximise the log posterior on unconstrained space.

    Adam with a decaying learning rate from ``num_starts`` prior draws (vectorised), then damped
    Newton steps from the best of them. Returns the mode and its log posterior.
    """
    starts = density.sample_prior(key, num_starts)

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

    modes, values = memory.map_chunks(descend, starts, what="mode search", unit="start")
    values = np.where(np.isfinite(values), values, -np.inf)
    best = jnp.asarray(modes[int(np.argmax(values))])

    gradient, value = jax.jit(jax.grad(loss)), jax.jit(loss)
    for _ in range(5):
        # In place: at thousands of dimensions each copy of the matrix is gigabytes.
        hessian = hessian_matrix(density.log_posterior, best)
        np.negative(hessian, out=hessian)
        hessian[np.diag_indices_from(hessian)] += 1e-8
        step = np.linalg.solve(hessian, np.asarray(gradient(best), np.float64))
        del hessian
        candidate = best - jnp.asarray(step, best.dtype)
        if value(candidate) < value(best):
            best = candidate
    return best, float(-value(best))


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
    dim = z.shape[0]
    require_dense_hessian(dim)

    def column(j):
        unit = jax.nn.one_hot(j, dim, dtype=z.dtype)
        return jax.jvp(jax.grad(fn), (z,), (unit,))[1]

    columns = memory.map_chunks(column, jnp.arange(dim), what="Hessian columns", unit="column")
    return columns.astype(np.float64).T  # row j is column j: the transpose is a view


def laplace(density: Density, key, *, model=None, num_starts: Count = 4) -> Evidence:
    """``method="laplace"``: the Gaussian approximation at the mode."""
    if density.dim == 0:
        return without_free_parameters(density)
    require_dense_hessian(density.dim)  # before the search, not after it
    mode, log_joint = find_mode(density, key, num_starts=num_starts)
    hessian = hessian_matrix(density.log_posterior, mode)
    np.negative(hessian, out=hessian)
    sign, log_det = np.linalg.slogdet(hessian)
    if sign <= 0:
        raise FloatingPointError("the Hessian at the mode is not positive definite")
    value = log_joint + 0.5 * density.dim * math.log(2 * math.pi) - 0.5 * log_det
    return Evidence(
        float(value),
        float("nan"),
        "laplace",
        False,
        "not estimated (Gaussian approximation at the mode)",
        0.0,
        0,
        {"mode": {k: np.asarray(v).tolist() for k, v in density.constrain(mode).items()}},
    )
