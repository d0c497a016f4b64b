import importlib.util
import json
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, linalg, stats

from probdyn import DataError
from probdyn.data import hmm_architecture, simulate_attractor, simulate_hmm, simulate_sde
from probdyn.data.systems import ATTRACTORS, SDE_SYSTEMS


def dysts_table():
    spec = importlib.util.find_spec("dysts")
    if spec is None:
        pytest.skip(
            "needs the dysts package (extra 'reference') to compare with the published table"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "chaotic_attractors.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", sorted(ATTRACTORS))
def test_attractor_parameters_match_dysts(name):
    published = dysts_table()[name]
    ours = ATTRACTORS[name]
    assert dict(ours.parameters) == pytest.approx(published["parameters"])
    assert ours.period == pytest.approx(published["period"])
    assert ours.initial_condition == pytest.approx(published["initial_conditions"])


def test_attractor_equations_have_their_analytic_fixed_points():
    lorenz = ATTRACTORS["Lorenz"]
    p = lorenz.parameters
    c = np.sqrt(p["beta"] * (p["rho"] - 1))
    for point in ([0, 0, 0], [c, c, p["rho"] - 1], [-c, -c, p["rho"] - 1]):
        assert np.allclose(lorenz.vector_field(jnp.asarray(point, float), p), 0, atol=1e-12)
    arneodo = ATTRACTORS["Arneodo"]
    q = arneodo.parameters
    x = np.sqrt(q["a"] / q["d"])  # -a x + d x^3 = 0
    assert np.allclose(arneodo.vector_field(jnp.array([x, 0.0, 0.0]), q), 0, atol=1e-12)
    rossler = ATTRACTORS["Rossler"]
    r = rossler.parameters
    disc = np.sqrt(r["c"] ** 2 - 4 * r["a"] * r["b"])
    x = (r["c"] - disc) / 2
    assert np.allclose(
        rossler.vector_field(jnp.array([x, -x / r["a"], x / r["a"]]), r), 0, atol=1e-12
    )
    thomas = ATTRACTORS["Thomas"]
    assert np.allclose(thomas.vector_field(jnp.zeros(3), thomas.parameters), 0)
    # Thomas is cyclically symmetric: permuting coordinates permutes the field.
    v = jnp.array([0.3, -1.2, 2.0])
    f = thomas.vector_field
    assert np.allclose(f(jnp.roll(v, 1), thomas.parameters), jnp.roll(f(v, thomas.parameters), 1))


@pytest.mark.parametrize("system", ["Lorenz", "Arneodo"])
def test_attractor_simulation_follows_the_ode_and_recipe(system):
    ds = simulate_attractor(system, num_trials=20, num_timesteps=30, num_neurons=12, seed=1)
    assert ds["spikes"].shape == (20, 30, 12) and ds["latents_true"].shape == (20, 30, 3)
    spec = ATTRACTORS[system]
    assert ds.attrs["dt"] == pytest.approx(spec.period / spec.points_per_period)
    # Trials are consecutive pieces of one trajectory: compare one trial with SciPy's solver.
    z = ds["latents_true"].values
    field = jax.jit(partial(spec.vector_field, p=spec.parameters))
    solution = integrate.solve_ivp(
        lambda t, x: np.asarray(field(jnp.asarray(x))),
        (0, 5 * ds.attrs["dt"]),
        z[3, 0],
        rtol=1e-11,
        atol=1e-11,
        t_eval=np.arange(6) * ds.attrs["dt"],
    )
    assert np.allclose(solution.y.T, z[3, :6], rtol=1e-4, atol=1e-4 * np.abs(z).max())
    assert np.allclose(
        z[3, -1] + ds.attrs["dt"] * field(jnp.asarray(z[3, -1])),
        z[4, 0],
        atol=0.05 * np.abs(z).max(),
    )
    # Readout: W ~ U(-0.5, 0.5); log rates are the z-scored projection.
    W = ds["readout_true"].values
    assert W.shape == (3, 12) and np.all(np.abs(W) <= 0.5)
    log_rates = np.log(ds["rates_true"].values).reshape(-1, 12)
    assert np.allclose(log_rates.mean(0), 0, atol=1e-10) and np.allclose(log_rates.std(0), 1)
    projected = (z @ W).reshape(-1, 12)
    assert np.allclose((projected - projected.mean(0)) / projected.std(0), log_rates)
    # Poisson counts: total within 5 standard deviations of the total rate.
    total_rate = ds["rates_true"].values.sum()
    assert abs(int(ds["spikes"].sum()) - total_rate) < 5 * np.sqrt(total_rate)


def test_simulate_attractor_errors():
    with pytest.raises(DataError, match="unknown attractor 'Chua'"):
        simulate_attractor("Chua", seed=0)
    with pytest.raises(DataError, match="num_trials = 0; expected a positive integer"):
        simulate_attractor("Lorenz", num_trials=0, seed=0)


@pytest.mark.parametrize(
    "architecture,num_states",
    [("linear", 2), ("linear", 3), ("linear", 5), ("fully_connected", None), ("cyclic", None)],
)
def test_hmm_matrices_and_empirical_statistics(architecture, num_states):
    initial, transition, emission = hmm_architecture(architecture, num_states)
    assert np.allclose(transition.sum(1), 1) and np.allclose(emission.sum(1), 1)
    assert np.allclose(initial, 1 / len(initial))
    ds = simulate_hmm(
        architecture, num_states=num_states, num_trials=200, num_timesteps=250, seed=7
    )
    states, symbols = ds["states_true"].values, ds["symbols"].values
    K = len(initial)
    # Pearson chi-square goodness of fit of every row; Bonferroni over rows keeps the whole
    # test's false alarm rate below 1e-3 under the null (the simulator is right).
    rows = []
    for i in range(K):
        following = states[:, 1:][states[:, :-1] == i]
        rows.append((np.bincount(following, minlength=K), transition[i]))
        rows.append((np.bincount(symbols[states == i], minlength=3), emission[i]))
    for counts, probs in rows:
        keep = probs > 0
        assert counts[~keep].sum() == 0
        p = (
            stats.chisquare(counts[keep], counts.sum() * probs[keep]).pvalue
            if keep.sum() > 1
            else 1.0
        )
        assert p > 1e-3 / len(rows)


def test_linear_chain_matches_design():
    _, transition, emission = hmm_architecture("linear", 3)
    q = 0.05**0.5
    assert np.allclose(np.diag(transition), 1 - q)
    assert np.allclose(transition[0], [1 - q, q, 0]) and np.allclose(
        transition[1], [q / 2, 1 - q, q / 2]
    )
    assert np.allclose(emission, [[0.99, 0.01, 0], [0.495, 0.01, 0.495], [0, 0.01, 0.99]])
    with pytest.raises(DataError, match="num_states = 6 for a linear chain"):
        hmm_architecture("linear", 6)


def test_ou_stationary_covariance_matches_lyapunov():
    w, sigma = 1.0, 0.5
    ds = simulate_sde(
        "ou", num_trials=400, num_timesteps=100, dt=0.1, substeps=20, noise_scale=sigma, seed=3
    )
    B = np.array([[1.0, -w], [w, 1.0]])
    S = linalg.solve_continuous_lyapunov(B, sigma**2 * np.eye(2))  # B S + S B^T = sigma^2 I
    x = ds["latents_true"].values[:, 50:].reshape(-1, 2)  # after 5 relaxation times
    empirical = np.cov(x.T)
    # Samples are autocorrelated (relaxation time 1 = 10 bins): effective size ~ n / 20.
    n_eff = x.shape[0] / 20
    se = np.sqrt((S**2 + np.outer(np.diag(S), np.diag(S))) / n_eff)
    assert np.all(np.abs(empirical - S) < 5 * se)


def test_double_well_spends_its_time_near_the_wells():
    ds = simulate_sde("double_well", num_trials=50, num_timesteps=200, seed=0, noise_scale=0.3)
    x = ds["latents_true"].values[:, 100:, 0]
    assert np.mean(np.abs(np.abs(x) - 1) < 0.5) > 0.9
    assert ds["y"].dims == ("trial", "time", "neuron") and np.allclose(ds["y"], ds["latents_true"])
    with pytest.raises(DataError, match="unknown parameters \\['k'\\]"):
        simulate_sde("ou", parameters={"k": 1.0}, seed=0)
    assert set(SDE_SYSTEMS) >= {"double_well", "ou", "limit_cycle", "lorenz"}
