"""Entropy production (exact OU formula and path estimator) and the connectivity decomposition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probdyn.analysis.nonequilibrium import (
    decompose_connectivity,
    entropy_production_rate,
    ou_entropy_production_rate,
)
from probdyn.data.integrate import euler_maruyama_path
from probdyn.errors import ConfigError


def _stationary_ou_paths(B, sigma, *, num_trials=100, num_points=1000, dt=0.01, seed=0):
    """Paths of dx = -Bx dt + sigma dW started from the stationary law N(0, S)."""
    D = sigma**2 / 2 * np.eye(len(B))
    n = len(B)
    S = np.linalg.solve(np.kron(np.eye(n), B) + np.kron(B, np.eye(n)), 2 * D.ravel()).reshape(n, n)
    rng = np.random.default_rng(seed)
    x0 = rng.multivariate_normal(np.zeros(n), S, size=num_trials)
    keys = jax.random.split(jax.random.key(seed), num_trials)
    field = lambda x: -jnp.asarray(B) @ x  # noqa: E731
    paths = jax.vmap(
        lambda x, k: euler_maruyama_path(
            field, x, sigma, k, num_points=num_points, interval=dt, substeps=5
        )
    )(jnp.asarray(x0), keys)
    return field, D, paths


def test_ou_formula_against_the_rotation_closed_form():
    # B = I - w R (R the 90-degree rotation), isotropic noise: S = D, Phi = 2 w^2.
    for w in (0.0, 0.5, 2.0):
        B = np.array([[1.0, -w], [w, 1.0]])
        assert ou_entropy_production_rate(B, 0.3 * np.eye(2)) == pytest.approx(2 * w**2, abs=1e-12)


def test_ou_formula_zero_in_detailed_balance():
    # Any drift B = D K with K symmetric positive definite is a gradient flow: no entropy production.
    D = np.array([[0.5, 0.1], [0.1, 0.3]])
    K = np.array([[2.0, 0.4], [0.4, 1.0]])
    assert ou_entropy_production_rate(D @ K, D) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("w", [1.0, 0.0])
def test_path_estimator_agrees_with_the_exact_rate_within_its_error(w):
    B = np.array([[1.0, -w], [w, 1.0]])
    field, D, paths = _stationary_ou_paths(B, 0.5, seed=int(10 * w))
    exact = ou_entropy_production_rate(B, D)
    estimate = entropy_production_rate(field, D, paths, 0.01)
    assert estimate.se < 0.15
    # Three standard errors plus the O(dt) discretisation bias (about dt * Phi).
    assert abs(estimate.rate - exact) < 3 * estimate.se + 0.01 * max(exact, 1.0)


def test_path_estimator_rejects_bad_input():
    field = lambda x: -x  # noqa: E731
    with pytest.raises(ConfigError, match="expected \\(\\) or \\(2, 2\\)"):
        entropy_production_rate(field, np.eye(3), np.zeros((2, 50, 2)), 0.1)
    with pytest.raises(ConfigError, match="num_batches"):
        entropy_production_rate(field, 1.0, np.zeros((2, 5, 2)), 0.1)
    with pytest.raises(ConfigError, match="positive time step"):
        entropy_production_rate(field, 1.0, np.zeros((2, 50, 2)), 0.0)
    with pytest.raises(ConfigError, match="no stationary state"):
        ou_entropy_production_rate(-np.eye(2), np.eye(2))


def test_decomposition_parts_and_shares():
    rng = np.random.default_rng(0)
    J = rng.normal(size=(5, 5))
    parts = decompose_connectivity(J, states=rng.normal(size=(100, 5)))
    np.testing.assert_allclose(parts.J_sym + parts.J_anti, J, atol=1e-14)
    np.testing.assert_allclose(parts.J_sym, parts.J_sym.T)
    np.testing.assert_allclose(parts.J_anti, -parts.J_anti.T)
    assert float(parts.share_sym + parts.share_anti) == pytest.approx(1.0)
    symmetric = decompose_connectivity(J + J.T, states=rng.normal(size=(10, 5)))
    assert float(symmetric.asymmetry) == 0.0 and float(symmetric.share_anti) == 0.0
    with pytest.raises(ConfigError, match="square"):
        decompose_connectivity(np.zeros((2, 3)))
