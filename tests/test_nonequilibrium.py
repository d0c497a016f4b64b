"""Entropy production (exact OU formula and path estimator) and the connectivity decomposition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probdyn.analysis.nonequilibrium import (
    decompose_connectivity,
    entropy_production_parts,
    entropy_production_posterior,
    entropy_production_rate,
    ou_entropy_production_modes,
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


def _rotation_block(decay, frequency):
    """B restricted to one rotating mode: eigenvalues decay +- i frequency."""
    return np.array([[decay, -frequency], [frequency, decay]])


def test_ou_modes_match_the_closed_form_per_mode_and_sum_to_the_total():
    # Normal B (two rotating modes and a real one, in a random orthonormal basis), isotropic
    # noise: the modes are independent and each produces 2 omega^2 / gamma.
    rng = np.random.default_rng(1)
    Q = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    blocks = np.zeros((5, 5))
    blocks[:2, :2] = _rotation_block(1.0, 0.5)
    blocks[2:4, 2:4] = _rotation_block(2.0, 3.0)
    blocks[4, 4] = 0.7
    d = 0.4
    modes = ou_entropy_production_modes(Q @ blocks @ Q.T, d * np.eye(5))
    by_frequency = modes.sortby("frequency")
    np.testing.assert_allclose(by_frequency.frequency, [0.0, 0.5, 3.0], atol=1e-10)
    np.testing.assert_allclose(by_frequency.rate, [0.0, 2 * 0.5**2 / 1.0, 2 * 3.0**2 / 2.0])
    np.testing.assert_allclose(by_frequency["size"], [1, 2, 2])
    assert float(modes.coupling) == pytest.approx(0.0, abs=1e-9)
    assert float(modes.total) == pytest.approx(0.5 + 9.0, rel=1e-10)


def test_ou_modes_report_what_coupled_modes_add():
    # A non-normal drift: the same eigenvalues, modes mixed by the noise. The per-mode rates are
    # still the block closed forms; their sum misses the total by the coupling, reported.
    rng = np.random.default_rng(2)
    P = rng.normal(size=(4, 4))
    blocks = np.zeros((4, 4))
    blocks[:2, :2] = _rotation_block(1.0, 2.0)
    blocks[2:, 2:] = _rotation_block(0.5, 0.0) + np.diag([0.0, 1.0])
    B = P @ blocks @ np.linalg.inv(P)
    modes = ou_entropy_production_modes(B, 0.5 * np.eye(4))
    assert float(modes.total) == pytest.approx(ou_entropy_production_rate(B, 0.5 * np.eye(4)))
    assert float(modes.rate.sum() + modes.coupling) == pytest.approx(float(modes.total))
    assert abs(float(modes.coupling)) > 0.1
    # Each rotating mode's rate is that of its own block with the noise it receives.
    assert np.all(modes.rate >= -1e-12)


@pytest.mark.parametrize("w", [1.0, 0.0])
def test_parts_put_the_irreversibility_in_the_antisymmetric_force(w):
    # dx = -(B_s + B_a) x dt + sigma dW with B_s = I: the gradient force -x does no net work;
    # the rotation -B_a x carries all of Phi = 2 w^2.
    B = np.array([[1.0, -w], [w, 1.0]])
    _, D, paths = _stationary_ou_paths(B, 0.5, seed=3)
    rotation = -jnp.asarray(B - B.T) / 2
    split = entropy_production_parts(
        lambda x: jnp.stack([-x, rotation @ x]), D, paths, 0.01, names=["gradient", "rotation"]
    )
    exact = ou_entropy_production_rate(B, D)
    gradient, rotating = split.sel(part="gradient"), split.sel(part="rotation")
    assert abs(float(gradient.rate)) < 3 * float(gradient.se) + 0.02
    assert abs(float(rotating.rate) - exact) < 3 * float(rotating.se) + 0.01 * max(exact, 1.0)
    assert float(split.total) == pytest.approx(float(split.rate.sum()))


def test_entropy_production_posterior_splits_a_network_by_symmetry():
    # A linear 2-unit network, dx = (-x + J x) dt + sigma dW with J = a I + w R: the symmetric
    # part a I is a gradient force, the antisymmetric part w R carries Phi = 2 w^2 / (1 - a).
    from probdyn.models import SDERNN

    a, w, sigma = 0.2, 0.6, 0.5
    truth = {"J": np.array([[a, -w], [w, a]]), "b": np.zeros(2), "sigma": np.array(sigma)}
    model = SDERNN(num_units=2, nonlinearity="linear", observation="latent")
    draws = {name: value[None] for name, value in truth.items()}
    result = entropy_production_posterior(
        model, draws, dt=0.01, num_trials=40, num_steps=3000, burn_in=500, by="symmetry"
    )
    exact = ou_entropy_production_rate(np.eye(2) - truth["J"], sigma**2 / 2 * np.eye(2))
    assert exact == pytest.approx(2 * w**2 / (1 - a))
    parts = result.sel(draw=0)
    for name, expected in (("leak", 0.0), ("symmetric", 0.0), ("antisymmetric", exact)):
        rate, se = float(parts.part_rate.sel(part=name)), float(parts.part_se.sel(part=name))
        assert abs(rate - expected) < 3 * se + 0.01 * max(exact, 1.0), name


def test_entropy_production_posterior_refuses_state_dependent_noise():
    from probdyn.models import SDERNN

    model = SDERNN(num_units=4, rank=2, diffusion="state", observation="latent")
    draws = {"M": np.ones((1, 4, 2))}
    with pytest.raises(ConfigError, match="additive noise"):
        entropy_production_posterior(model, draws, dt=0.01)
