"""Refinement of amortised per-trial sites against a closed-form Gaussian posterior."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from probdyn.inference.amortised import refine_local


def linear_gaussian(data):
    """z_m ~ N(0, I_2), y_m ~ N(A z_m, s^2 I_3), independent trials m."""
    A, s, y = data
    with numpyro.plate("trial", y.shape[0]):
        z = numpyro.sample("initial", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        numpyro.sample("y", dist.Normal(z @ A.T, s).to_event(1), obs=y)


def test_refined_draws_follow_the_exact_posterior_of_a_linear_gaussian_model():
    rng = np.random.default_rng(0)
    A = jnp.asarray(rng.normal(size=(3, 2)))
    s = 0.5
    y = jnp.asarray(rng.normal(size=(4, 3)))
    precision = np.eye(2) + np.asarray(A.T @ A) / s**2
    covariance = np.linalg.inv(precision)
    means = np.asarray(y @ A / s**2) @ covariance  # (trial, 2); covariance is symmetric
    num_draws = 4000
    start = jnp.asarray(rng.normal(size=(num_draws, 4, 2)) * 3)  # far from the modes
    draws = refine_local(
        linear_gaussian,
        "initial",
        {"scale": jnp.ones(num_draws)},  # a weight the program ignores: one per draw
        start,
        (A, s, y),
        num_steps=400,
        key=jax.random.key(1),
    )
    draws = np.asarray(draws)
    standard_error = np.sqrt(np.diag(covariance) / num_draws)
    assert np.all(np.abs(draws.mean(axis=0) - means) < 4 * standard_error)
    for trial in range(4):
        empirical = np.cov(draws[:, trial].T)
        np.testing.assert_allclose(empirical, covariance, atol=0.1 * covariance.max())
