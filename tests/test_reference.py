"""Samplers started from a fitted reference: NUTS warm starts, SMC and AIS from q.

The 1-D OU problem of lds_cases has its evidence and posterior by quadrature; every estimate
started from a reference must meet them, and a reference fitted badly (the control) must still
give the right evidence, at a higher cost that the diagnostics show.
"""

import warnings

import jax
import numpy as np
import pytest
from lds_cases import ou_dataset, ou_exact, ou_model
from scipy import stats

from probdyn import ConfigError
from probdyn.inference import bind, log_evidence, nuts, svi
from probdyn.inference.mcmc import DiagnosticWarning
from probdyn.inference.reference import guide_reference, laplace_reference


@pytest.fixture(scope="module")
def ou():
    ds = ou_dataset(seed=11)
    exact, grid, cdf = ou_exact(ds)
    return ds, exact, grid, cdf


def test_laplace_reference_is_the_inverse_hessian_at_the_mode(ou):
    ds = ou[0]
    density = bind(ou_model(), ou_model().prepare(ds))
    q = laplace_reference(density, jax.random.key(0), scale=1.5)
    gradient = jax.grad(density.log_posterior)(q.mean)
    assert abs(float(gradient[0])) < 1e-6
    curvature = float(jax.hessian(density.log_posterior)(q.mean)[0, 0])
    np.testing.assert_allclose(float(q.covariance[0, 0]), 1.5**2 / -curvature, rtol=1e-6)
    draws = q.sample(jax.random.key(1), 20000)
    np.testing.assert_allclose(np.std(draws), 1.5 / np.sqrt(-curvature), rtol=0.03)
    normal = stats.norm(float(q.mean[0]), 1.5 / np.sqrt(-curvature))
    np.testing.assert_allclose(q.log_prob(draws[0]), normal.logpdf(float(draws[0, 0])), rtol=1e-8)


@pytest.mark.slow
def test_smc_and_ais_from_the_laplace_reference_meet_the_exact_evidence(ou):
    ds, exact, _, _ = ou
    prior = log_evidence(ou_model(), ds, method="smc", seed=0, num_particles=300)
    started = log_evidence(
        ou_model(), ds, method="smc", seed=0, reference="laplace", num_particles=300
    )
    for result in (prior, started):
        error = result.log_evidence - exact
        assert abs(error) < 0.1 and abs(error) < 3 * result.standard_error + 1e-3, result
    assert max(started.diagnostics["tempering_steps"]) < min(prior.diagnostics["tempering_steps"])
    # q is close in 1-D; the prior is farther (its weights are the likelihood's).
    assert min(started.diagnostics["start_ess_fraction"]) > 0.5
    assert max(prior.diagnostics["start_ess_fraction"]) < 0.5
    ais = log_evidence(ou_model(), ds, method="ais", seed=1, num_particles=300, num_temperatures=20)
    error = ais.log_evidence - exact
    assert abs(error) < 0.1 and abs(error) < 3 * ais.standard_error + 1e-3, ais
    assert ais.method == "ais" and min(ais.diagnostics["final_ess_fraction"]) > 0.5


@pytest.mark.slow
def test_a_badly_fitted_reference_still_gives_the_evidence_at_a_higher_cost(ou):
    # Control: a guide after 3 SVI steps sits far from the posterior. The estimate stays
    # unbiased (the tempering path ends at the posterior whatever q is); the cost shows in
    # more tempering steps and a smaller starting ESS than from a fitted guide.
    ds, exact, _, _ = ou
    results = {}
    for steps in (3, 1500):
        fit = svi(ou_model(), ds, num_steps=steps, seed=0, guide="normal", progress=False)
        results[steps] = log_evidence(
            ou_model(),
            ds,
            method="smc",
            seed=2,
            reference="guide",
            svi_result=fit,
            num_particles=300,
        )
    # Right within the reported error either way; the poor start's error is the wider one.
    for steps, result in results.items():
        error = result.log_evidence - exact
        assert abs(error) < 3 * result.standard_error + 1e-3, result
        assert abs(error) < (0.1 if steps == 1500 else 0.3), result
    bad, good = results[3].diagnostics, results[1500].diagnostics
    assert min(bad["tempering_steps"]) > max(good["tempering_steps"])
    assert max(bad["start_ess_fraction"]) < min(good["start_ess_fraction"])
    ais = log_evidence(ou_model(), ds, method="ais", seed=0, reference="prior", num_particles=300)
    error = ais.log_evidence - exact
    assert abs(error) < 0.15 and abs(error) < 3 * ais.standard_error + 1e-3, ais


def test_a_guide_reference_needs_its_guide(ou):
    with pytest.raises(ConfigError, match="reference='guide' needs svi_result"):
        log_evidence(ou_model(), ou[0], method="smc", seed=0, reference="guide")
    with pytest.raises(ConfigError, match="reference"):
        log_evidence(ou_model(), ou[0], method="ais", seed=0, reference="nowhere")


@pytest.mark.slow
def test_warm_started_nuts_keeps_the_guide_mass_and_matches_the_grid_posterior(ou):
    ds, _, grid, cdf = ou
    fit = svi(ou_model(), ds, num_steps=1500, seed=0, guide="mvn", progress=False)
    density = bind(ou_model(), ou_model().prepare(ds))
    expected = guide_reference(fit, density, seed=1).covariance
    options = {"num_warmup": 50, "num_samples": 1000, "num_chains": 2, "seed": 0}
    result = nuts(ou_model(), ds, init=fit, dense_mass=True, progress=False, **options)
    from probdyn.inference import mcmc

    engine = next(reversed(mcmc._samplers.values()))

    def assert_mass(covariance):  # the guide's, not adapted during the warm-up
        (inverse_mass,) = engine.last_state.adapt_state.inverse_mass_matrix.values()  # 1 block
        for chain in np.asarray(inverse_mass):
            np.testing.assert_allclose(chain, np.asarray(covariance), rtol=1e-10)

    assert_mass(expected)
    # A second warm start from another guide reuses the compiled sampler with its own mass.
    other = svi(ou_model(), ds, num_steps=300, seed=1, guide="mvn", progress=False)
    other_mass = guide_reference(other, density, seed=1).covariance
    assert not np.allclose(other_mass, expected, rtol=1e-3)
    count = len(mcmc._samplers)
    with warnings.catch_warnings():  # a poor guide: only the mass matrix is looked at
        warnings.simplefilter("ignore", DiagnosticWarning)
        nuts(ou_model(), ds, init=other, dense_mass=True, progress=False, **options)
    assert len(mcmc._samplers) == count and next(reversed(mcmc._samplers.values())) is engine
    assert_mass(other_mass)
    d = result.diagnostics()
    assert d["divergences"] == 0 and d["max_rhat"] < 1.01
    assert result.sample_stats["n_steps"].mean() <= 4  # a unit-scale 1-D target
    draws = result.parameters()["A"].reshape(-1)
    thin = max(1, int(np.ceil(draws.size / d["min_ess_bulk"])))
    assert stats.kstest(draws[::thin], lambda a: np.interp(a, grid, cdf)).pvalue > 1e-3


def test_ess_fraction_is_the_brute_force_formula():
    from probdyn.inference.evidence.result import ess_fraction

    log_w = np.log(np.array([0.1, 2.0, 0.5, 3.0]))
    w = np.exp(log_w)
    np.testing.assert_allclose(ess_fraction(log_w + 700.0), w.sum() ** 2 / (4 * (w**2).sum()))
    np.testing.assert_allclose(ess_fraction(np.zeros(5)), 1.0)
