"""The HMM model family: its likelihood, priors, label switching and NUTS recovery."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr
from sampling import short_nuts
from scipy import stats

from probdyn import ConfigError, PriorError, fixed_points
from probdyn.data import simulate_hmm
from probdyn.inference import bind
from probdyn.models import HMM


def _forward_numpy(initial, transition, emission_likelihood):
    """Plain forward algorithm, z_0 ~ initial: p(y) with per-step normalisation."""
    alpha = initial * emission_likelihood[0]
    log_z = np.log(alpha.sum())
    alpha = alpha / alpha.sum()
    for t in range(1, len(emission_likelihood)):
        alpha = (alpha @ transition) * emission_likelihood[t]
        log_z += np.log(alpha.sum())
        alpha = alpha / alpha.sum()
    return log_z


def _log_likelihood(model, ds, params):
    density = bind(model, model.prepare(ds))
    return float(density.log_likelihood(density.unconstrain(params)))


def test_categorical_likelihood_equals_a_plain_forward_pass():
    ds = simulate_hmm("linear", num_trials=3, num_timesteps=40, seed=0)
    initial = ds["initial_true"].values
    transition = ds["transition_matrix_true"].values
    emission = ds["emission_matrix_true"].values
    params = {"initial": initial, "transition": transition, "emission_probs": emission}
    expected = sum(
        _forward_numpy(initial, transition, emission[:, symbols].T)
        for symbols in ds["symbols"].values
    )
    assert _log_likelihood(HMM(num_states=3), ds, params) == pytest.approx(expected, abs=1e-9)
    parallel = HMM(num_states=3, forward="parallel")
    assert _log_likelihood(parallel, ds, params) == pytest.approx(expected, abs=1e-9)


def test_poisson_likelihood_with_missing_channels():
    rng = np.random.default_rng(1)
    counts = rng.poisson(2.0, size=(2, 15, 3)).astype(float)
    counts[0, 4, 1] = counts[1, 9, 0] = np.nan
    ds = xr.Dataset({"spikes": (("trial", "time", "neuron"), counts)}, attrs={"dt": 0.02})
    params = {
        "initial": np.array([0.3, 0.7]),
        "transition": np.array([[0.9, 0.1], [0.2, 0.8]]),
        "rates": np.array([[1.0, 2.0, 0.5], [3.0, 1.0, 2.5]]),
    }
    expected = 0.0
    for trial in counts:
        # A missing count contributes a factor 1 to every state's emission likelihood.
        observed = ~np.isnan(trial)[:, None, :]
        log_pmf = stats.poisson.logpmf(np.nan_to_num(trial)[:, None, :], params["rates"][None])
        log_e = np.where(observed, log_pmf, 0.0).sum(axis=-1)
        expected += _forward_numpy(params["initial"], params["transition"], np.exp(log_e))
    model = HMM(num_states=2, observation="poisson")
    assert _log_likelihood(model, ds, params) == pytest.approx(expected, abs=1e-9)


def test_sticky_prior_and_custom_priors():
    model = HMM(num_states=3, sticky=10.0)
    rows = model.default_priors(3)["transition"].concentration
    np.testing.assert_allclose(rows, np.ones((3, 3)) + 10 * np.eye(3))
    fixed = HMM(num_states=2, priors={"initial": dist.Delta(jnp.array([0.5, 0.5]))})
    with numpyro.handlers.seed(rng_seed=0):
        trace = numpyro.handlers.trace(fixed).get_trace(
            num_trials=2, num_timesteps=5, emission_dim=3
        )
    np.testing.assert_allclose(trace["initial"]["value"], [0.5, 0.5])
    assert trace["symbols"]["value"].shape == (2, 5)
    with pytest.raises(PriorError, match="num_states"):
        HMM(num_states=0)
    with pytest.raises(PriorError, match="sticky"):
        HMM(num_states=2, sticky=-1.0)
    with pytest.raises(PriorError, match="forward='associative'"):
        HMM(num_states=2, forward="associative")


def test_identify_undoes_state_permutations():
    rng = np.random.default_rng(0)
    emission = np.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
    transition = rng.dirichlet(np.ones(3), size=3)
    initial = rng.dirichlet(np.ones(3))
    draws = {"initial": [], "transition": [], "emission_probs": []}
    for _ in range(6):
        perm = rng.permutation(3)
        draws["initial"].append(initial[perm])
        draws["transition"].append(transition[np.ix_(perm, perm)])
        draws["emission_probs"].append(emission[perm])
    draws = {k: np.stack(v).reshape(2, 3, *np.shape(v[0])) for k, v in draws.items()}
    canonical = HMM(num_states=3).identify(draws)
    order = np.argsort(emission @ np.arange(3))
    np.testing.assert_allclose(
        canonical["emission_probs"], np.broadcast_to(emission[order], (2, 3, 3, 3))
    )
    np.testing.assert_allclose(
        canonical["transition"], np.broadcast_to(transition[np.ix_(order, order)], (2, 3, 3, 3))
    )
    np.testing.assert_allclose(canonical["initial"], np.broadcast_to(initial[order], (2, 3, 3)))


def test_relabel_permutes_state_axes_under_jit():
    rng = np.random.default_rng(1)
    params = {
        "initial": rng.dirichlet(np.ones(3)),
        "transition": rng.dirichlet(np.ones(3), size=3),
        "means": rng.normal(size=(3, 2)),
        "scales": rng.uniform(0.5, 1.0, size=(3, 2)),
    }
    order = np.array([2, 0, 1])
    model = HMM(num_states=3, observation="gaussian")
    assert model.num_labels == 3
    moved = jax.jit(model.relabel)(jax.tree.map(jnp.asarray, params), jnp.asarray(order))
    np.testing.assert_allclose(moved["initial"], params["initial"][order])
    np.testing.assert_allclose(moved["transition"], params["transition"][np.ix_(order, order)])
    np.testing.assert_allclose(moved["means"], params["means"][order])
    np.testing.assert_allclose(moved["scales"], params["scales"][order])


def test_stationary_distribution_and_no_vector_field():
    P = np.array([[0.9, 0.1], [0.3, 0.7]])
    np.testing.assert_allclose(HMM.stationary_distribution(P), [0.75, 0.25])
    chains = np.random.default_rng(0).dirichlet(np.ones(4), size=(5, 4))
    stationary = HMM.stationary_distribution(chains)
    np.testing.assert_allclose(np.einsum("bi,bij->bj", stationary, chains), stationary, atol=1e-12)
    np.testing.assert_allclose(stationary.sum(axis=-1), 1.0)
    with pytest.raises(ConfigError, match="stationary distribution"):
        fixed_points(
            HMM(num_states=2),
            {
                "initial": np.ones((1, 2)) / 2,
                "transition": P[None],
                "emission_probs": np.ones((1, 2, 3)) / 3,
            },
        )


@pytest.mark.slow
def test_nuts_recovers_the_linear_chain_transition_matrix():
    ds = simulate_hmm("linear", num_states=3, num_trials=20, num_timesteps=100, seed=4)
    result = short_nuts(HMM(num_states=3), ds, seed=0, num_warmup=300, num_samples=300)
    draws = result.parameters()["transition"]
    low, high = np.quantile(draws, [0.05, 0.95], axis=0)
    truth = ds["transition_matrix_true"].values
    inside = (low <= truth) & (truth <= high)
    # The chain's impossible moves (0 -> 2, 2 -> 0) lie on the boundary of the simplex, which no
    # interval of a Dirichlet posterior contains; with 2000 symbols they are instead the least
    # probable move of their row.
    mean = draws.mean(axis=0)
    possible = truth > 0
    assert mean[0, 2] < mean[0, 1] and mean[2, 0] < mean[2, 1], mean
    # Seven 90% intervals of possible moves: under calibration fewer than 5 cover with
    # probability 0.026.
    assert inside[possible].sum() >= 5, (low, high, truth)
