"""The lower-trapezoidal canonical form: its bijection, its prior and the LQ decomposition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions.transforms import biject_to
from scipy import stats

from probdyn.algorithms.canonical import (
    LowerTrapezoidal,
    LowerTrapezoidalNormal,
    block_lq,
    lq,
)


@pytest.mark.parametrize("shape", [(4, 2), (3, 3), (2, 3), (1, 1)])
def test_the_bijection_round_trips_and_its_jacobian_is_the_brute_force_one(shape):
    rows, cols = shape
    prior = LowerTrapezoidalNormal(rows, cols, 0.7)
    value = prior.sample(jax.random.key(0))
    assert bool(LowerTrapezoidal(rows, cols)(value))
    transform = biject_to(prior.support)
    u = transform.inv(value)
    assert u.shape == transform.inverse_shape(shape)
    np.testing.assert_allclose(transform(u), value, atol=1e-12)
    free = np.tril_indices(rows, 0, cols)
    jacobian = jax.jacfwd(lambda v: transform(v)[free])(u)
    np.testing.assert_allclose(
        jnp.linalg.slogdet(jacobian)[1], transform.log_abs_det_jacobian(u, value), atol=1e-10
    )


def test_the_prior_density_is_normal_below_and_half_normal_on_the_diagonal():
    prior = LowerTrapezoidalNormal(3, 2, 1.3)
    value = prior.sample(jax.random.key(1))
    expected = (
        stats.norm(0, 1.3).logpdf(np.asarray(value)[[1, 2, 2], [0, 0, 1]]).sum()
        + stats.halfnorm(0, 1.3).logpdf(np.asarray(value)[[0, 1], [0, 1]]).sum()
    )
    np.testing.assert_allclose(prior.log_prob(value), expected, rtol=1e-12)
    above = value.at[0, 1].set(0.1)
    negative = value.at[1, 1].set(-0.1)
    assert not bool(prior.support(above)) and not bool(prior.support(negative))


@pytest.mark.parametrize("shape", [(5, 3), (3, 3), (2, 3)])
def test_lq_factors_with_a_positive_diagonal_and_an_orthogonal_rotation(shape):
    matrix = jax.random.normal(jax.random.key(2), (4, *shape))
    L, U = lq(matrix)
    np.testing.assert_allclose(L @ U, matrix, atol=1e-12)
    np.testing.assert_allclose(
        U @ np.swapaxes(U, -1, -2), np.broadcast_to(np.eye(3), U.shape), atol=1e-12
    )
    assert np.all(np.triu(np.asarray(L), 1) == 0)
    k = min(shape)
    assert np.all(np.diagonal(np.asarray(L), axis1=-2, axis2=-1)[..., :k] > 0)
    # The canonical form of a rotated matrix is the same matrix: the rotation is removed.
    angle = 0.7
    R = np.eye(3)
    R[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    if shape[0] >= shape[1]:
        np.testing.assert_allclose(lq(matrix @ R)[0], L, atol=1e-12)


def test_blocks_are_each_lower_trapezoidal_with_their_own_bijection_and_density():
    prior = LowerTrapezoidalNormal(4, 6, 0.8, blocks=3)
    value = prior.sample(jax.random.key(3))
    for k in range(3):
        block = np.asarray(value[:, 2 * k : 2 * k + 2])
        assert np.all(np.triu(block, 1) == 0) and np.all(np.diagonal(block) > 0)
        # the entries below each block's diagonal are free (not zeroed as a 4 x 6 matrix's)
        assert block[1, 0] != 0
    assert bool(prior.support(value)) and not bool(LowerTrapezoidal(4, 6)(value))
    transform = biject_to(prior.support)
    u = transform.inv(value)
    assert u.shape == (3 * 7,)  # 7 free entries in each 4 x 2 block
    np.testing.assert_allclose(transform(u), value, atol=1e-12)
    blockwise = sum(
        LowerTrapezoidalNormal(4, 2, 0.8).log_prob(value[:, 2 * k : 2 * k + 2]) for k in range(3)
    )
    np.testing.assert_allclose(prior.log_prob(value), blockwise, rtol=1e-12)
    with pytest.raises(ValueError, match="equal blocks"):
        LowerTrapezoidal(4, 5, blocks=2)


def test_block_lq_removes_rotations_within_blocks_only():
    matrix = jax.random.normal(jax.random.key(4), (2, 5, 4))
    L, U = block_lq(matrix, 2)
    np.testing.assert_allclose(L @ U, matrix, atol=1e-12)
    assert bool(jnp.all(LowerTrapezoidal(5, 4, blocks=2)(L)))
    np.testing.assert_allclose(U[:, :2, 2:], 0.0) and np.testing.assert_allclose(U[:, 2:, :2], 0.0)
    angle = 0.9
    G = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    within = np.zeros((4, 4))
    within[:2, :2], within[2:, 2:] = G, G.T
    np.testing.assert_allclose(block_lq(matrix @ within, 2)[0], L, atol=1e-12)
    # Control: a rotation that mixes the blocks gives another form.
    across = np.eye(4)
    across[np.ix_([1, 2], [1, 2])] = G
    assert not np.allclose(block_lq(matrix @ across, 2)[0], L, atol=1e-3)
