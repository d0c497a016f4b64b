"""FacRNN: the marginal likelihood by brute force, the teacher data, penalties, a short fit."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from scipy import stats

from probdyn.algorithms.independence import partial_correlation
from probdyn.data import simulate_facrnn_teacher
from probdyn.errors import DataError, PriorError
from probdyn.inference import svi
from probdyn.model import prior_predictive
from probdyn.models import FacRNN


@pytest.fixture(scope="module")
def teacher():
    return simulate_facrnn_teacher(seed=3, num_trials=6, num_timesteps=30, fit_steps=1500)


def random_params(model: FacRNN, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    N, K = model.num_neurons, model.latent_dim
    return {
        "A": jnp.asarray(rng.normal(size=(N, K)) / np.sqrt(K)),
        "a": jnp.asarray(rng.normal(size=N)),
        "B": jnp.asarray(rng.normal(size=(K, N)) / np.sqrt(N)),
        "b": jnp.asarray(rng.normal(size=K)),
        "sigma": jnp.asarray(rng.uniform(0.2, 0.5, size=N)),
    }


def test_teacher_carries_two_independent_z_scored_attractors(teacher):
    assert teacher.attrs["teacher_r2"] > 0.98
    z = teacher.latents_true.values.reshape(-1, 6)
    np.testing.assert_allclose(z.mean(0), 0, atol=0.5)  # z-scored over the whole trajectory
    A, B = teacher.A_true.values, teacher.B_true.values
    np.testing.assert_allclose(teacher.connectivity_true.values, A @ B, atol=1e-12)
    np.testing.assert_allclose(teacher.subconnectivity_true.values.sum(0), A @ B, atol=1e-12)
    noise = teacher.y.values - (teacher.latents_true.values @ A.T + teacher.a_true.values)
    assert noise.std() == pytest.approx(0.1, rel=0.1)
    np.testing.assert_array_equal(teacher.fit_bins.values, np.arange(30) % 2 == 0)
    again = simulate_facrnn_teacher(seed=3, num_trials=6, num_timesteps=30, fit_steps=1500)
    np.testing.assert_array_equal(again.y.values, teacher.y.values)


def test_linear_decoder_log_density_is_the_gaussian_marginal_by_brute_force(teacher):
    model = FacRNN(num_neurons=20, num_groups=2, group_rank=2, correlation=None, bandwidth=0.3)
    params = random_params(model)
    data = model.prepare(teacher)
    log_joint, _ = numpyro.infer.util.log_density(model.program, (data,), {}, params)
    p = {k: np.asarray(v) for k, v in params.items()}
    log_prior = sum(
        float(prior.log_prob(params[name])) for name, prior in model.site_priors(20).items()
    )
    x = teacher.y.values
    covariance = 0.3**2 * p["A"] @ p["A"].T + np.diag(p["sigma"] ** 2)
    expected = 0.0
    for trial in range(6):
        for t in range(2, 30, 2):  # the fitted (even) bins; bin 0 is conditioned on
            mean = p["A"] @ (p["B"] @ np.tanh(x[trial, t - 1]) + p["b"]) + p["a"]
            expected += stats.multivariate_normal(mean, covariance).logpdf(x[trial, t])
    assert float(log_joint) - log_prior == pytest.approx(expected, rel=1e-9)


def test_the_seeds_objective_is_its_elbo_by_monte_carlo(teacher):
    # objective="vae": per fitted transition, E_q log N(x_t; A z + a, sigma^2) with
    # q = N(mu_t, s^2 I), minus KL(q || N(0, I)). The expectation is checked by sampling z.
    model = FacRNN(
        num_neurons=20,
        num_groups=2,
        group_rank=2,
        correlation=None,
        bandwidth=0.3,
        objective="vae",
    )
    params = random_params(model, seed=1)
    data = model.prepare(teacher)
    log_joint, _ = numpyro.infer.util.log_density(model.program, (data,), {}, params)
    log_prior = sum(
        float(prior.log_prob(params[name])) for name, prior in model.site_priors(20).items()
    )
    p = {k: np.asarray(v) for k, v in params.items()}
    x, s, K = teacher.y.values, 0.3, model.latent_dim
    rng = np.random.default_rng(0)
    expected, error = 0.0, 0.0
    for trial in range(6):
        for t in range(2, 30, 2):
            mu = p["B"] @ np.tanh(x[trial, t - 1]) + p["b"]
            z = mu + s * rng.normal(size=(4000, K))
            recon = stats.norm(z @ p["A"].T + p["a"], p["sigma"]).logpdf(x[trial, t]).sum(-1)
            kl = 0.5 * np.sum(mu**2 + s**2 - 1 - 2 * np.log(s))
            expected += recon.mean() - kl
            error += recon.var() / recon.size
    assert abs(float(log_joint) - log_prior - expected) < 4 * np.sqrt(error)
    with pytest.raises(PriorError, match="objective='vae'"):
        FacRNN(num_neurons=20, num_groups=2, group_rank=2, decoder="relu", objective="vae")


def test_pc_factor_is_the_estimator_on_the_fitted_codes(teacher):
    # The redundant form: the penalised and plain models then share the prior on A.
    shared = {"parameterisation": "redundant", "bandwidth": 0.4}
    model = FacRNN(num_neurons=20, num_groups=2, group_rank=2, beta=2.0, **shared)
    plain = FacRNN(num_neurons=20, num_groups=2, group_rank=2, correlation=None, **shared)
    params = random_params(model, seed=1)
    data = model.prepare(teacher)
    with_pc, trace = numpyro.infer.util.log_density(model.program, (data,), {}, params)
    without, _ = numpyro.infer.util.log_density(plain.program, (data,), {}, params)
    codes = np.asarray(model.codes(params, teacher.y.values[:, :-1])).reshape(-1, 4)
    fitted = np.tile(np.arange(1, 30) % 2 == 0, 6)
    noise = np.asarray(jax.random.normal(jax.random.key(0), codes.shape, codes.dtype))
    # The penalty's own value, recomputed on the fitted codes alone (no weights needed).
    pc = partial_correlation(
        (codes + 0.4 * noise)[fitted], codes[fitted], 0.4, [0, 0, 1, 1], population=fitted.sum()
    )
    assert float(trace["partial_correlation"]["value"]) == pytest.approx(float(pc), rel=1e-9)
    assert float(with_pc - without) == pytest.approx(-2.0 * fitted.sum() * float(pc), rel=1e-9)


def test_block_penalty_counts_only_cross_group_coupling(teacher):
    shared = {"num_neurons": 20, "num_groups": 2, "group_rank": 2, "parameterisation": "redundant"}
    model = FacRNN(correlation="block", beta=0.5, **shared)
    plain = FacRNN(correlation=None, **shared)
    params = random_params(model, seed=2)
    data = model.prepare(teacher)
    difference = (
        numpyro.infer.util.log_density(model.program, (data,), {}, params)[0]
        - numpyro.infer.util.log_density(plain.program, (data,), {}, params)[0]
    )
    coupling = np.asarray(params["B"] @ params["A"])
    cross = coupling[:2, 2:] ** 2 + coupling[2:, :2].T ** 2
    fitted = 6 * 14  # transitions into the even bins 2..28 of 6 trials
    assert float(difference) == pytest.approx(-0.5 * fitted * cross.sum(), rel=1e-9)


def test_connectivity_dynamics_and_readout_are_the_stated_maps():
    model = FacRNN(num_neurons=5, num_groups=3, group_rank=1, decoder="relu")
    params = random_params(model, seed=4)
    J, sub = model.connectivity(params)
    A, B = np.asarray(params["A"]), np.asarray(params["B"])
    np.testing.assert_allclose(sub[1], np.outer(A[:, 1], B[1]), atol=1e-12)
    np.testing.assert_allclose(J, A @ B, atol=1e-12)
    z = jnp.asarray([0.3, -1.0, 2.0])
    x = np.maximum(A @ np.asarray(z) + np.asarray(params["a"]), 0)
    np.testing.assert_allclose(model.emission_mean(params, z), x, atol=1e-12)
    expected = B @ np.tanh(x) + np.asarray(params["b"])
    np.testing.assert_allclose(model.vector_field(params, z), expected, atol=1e-12)
    np.testing.assert_array_equal(model.groups, [0, 1, 2])


def test_prior_predictive_runs_the_network_and_relu_decoder_samples_latents(teacher):
    model = FacRNN(num_neurons=20, num_groups=2, group_rank=3, decoder="relu", correlation=None)
    draws = prior_predictive(model, seed=0, num_samples=2, data=teacher)
    assert draws["y"].shape == (2, 6, 30, 20) and np.isfinite(draws["y"]).all()
    trace = numpyro.handlers.trace(numpyro.handlers.seed(model.program, 0)).get_trace(
        model.prepare(teacher)
    )
    assert trace["latents"]["value"].shape == (6, 29, 6)


def test_bad_input_names_the_problem(teacher):
    with pytest.raises(PriorError, match="correlation='lkj'"):
        FacRNN(num_neurons=20, num_groups=2, group_rank=3, correlation="lkj")
    with pytest.raises(PriorError, match="bandwidth=-1"):
        FacRNN(num_neurons=20, num_groups=2, group_rank=3, bandwidth=-1)
    with pytest.raises(PriorError, match="group_rank=0"):
        FacRNN(num_neurons=20, num_groups=2, group_rank=0)
    holed = teacher.copy(deep=True)
    holed.y[1, 4, 2] = np.nan
    with pytest.raises(DataError, match=r"y\[trial=1, time=4, neuron=2\] is NaN"):
        FacRNN(num_neurons=20, num_groups=2, group_rank=3).prepare(holed)
    with pytest.raises(DataError, match="fit_bins has dtype"):
        FacRNN(num_neurons=20, num_groups=2, group_rank=3).prepare(
            teacher.assign(fit_bins=teacher.fit_bins.astype(int))
        )


def test_short_pc_fit_lowers_the_loss(teacher):
    model = FacRNN(num_neurons=20, num_groups=2, group_rank=3, bandwidth="learned")
    result = svi(model, teacher, num_steps=80, seed=0, guide="delta", batch_size=3,
                 learning_rate=0.02, progress=False)  # fmt: skip
    assert result.losses[-10:].mean() < result.losses[:10].mean()
    draws = result.sample_posterior(2, seed=0)
    assert draws["s"].shape == (2,) and np.all(draws["s"] > 0)


def test_prior_variant_builds_b_from_the_shrunk_coupling():
    model = FacRNN(num_neurons=8, num_groups=2, group_rank=2, correlation="prior")
    sites = model.default_priors(8)
    assert "B" not in sites and sites["lam"].batch_shape == (8,)  # 2 x 2 x 2 cross entries
    rng = np.random.default_rng(5)
    params = {
        "A": jnp.asarray(rng.normal(size=(8, 4))),
        "M_raw": jnp.asarray(rng.normal(size=(4, 4))),
        "R": jnp.asarray(rng.normal(size=(4, 8))),
        "tau": jnp.asarray(0.3),
        "lam": jnp.asarray(rng.uniform(0.5, 2.0, size=8)),
    }
    expected = np.asarray(params["M_raw"]).copy()
    cross = np.add.outer([0, 0, 1, 1], [0, 0, 1, 1]) == 1
    expected[cross] *= 0.3 * np.asarray(params["lam"])
    np.testing.assert_allclose(model.read_in(params) @ params["A"], expected, atol=1e-10)
    block = dict(params, lam=jnp.zeros(8))
    assert float(model.cross_coupling(block)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(PriorError, match="num_neurons >= num_groups"):
        FacRNN(num_neurons=3, num_groups=2, group_rank=2, correlation="prior")


@pytest.mark.parametrize("correlation", ["pc", "prior"])
def test_unmixed_start_keeps_connectivity_and_predictions(teacher, correlation):
    plain = FacRNN(num_neurons=20, num_groups=2, group_rank=3, correlation=None)
    params = random_params(plain, seed=6)
    model = FacRNN(num_neurons=20, num_groups=2, group_rank=3, correlation=correlation)
    x = jnp.asarray(teacher.y.values)
    start = {k: jnp.asarray(v) for k, v in model.unmixed_start(params, x).items()}
    assert set(start) == set(model.default_priors(20))
    np.testing.assert_allclose(model.connectivity(start)[0], plain.connectivity(params)[0],
                               atol=1e-9)  # fmt: skip
    predicted = model.emission_mean(start, model.codes(start, x))
    np.testing.assert_allclose(predicted, plain.emission_mean(params, plain.codes(params, x)),
                               atol=1e-9)  # fmt: skip
    codes = np.asarray(model.codes(start, x)).reshape(-1, 6)
    np.testing.assert_allclose(codes.mean(0), 0, atol=1e-9)  # centred, unit-variance sources
    np.testing.assert_allclose(codes.std(0, ddof=1), 1, atol=1e-6)


def test_entangled_control_has_one_group():
    ds = simulate_facrnn_teacher(latents="Lorenz96", seed=0, num_trials=4, num_timesteps=20,
                                 fit_steps=50)  # fmt: skip
    np.testing.assert_array_equal(ds.latent_group.values, 0)
    assert ds.subconnectivity_true.shape == (1, 20, 20)
    with pytest.raises(DataError, match="latents = 'Rossler'"):
        simulate_facrnn_teacher(latents="Rossler", seed=0)


@pytest.mark.parametrize(
    "options",
    [{}, {"correlation": None}, {"correlation": "prior"}, {"decoder": "relu"}],
    ids=["pc", "plain", "prior", "relu"],
)
def test_the_canonical_form_is_the_same_network_with_rotated_latents(teacher, options):
    shared = {"num_neurons": 20, "num_groups": 2, "group_rank": 2, "bandwidth": 0.4, **options}
    canonical = FacRNN(**shared)
    redundant = FacRNN(parameterisation="redundant", **shared)
    data = canonical.prepare(teacher)
    params = prior_predictive(redundant, seed=4, num_samples=1, data=teacher)
    params = {k: jnp.asarray(params[k][0]) for k in redundant.default_priors(20)}
    if "decoder" in options:  # the ReLU decoder's latents are sites too
        params["latents"] = jax.random.normal(jax.random.key(5), (6, 29, 4))
    form = canonical.canonical_form(params)
    priors = canonical.site_priors(20)
    assert bool(priors["A"].support(form["A"]))
    assert not bool(priors["A"].support(params["A"]))  # a free A is not canonical

    # The same likelihood (observation site) and the same connectivity and penalty.
    def likelihood(model, p):
        trace = numpyro.handlers.trace(numpyro.handlers.substitute(model.program, p)).get_trace(
            data
        )
        return float(trace["y"]["fn"].log_prob(trace["y"]["value"]).sum())

    np.testing.assert_allclose(
        likelihood(canonical, form), likelihood(redundant, params), rtol=1e-9
    )
    np.testing.assert_allclose(
        redundant.connectivity(form)[0], redundant.connectivity(params)[0], atol=1e-10
    )
    # Control: a rotation that mixes the groups is no symmetry of the penalised models.
    if canonical.correlation is not None:
        np.testing.assert_allclose(
            canonical.cross_coupling(form), redundant.cross_coupling(params), atol=1e-10
        )
        angle = 0.8
        across = np.eye(4)
        across[np.ix_([1, 2], [1, 2])] = [
            [np.cos(angle), -np.sin(angle)],
            [np.sin(angle), np.cos(angle)],
        ]
        mixed = {**params, "A": params["A"] @ across.T}
        mixed["B" if "B" in params else "R"] = across @ mixed["B" if "B" in params else "R"]
        assert not np.allclose(canonical.canonical_form(mixed)["A"], form["A"], atol=1e-3)


def test_a_free_prior_on_a_is_refused_under_the_canonical_form():
    with pytest.raises(PriorError, match="blocks=2.*parameterisation='redundant'"):
        FacRNN(
            num_neurons=6,
            num_groups=2,
            group_rank=2,
            priors={"A": numpyro.distributions.Normal(0.0, 1.0)},
        )
