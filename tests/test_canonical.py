"""The lower-trapezoidal canonical form: its bijection, its prior and the LQ decomposition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions.transforms import biject_to
from scipy import stats

from probdyn.algorithms.canonical import LowerTrapezoidal, LowerTrapezoidalNormal, lq


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
