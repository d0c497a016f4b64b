import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr
from scipy.stats import multivariate_normal

from probdyn import PriorError, prior_predictive
from probdyn.algorithms.canonical import LowerTrapezoidalNormal
from probdyn.algorithms.kalman import kalman_log_marginal, kalman_smoother
from probdyn.models import LDS, from_spec


def dense_latent_moments(A, b, Q, T):
    """Mean and covariance of the stacked latent path (time-major), x_0 ~ N(0, I)."""
    D = A.shape[0]
    means, marg = [np.zeros(D)], [np.eye(D)]
    for _ in range(T - 1):
        means.append(A @ means[-1] + b)
        marg.append(A @ marg[-1] @ A.T + Q)
    cov = np.zeros((T * D, T * D))
    for s in range(T):
        for t in range(s, T):
            block = np.linalg.matrix_power(A, t - s) @ marg[s]
            cov[t * D : (t + 1) * D, s * D : (s + 1) * D] = block
            cov[s * D : (s + 1) * D, t * D : (t + 1) * D] = block.T
    return np.concatenate(means), cov


def dense_observation_moments(A, b, Q, C, d, R, T):
    """Mean and covariance of all observations stacked (time-major), built densely."""
    mean_x, cov = dense_latent_moments(A, b, Q, T)
    big_c = np.kron(np.eye(T), C)
    mean_y = big_c @ mean_x + np.tile(d, T)
    cov_y = big_c @ cov @ big_c.T + np.kron(np.eye(T), np.diag(R))
    return mean_y, cov_y


def dense_log_marginal(A, b, Q, C, d, R, y, mask=None):
    """log p(y) of the observed entries from the dense joint Gaussian of all observations."""
    mean_y, cov_y = dense_observation_moments(A, b, Q, C, d, R, y.shape[0])
    keep = np.ones(y.size, bool) if mask is None else mask.reshape(-1)
    return multivariate_normal(mean_y[keep], cov_y[np.ix_(keep, keep)]).logpdf(y.reshape(-1)[keep])


@pytest.mark.parametrize("latent_dim,emission_dim,T", [(1, 1, 4), (2, 3, 5), (3, 2, 6), (4, 5, 3)])
def test_kalman_equals_dense_joint_gaussian(latent_dim, emission_dim, T):
    rng = np.random.default_rng(latent_dim * 10 + emission_dim)
    A = 0.5 * rng.normal(size=(latent_dim, latent_dim))
    b = rng.normal(size=latent_dim)
    L = rng.normal(size=(latent_dim, latent_dim))
    Q = L @ L.T + 0.1 * np.eye(latent_dim)
    C = rng.normal(size=(emission_dim, latent_dim))
    d = rng.normal(size=emission_dim)
    R = rng.uniform(0.2, 1.5, size=emission_dim)
    y = rng.normal(size=(T, emission_dim))
    ours = kalman_log_marginal(*map(jnp.asarray, (A, b, Q, C, d, R, y)))
    assert abs(float(ours) - dense_log_marginal(A, b, Q, C, d, R, y)) < 1e-8


def partly_observed_case(seed: int, T: int):
    """A 2-latent, 3-channel model, data and a mask hiding about 30% of the entries."""
    rng = np.random.default_rng(seed)
    D, N = 2, 3
    A = 0.6 * np.eye(D) + 0.2 * rng.normal(size=(D, D))
    b, Q = rng.normal(size=D), np.diag([0.3, 0.5])
    C, d, R = rng.normal(size=(N, D)), rng.normal(size=N), np.array([0.4, 0.7, 1.1])
    y = rng.normal(size=(T, N))
    mask = rng.uniform(size=(T, N)) > 0.3
    return (A, b, Q, C, d, R, y), mask


def test_kalman_missing_entries_equal_dense_marginal_of_observed():
    (A, b, Q, C, d, R, y), mask = partly_observed_case(3, T=5)
    ours = kalman_log_marginal(*map(jnp.asarray, (A, b, Q, C, d, R, y)), mask=jnp.asarray(mask))
    reference = dense_log_marginal(A, b, Q, C, d, R, y, mask)
    assert abs(float(ours) - reference) < 1e-8


def test_rts_smoother_equals_the_dense_gaussian_conditional():
    (A, b, Q, C, d, R, y), mask = partly_observed_case(5, T=6)
    T, D = y.shape[0], A.shape[0]
    means, covariances = kalman_smoother(
        *map(jnp.asarray, (A, b, Q, C, d, R, y)), mask=jnp.asarray(mask)
    )
    mean_x, cov_x = dense_latent_moments(A, b, Q, T)
    big_c = np.kron(np.eye(T), C)[mask.reshape(-1)]
    mean_y = big_c @ mean_x + np.tile(d, T)[mask.reshape(-1)]
    cov_y = big_c @ cov_x @ big_c.T + np.diag(np.tile(R, T)[mask.reshape(-1)])
    gain = cov_x @ big_c.T @ np.linalg.inv(cov_y)
    post_mean = mean_x + gain @ (y.reshape(-1)[mask.reshape(-1)] - mean_y)
    post_cov = cov_x - gain @ big_c @ cov_x
    np.testing.assert_allclose(means, post_mean.reshape(T, D), atol=1e-9)
    for t in range(T):
        block = post_cov[t * D : (t + 1) * D, t * D : (t + 1) * D]
        np.testing.assert_allclose(covariances[t], block, atol=1e-9)


def _dataset(y, dt=0.1):
    return xr.Dataset({"y": (("trial", "time", "neuron"), y)}, attrs={"dt": dt})


@pytest.mark.parametrize("parameterisation", ["canonical", "redundant"])
def test_lds_program_log_density_is_kalman_marginal(parameterisation):
    rng = np.random.default_rng(0)
    y = rng.normal(size=(3, 6, 2))
    model = LDS(latent_dim=2, parameterisation=parameterisation)
    data = model.prepare(_dataset(y))
    params = {
        "A": jnp.array([[0.8, 0.1], [-0.2, 0.7]]),
        "b": jnp.array([0.1, -0.1]),
        "C": jnp.array([[1.0, 0.0], [0.2, -1.0]]),
        "d": jnp.array([0.3, 0.0]),
        "r": jnp.array([0.6, 0.9]),
    }
    if parameterisation == "canonical":
        params["C"] = params["C"].at[1, 1].set(1.0)  # lower trapezoidal, positive diagonal
        params["initial_chol"] = jnp.array([[1.5, 0.0], [-0.4, 0.7]])
        Q, P0 = jnp.eye(2), params["initial_chol"] @ params["initial_chol"].T
    else:
        params["q"] = jnp.array([0.5, 0.3])
        Q, P0 = jnp.diag(params["q"] ** 2), jnp.eye(2)
    log_joint, _ = numpyro.infer.util.log_density(model, (data,), {}, params)
    prior = sum(float(d.log_prob(params[name]).sum()) for name, d in model.site_priors(2).items())
    likelihood = sum(
        float(
            kalman_log_marginal(
                params["A"],
                params["b"],
                Q,
                params["C"],
                params["d"],
                params["r"] ** 2,
                jnp.asarray(trial),
                P0=P0,
            )
        )
        for trial in y
    )
    assert abs(float(log_joint) - (prior + likelihood)) < 1e-8


@pytest.mark.parametrize("emission_dim", [4, 2, 1])
def test_canonical_and_redundant_forms_are_the_same_likelihoods(emission_dim):
    canonical = LDS(latent_dim=2)
    redundant = LDS(latent_dim=2, parameterisation="redundant")
    sizes = {"num_trials": 2, "num_timesteps": 15, "emission_dim": emission_dim}
    draws = prior_predictive(canonical, seed=1, num_samples=4, **sizes)
    params = {k: draws[k] for k in ("A", "b", "C", "d", "r", "initial_chol")}
    there = canonical.redundant_form(params)
    back = redundant.canonical_form(there)
    assert set(there) == {"A", "b", "C", "d", "r", "q"} and np.all(there["q"] > 0)
    assert set(back) == set(params)
    if emission_dim >= 2:  # the canonical point is unique where C has full column rank
        for name in params:
            np.testing.assert_allclose(back[name], params[name], atol=1e-10)
    data = canonical.as_data(**sizes)

    def log_likelihood(model, p, i):
        p = {k: jnp.asarray(v[i]) for k, v in p.items()}
        return model.exact_marginal(p, data, 2).log_prob(jnp.asarray(draws["y"][i]))

    for i in range(4):
        reference = log_likelihood(canonical, params, i)
        np.testing.assert_allclose(log_likelihood(redundant, there, i), reference, rtol=1e-10)
        np.testing.assert_allclose(log_likelihood(canonical, back, i), reference, rtol=1e-10)


def test_the_canonical_form_removes_the_latent_maps_that_the_redundant_form_keeps():
    # A signed permutation of the latent axes changes the redundant parameters but not the
    # likelihood; both copies have one canonical form, which the control (another system)
    # does not share.
    redundant = LDS(latent_dim=2, parameterisation="redundant")
    rng = np.random.default_rng(0)
    params = {
        "A": np.array([[0.9, 0.2], [-0.3, 0.8]]),
        "b": np.array([0.1, 0.2]),
        "q": np.array([0.3, 0.7]),
        "C": rng.normal(size=(3, 2)),
        "d": rng.normal(size=3),
        "r": np.ones(3),
    }
    P = np.array([[0.0, -1.0], [1.0, 0.0]])
    flipped = dict(params, A=P @ params["A"] @ P.T, b=P @ params["b"], C=params["C"] @ P.T)
    flipped["q"] = np.abs(P) @ params["q"]
    one, two = redundant.canonical_form(params), redundant.canonical_form(flipped)
    for name in one:
        np.testing.assert_allclose(one[name], two[name], atol=1e-12)
    other = redundant.canonical_form(dict(params, A=params["A"].T))
    assert not np.allclose(other["A"], one["A"])


def test_runs_written_before_the_option_read_as_redundant():
    spec = LDS(latent_dim=2).spec()
    assert spec["parameterisation"] == "canonical"
    del spec["parameterisation"]
    assert from_spec(spec).parameterisation == "redundant"


def test_custom_priors_shapes_and_errors():
    fixed = LDS(
        latent_dim=2,
        parameterisation="redundant",
        priors={"A": dist.Delta(jnp.eye(2) * 0.5), "q": dist.HalfNormal(0.1)},
    )
    draws = prior_predictive(
        fixed, seed=0, num_samples=3, num_trials=2, num_timesteps=4, emission_dim=3
    )
    assert np.allclose(draws["A"], 0.5 * np.eye(2))
    assert draws["q"].shape == (3, 2)
    assert draws["y"].shape == (3, 2, 4, 3)
    # Event dims or batch dims: both accepted when the total shape matches.
    LDS(latent_dim=2, priors={"b": dist.MultivariateNormal(jnp.zeros(2), jnp.eye(2))}).site_priors(
        3
    )
    with pytest.raises(PriorError, match=r"unknown prior site\(s\) \['Z'\].*A \(2, 2\)"):
        LDS(latent_dim=2, priors={"Z": dist.Normal(0, 1)})
    with pytest.raises(PriorError, match=r"site 'b' has shape \(3,\).*the site has shape \(2,\)"):
        LDS(latent_dim=2, priors={"b": dist.Normal(jnp.zeros(3), 1)}).site_priors(3)
    redundant = {"parameterisation": "redundant"}
    with pytest.raises(PriorError, match="outside the site's support"):
        LDS(latent_dim=2, priors={"q": dist.Normal(0, 1)}, **redundant).site_priors(3)
    with pytest.raises(PriorError, match="expected a numpyro"):
        LDS(latent_dim=2, priors={"q": 0.3}, **redundant).site_priors(3)
    # Sites of one form named under the other: what to do instead.
    with pytest.raises(PriorError, match="no site 'q'.*parameterisation='redundant'"):
        LDS(latent_dim=2, priors={"q": dist.HalfNormal(0.1)})
    with pytest.raises(PriorError, match="C lower trapezoidal.*LowerTrapezoidalNormal"):
        LDS(latent_dim=2, priors={"C": dist.Normal(0.0, 2.0)})
    with pytest.raises(PriorError, match="no site 'initial_chol'"):
        LDS(latent_dim=2, priors={"initial_chol": LowerTrapezoidalNormal(2, 2)}, **redundant)
    wide = LDS(latent_dim=2, priors={"C": LowerTrapezoidalNormal(3, 2, 5.0)})
    draws = prior_predictive(
        wide, seed=0, num_samples=50, num_trials=1, num_timesteps=2, emission_dim=3
    )
    assert np.all(draws["C"][:, 0, 1] == 0) and np.all(draws["C"][:, [0, 1], [0, 1]] > 0)
    assert np.std(draws["C"][:, 2, 0]) > 2.5
    with pytest.raises(PriorError, match="Poisson emissions have no closed form"):
        LDS(latent_dim=1, observation="poisson", marginal="exact")


@pytest.mark.parametrize(
    "observation,marginal", [("gaussian", "exact"), ("gaussian", "sample"), ("poisson", None)]
)
def test_prior_predictive_and_log_likelihood_per_trial(observation, marginal):
    model = LDS(latent_dim=2, observation=observation, marginal=marginal)
    draws = prior_predictive(
        model, seed=1, num_samples=2, num_trials=5, num_timesteps=7, emission_dim=4
    )
    site = "y" if observation == "gaussian" else "spikes"
    assert draws[site].shape == (2, 5, 7, 4)
    assert np.isfinite(draws[site]).all()
    data = xr.Dataset({site: (("trial", "time", "neuron"), draws[site][0])}, attrs={"dt": 1.0})
    prepared = model.prepare(data)
    params = {
        k: v[:1] for k, v in draws.items() if k in model.default_priors(4) or k == "latent_noise"
    }
    ll = numpyro.infer.log_likelihood(model, params, prepared)[site]
    assert ll.shape == (1, 5) and np.isfinite(ll).all()


def test_missing_bins_are_masked_not_changed():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(2, 5, 3))
    y[0, 2, 1] = np.nan
    ds = _dataset(y)
    model = LDS(latent_dim=1)
    data = model.prepare(ds)
    assert np.isnan(ds["y"].values[0, 2, 1])  # the user's data is untouched
    assert not bool(data.mask[0, 2, 1]) and int(data.mask.sum()) == y.size - 1
    params = {k: d.sample(jax.random.key(0)) for k, d in model.site_priors(3).items()}
    log_joint, _ = numpyro.infer.util.log_density(model, (data,), {}, params)
    grad = jax.grad(lambda p: numpyro.infer.util.log_density(model, (data,), {}, p)[0])(params)
    assert np.isfinite(float(log_joint))
    assert all(np.isfinite(np.asarray(g)).all() for g in grad.values())


@pytest.mark.parametrize("masked", [False, True])
def test_kalman_pointwise_terms_are_each_values_density_given_those_before_it(masked):
    """Terms (bin, channel) from the filter = log p(y_<=i) - log p(y_<i) of the dense Gaussian."""
    from probdyn.algorithms.kalman import LinearGaussianStateSpace

    (A, b, Q, C, d, R, y), mask = partly_observed_case(5, T=4)
    mask = mask if masked else np.ones_like(mask)
    lgss = LinearGaussianStateSpace(
        *map(jnp.asarray, (A, b, Q, C, d, R)), num_timesteps=4, mask=jnp.asarray(mask)
    )
    terms = np.asarray(lgss.pointwise_log_prob(jnp.asarray(y)))
    mean_y, cov_y = dense_observation_moments(A, b, Q, C, d, R, 4)
    flat, keep = y.reshape(-1), mask.reshape(-1)
    expected, before = np.zeros(flat.size), 0.0
    seen = np.zeros(flat.size, bool)
    for i in np.flatnonzero(keep):
        seen[i] = True
        upto = multivariate_normal(mean_y[seen], cov_y[np.ix_(seen, seen)]).logpdf(flat[seen])
        expected[i], before = upto - before, upto
    np.testing.assert_allclose(terms.reshape(-1), expected, atol=1e-8)
    np.testing.assert_allclose(terms.sum(), float(lgss.log_prob(jnp.asarray(y))), atol=1e-8)
