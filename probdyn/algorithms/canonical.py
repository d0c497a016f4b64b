r"""Lower-trapezoidal matrices with a positive diagonal: the canonical form under rotations.

A latent space whose coordinates are free up to an orthogonal map :math:`U` (a readout
:math:`C \mapsto C U^\top` with the dynamics rotated alongside) leaves the likelihood on a
ridge that samplers crawl along. Every :math:`N \times D` matrix :math:`C` factors as
:math:`C = L U` (the LQ decomposition, the transpose of QR), with :math:`U` orthogonal and
:math:`L` lower trapezoidal,

.. math::
    L_{ij} = 0 \text{ for } j > i,\qquad L_{ii} > 0 \ (i < \min(N, D)),

unique when :math:`C` has full rank :math:`\min(N, D)`. Writing the readout in that form
picks one point of each orbit, so the ridge is gone; nothing identifiable changes. Where only
rotations within groups of latent axes are free (block-diagonal :math:`U`, FacRNN's groups),
``blocks`` splits the columns into equal groups, each lower trapezoidal on its own.

:class:`LowerTrapezoidalNormal` is the prior on such a matrix (Normal below the diagonal,
half-normal on it), :class:`LowerTrapezoidal` its support, registered with NumPyro's
``biject_to`` (free entries in order, the diagonal through ``exp``), and :func:`lq` the
decomposition that maps a free matrix to its canonical form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform, biject_to

from probdyn.errors import PriorError

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

#: Prior scale of a canonical form's initial-state factor, in units of the process noise (the
#: coordinates' unit once the noise is the identity).
INITIAL_SCALE = 2.0


def _check_blocks(cols: int, blocks: int) -> int:
    """The width of each column block."""
    if blocks < 1 or cols % blocks:
        raise ValueError(f"{cols} columns do not split into {blocks} equal blocks")
    return cols // blocks


def _free_entries(rows: int, cols: int, blocks: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the entries on or below each block's diagonal, block by block."""
    width = _check_blocks(cols, blocks)
    i, j = np.tril_indices(rows, 0, width)
    return np.tile(i, blocks), np.concatenate([j + block * width for block in range(blocks)])


def _diagonal_mask(rows: int, cols: int, blocks: int = 1) -> np.ndarray:
    """Which of :func:`_free_entries` lie on their block's diagonal."""
    i, j = _free_entries(rows, cols, blocks)
    return i == j % (cols // blocks)


def _pattern(rows: int, cols: int, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """(above, diagonal): boolean (rows, cols) masks of the zeros and the positive entries."""
    local = np.arange(cols) % _check_blocks(cols, blocks)
    row = np.arange(rows)[:, None]
    return local[None, :] > row, local[None, :] == row


class LowerTrapezoidal(constraints.Constraint):
    """``rows`` x ``cols`` matrices, zero above the diagonal, with a positive diagonal.

    With ``blocks`` > 1 each of the ``blocks`` equal groups of columns is such a matrix.
    """

    event_dim = 2

    def __init__(self, rows: int, cols: int, blocks: int = 1):
        _check_blocks(cols, blocks)
        self.rows, self.cols, self.blocks = rows, cols, blocks
        super().__init__()

    def __call__(self, x):
        """Apply the map."""
        above, diagonal = _pattern(self.rows, self.cols, self.blocks)
        upper_zero = jnp.all(jnp.where(above, x == 0, True), axis=(-2, -1))
        positive = jnp.all(jnp.where(diagonal, x > 0, True), axis=(-2, -1))
        return upper_zero & positive

    def feasible_like(self, prototype):
        """Ones on each block's diagonal, zeros elsewhere, in ``prototype``'s shape."""
        _, diagonal = _pattern(self.rows, self.cols, self.blocks)
        return jnp.broadcast_to(jnp.asarray(diagonal, prototype.dtype), prototype.shape)

    def tree_flatten(self):
        """Shape as static data (for JAX transformations)."""
        names = ("rows", "cols", "blocks")
        return (), (names, {name: getattr(self, name) for name in names})

    @classmethod
    def tree_unflatten(cls, aux_data, params):
        """Rebuild from :meth:`tree_flatten`."""
        return cls(**aux_data[1])


class LowerTrapezoidalTransform(Transform):
    r"""Vector of the free entries -> lower-trapezoidal matrix, the diagonal through exp.

    :math:`\log|\det J| = \sum_i u_{ii}` (the unconstrained diagonal entries).
    """

    domain = constraints.real_vector

    def __init__(self, rows: int, cols: int, blocks: int = 1):
        self.rows, self.cols, self.blocks = rows, cols, blocks
        self._i, self._j = _free_entries(rows, cols, blocks)
        self._diagonal = _diagonal_mask(rows, cols, blocks)
        super().__init__()

    @property
    def codomain(self):
        """:class:`LowerTrapezoidal` of this shape."""
        return LowerTrapezoidal(self.rows, self.cols, self.blocks)

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
        names = ("rows", "cols", "blocks")
        return (), (names, {name: getattr(self, name) for name in names})

    @classmethod
    def tree_unflatten(cls, aux_data, params):
        """Rebuild from :meth:`tree_flatten`."""
        return cls(**aux_data[1])

    def __eq__(self, other):
        shape = (self.rows, self.cols, self.blocks)
        return isinstance(other, LowerTrapezoidalTransform) and shape == (
            other.rows,
            other.cols,
            other.blocks,
        )


class LowerTrapezoidalNormal(dist.Distribution):
    r"""Independent entries on and below the diagonal, zeros above.

    Below the diagonal :math:`N(0, \text{scale}^2)`, on it the half-normal of the same scale;
    event shape ``(rows, cols)`` (``blocks``: each column block so). The density is with
    respect to the free entries only.
    """

    arg_constraints: ClassVar[dict] = {"scale": constraints.positive}
    pytree_data_fields = ("scale",)
    pytree_aux_fields = ("rows", "cols", "blocks")

    def __init__(self, rows: int, cols: int, scale=1.0, blocks: int = 1):
        _check_blocks(cols, blocks)
        self.rows, self.cols, self.blocks = rows, cols, blocks
        self.scale = scale
        super().__init__(batch_shape=(), event_shape=(rows, cols))

    @property
    def support(self):
        """:class:`LowerTrapezoidal` of this shape."""
        return LowerTrapezoidal(self.rows, self.cols, self.blocks)

    def sample(self, key, sample_shape=()):
        """Normal draws, the diagonal folded to positive, zeros above it."""
        shape = (*sample_shape, self.rows, self.cols)
        z = self.scale * jax.random.normal(key, shape)
        above, diagonal = _pattern(self.rows, self.cols, self.blocks)
        return jnp.where(above, 0.0, jnp.where(diagonal, jnp.abs(z), z))

    def log_prob(self, value):
        """Normal log density of the entries below, half-normal on the diagonal."""
        i, j = _free_entries(self.rows, self.cols, self.blocks)
        entries = value[..., i, j]
        normal = -0.5 * (entries / self.scale) ** 2 - jnp.log(self.scale) - _HALF_LOG_2PI
        half = _diagonal_mask(self.rows, self.cols, self.blocks) * math.log(2.0)
        return jnp.sum(normal + half, axis=-1)


def require_trapezoidal_prior(priors: Mapping | None, site: str, family: str, example: str):
    """Refuse a user's prior on a canonical form's lower-trapezoidal ``site`` off that support.

    ``example`` names a prior that fits, e.g. ``"LowerTrapezoidalNormal(emission_dim,
    latent_dim, scale)"``.
    """
    prior = priors.get(site) if isinstance(priors, Mapping) else None
    if isinstance(prior, dist.Distribution) and not isinstance(prior.support, LowerTrapezoidal):
        raise PriorError(
            f"{family}(parameterisation='canonical') has {site} lower trapezoidal with a "
            f"positive diagonal; its prior must be on that support (e.g. "
            f"probdyn.algorithms.canonical.{example}), or give parameterisation='redundant'"
        )


@biject_to.register(LowerTrapezoidal)
def _lower_trapezoidal_bijection(constraint: LowerTrapezoidal) -> LowerTrapezoidalTransform:
    return LowerTrapezoidalTransform(constraint.rows, constraint.cols, constraint.blocks)


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


def whitening(chol: Array) -> tuple[Array, Array, Array]:
    r"""``(T, T_inv, root)``: the map that makes :math:`\Sigma = LL^\top` the identity.

    With :math:`\Sigma = V\Lambda V^\top` (ascending eigenvalues), :math:`T =
    \Lambda^{-1/2}V^\top`, so :math:`T\Sigma T^\top = I`; :math:`T^{-1} = V\Lambda^{1/2}`
    and ``root`` :math:`= \Lambda^{1/2}`. ``chol`` is (..., D, D). The redundant forms' map:
    it turns a free initial covariance into :math:`N(0, I)` and the identity noise into
    :math:`\Lambda^{-1}`.
    """
    eigenvalues, V = jnp.linalg.eigh(chol @ jnp.swapaxes(chol, -1, -2))
    root = jnp.sqrt(eigenvalues)
    return jnp.swapaxes(V, -1, -2) / root[..., :, None], V * root[..., None, :], root


def block_lq(matrix: Array, blocks: int) -> tuple[Array, Array]:
    r"""``(L, U)`` with ``matrix = L @ U``, U block diagonal: :func:`lq` of each column block.

    ``matrix`` (..., N, D) with D = ``blocks`` x H; L has each (N, H) block lower trapezoidal
    with a positive diagonal, U (..., D, D) is block diagonal with orthogonal (H, H) blocks.
    """
    width = _check_blocks(matrix.shape[-1], blocks)
    split = jnp.moveaxis(matrix.reshape(*matrix.shape[:-1], blocks, width), -2, -3)
    L, U = lq(split)  # (..., blocks, N, H), (..., blocks, H, H)
    return jnp.moveaxis(L, -3, -2).reshape(*matrix.shape), _block_diagonal(U)


def _block_diagonal(blocks: Array) -> Array:
    """(..., K, H, H) -> (..., KH, KH) block-diagonal matrices."""
    count, width = blocks.shape[-3], blocks.shape[-1]
    out = jnp.zeros((*blocks.shape[:-3], count * width, count * width), blocks.dtype)
    for k in range(count):
        out = out.at[..., k * width : (k + 1) * width, k * width : (k + 1) * width].set(
            blocks[..., k, :, :]
        )
    return out
