r"""Lower-trapezoidal matrices with a positive diagonal: the canonical form under rotations.

A latent space whose coordinates are free up to an orthogonal map :math:`U` (a readout
:math:`C \mapsto C U^\top` with the dynamics rotated alongside) leaves the likelihood on a
ridge that samplers crawl along. Every :math:`N \times D` matrix :math:`C` factors as
:math:`C = L U` (the LQ decomposition, the transpose of QR), with :math:`U` orthogonal and
:math:`L` lower trapezoidal,

.. math::
    L_{ij} = 0 \text{ for } j > i,\qquad L_{ii} > 0 \ (i < \min(N, D)),

unique when :math:`C` has full rank :math:`\min(N, D)`. Writing the readout in that form
picks one point of each orbit, so the ridge is gone; nothing identifiable changes.

:class:`LowerTrapezoidalNormal` is the prior on such a matrix (Normal below the diagonal,
half-normal on it), :class:`LowerTrapezoidal` its support, registered with NumPyro's
``biject_to`` (free entries in order, the diagonal through ``exp``), and :func:`lq` the
decomposition that maps a free matrix to its canonical form.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform, biject_to

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _free_entries(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the entries on or below the diagonal, row by row."""
    return np.tril_indices(rows, 0, cols)


def _diagonal_mask(rows: int, cols: int) -> np.ndarray:
    """Which of :func:`_free_entries` lie on the diagonal."""
    i, j = _free_entries(rows, cols)
    return i == j


class LowerTrapezoidal(constraints.Constraint):
    """``rows`` x ``cols`` matrices, zero above the diagonal, with a positive diagonal."""

    event_dim = 2

    def __init__(self, rows: int, cols: int):
        self.rows, self.cols = rows, cols
        super().__init__()

    def __call__(self, x):
        """Apply the map."""
        above = jnp.triu(jnp.ones((self.rows, self.cols), bool), 1)
        upper_zero = jnp.all(jnp.where(above, x == 0, True), axis=(-2, -1))
        diagonal = jnp.diagonal(x, axis1=-2, axis2=-1)
        return upper_zero & jnp.all(diagonal > 0, axis=-1)

    def feasible_like(self, prototype):
        """The identity-like matrix of ``prototype``'s shape."""
        rows, cols = jnp.shape(prototype)[-2:]
        return jnp.broadcast_to(jnp.eye(rows, cols, dtype=prototype.dtype), prototype.shape)

    def tree_flatten(self):
        """Shape as static data (for JAX transformations)."""
        return (), (("rows", "cols"), {"rows": self.rows, "cols": self.cols})

    @classmethod
    def tree_unflatten(cls, aux_data, params):
        """Rebuild from :meth:`tree_flatten`."""
        return cls(aux_data[1]["rows"], aux_data[1]["cols"])


class LowerTrapezoidalTransform(Transform):
    r"""Vector of the free entries -> lower-trapezoidal matrix, the diagonal through exp.

    :math:`\log|\det J| = \sum_i u_{ii}` (the unconstrained diagonal entries).
    """

    domain = constraints.real_vector

    def __init__(self, rows: int, cols: int):
        self.rows, self.cols = rows, cols
        self._i, self._j = _free_entries(rows, cols)
        self._diagonal = _diagonal_mask(rows, cols)
        super().__init__()

    @property
    def codomain(self):
        """:class:`LowerTrapezoidal` of this shape."""
        return LowerTrapezoidal(self.rows, self.cols)

    def __call__(self, u):
        """Apply the map."""
        values = jnp.where(self._diagonal, jnp.exp(u), u)
        out = jnp.zeros((*jnp.shape(u)[:-1], self.rows, self.cols), jnp.result_type(u))
        return out.at[..., self._i, self._j].set(values)

    def _inverse(self, y):
        values = y[..., self._i, self._j]
        return jnp.where(self._diagonal, jnp.log(values), values)

    def log_abs_det_jacobian(self, u, y, intermediates=None):
        """Sum of the unconstrained diagonal entries."""
        return jnp.sum(jnp.where(self._diagonal, u, 0.0), axis=-1)

    def forward_shape(self, shape):
        """(..., free entries) -> (..., rows, cols)."""
        return (*shape[:-1], self.rows, self.cols)

    def inverse_shape(self, shape):
        """(..., rows, cols) -> (..., free entries)."""
        return (*shape[:-2], len(self._i))

    def tree_flatten(self):
        """Shape as static data (for JAX transformations)."""
        return (), (("rows", "cols"), {"rows": self.rows, "cols": self.cols})

    @classmethod
    def tree_unflatten(cls, aux_data, params):
        """Rebuild from :meth:`tree_flatten`."""
        return cls(aux_data[1]["rows"], aux_data[1]["cols"])

    def __eq__(self, other):
        return isinstance(other, LowerTrapezoidalTransform) and (self.rows, self.cols) == (
            other.rows,
            other.cols,
        )


class LowerTrapezoidalNormal(dist.Distribution):
    r"""Independent entries on and below the diagonal, zeros above.

    Below the diagonal :math:`N(0, \text{scale}^2)`, on it the half-normal of the same scale;
    event shape ``(rows, cols)``. The density is with respect to the free entries only.
    """

    arg_constraints: ClassVar[dict] = {"scale": constraints.positive}
    pytree_data_fields = ("scale",)
    pytree_aux_fields = ("rows", "cols")

    def __init__(self, rows: int, cols: int, scale=1.0):
        self.rows, self.cols = rows, cols
        self.scale = scale
        super().__init__(batch_shape=(), event_shape=(rows, cols))

    @property
    def support(self):
        """:class:`LowerTrapezoidal` of this shape."""
        return LowerTrapezoidal(self.rows, self.cols)

    def sample(self, key, sample_shape=()):
        """Normal draws, the diagonal folded to positive, zeros above it."""
        shape = (*sample_shape, self.rows, self.cols)
        z = self.scale * jax.random.normal(key, shape)
        diagonal = jnp.eye(self.rows, self.cols, dtype=bool)
        return jnp.tril(jnp.where(diagonal, jnp.abs(z), z))

    def log_prob(self, value):
        """Normal log density of the entries below, half-normal on the diagonal."""
        i, j = _free_entries(self.rows, self.cols)
        entries = value[..., i, j]
        normal = -0.5 * (entries / self.scale) ** 2 - jnp.log(self.scale) - _HALF_LOG_2PI
        half = _diagonal_mask(self.rows, self.cols) * math.log(2.0)
        return jnp.sum(normal + half, axis=-1)


@biject_to.register(LowerTrapezoidal)
def _lower_trapezoidal_bijection(constraint: LowerTrapezoidal) -> LowerTrapezoidalTransform:
    return LowerTrapezoidalTransform(constraint.rows, constraint.cols)


def lq(matrix: Array) -> tuple[Array, Array]:
    r"""``(L, U)`` with ``matrix = L @ U``: L lower trapezoidal, positive diagonal, U orthogonal.

    ``matrix`` is (..., N, D); U is (..., D, D). From the complete QR decomposition of the
    transpose, :math:`C^\top = Q R`, signs moved so that :math:`R_{ii} > 0`: :math:`L = R^\top`,
    :math:`U = Q^\top`. With N < D the last D - N columns of L are zero and the matching rows
    of U are one choice among many (those directions are not seen by the readout).
    """
    q, r = jnp.linalg.qr(jnp.swapaxes(matrix, -1, -2), mode="complete")
    k = min(matrix.shape[-2:])
    diagonal = jnp.diagonal(r, axis1=-2, axis2=-1)[..., :k]
    signs = jnp.where(diagonal < 0, -1.0, 1.0)
    signs = jnp.concatenate([signs, jnp.ones((*signs.shape[:-1], q.shape[-1] - k))], axis=-1)
    q = q * signs[..., None, :]
    r = r * signs[..., :, None]
    return jnp.swapaxes(r, -1, -2), jnp.swapaxes(q, -1, -2)
