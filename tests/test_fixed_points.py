"""Fixed-point posterior: analytic systems, identifiability across draws, counts, I/O, errors."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import xarray as xr
from sampling import short_nuts

from probdyn import ConfigError
from probdyn.analysis.fixed_points import (
    CLASSES,
    Dynamics,
    classify,
    fixed_points,
    levenberg_marquardt,
)
from probdyn.data import systems
from probdyn.models import LDS


def _points(result):
    """Found points (fixed_point, latent) and class names of a single-draw result."""
    ds = result.dataset
    exists = ds["exists"].values[0]
    names = [CLASSES[c] for c in ds["stability"].values[0, exists]]
    return ds["location"].values[0, exists], names


def _nearest(points, target):
    return points[np.argmin(np.linalg.norm(points - target, axis=1))]


def test_lorenz_origin_saddle_and_two_saddle_foci():
    sigma, rho, beta = 10.0, 28.0, 8.0 / 3.0
    dynamics = Dynamics(systems.lorenz, {"sigma": sigma, "rho": rho, "beta": beta}, 3)
    result = fixed_points(dynamics, box=((-20, -30, 0), (20, 30, 50)), num_starts=100, seed=1)
    points, names = _points(result)
    c = np.sqrt(beta * (rho - 1))
    truth = np.array([[0, 0, 0], [c, c, rho - 1], [-c, -c, rho - 1]])
    assert len(points) == 3
    for target in truth:
        np.testing.assert_allclose(_nearest(points, target), target, atol=1e-6)
    assert names == ["saddle"] * 3
    # Origin: eigenvalues -beta and (-(sigma+1) +- sqrt((sigma+1)^2 + 4 sigma (rho-1))) / 2.
    origin = np.argmin(np.linalg.norm(points, axis=1))
    root = np.sqrt((sigma + 1) ** 2 + 4 * sigma * (rho - 1))
    expected = np.sort([-beta, (-(sigma + 1) + root) / 2, (-(sigma + 1) - root) / 2])[::-1]
    real = result.dataset["eigenvalue_real"].values[0, result.dataset["exists"].values[0]]
    imag = result.dataset["eigenvalue_imag"].values[0, result.dataset["exists"].values[0]]
    np.testing.assert_allclose(real[origin], expected, rtol=1e-9)
    # The other two are saddle-foci: a complex pair with positive real part, one real negative.
    for k in set(range(3)) - {origin}:
        assert real[k, 0] > 0 and abs(imag[k, 0]) > 1 and imag[k, 2] == 0 and real[k, 2] < 0


def test_double_well_two_stable_nodes_and_a_saddle():
    result = fixed_points(Dynamics(systems.double_well, {}, 2), box=(-2, 2), num_starts=60)
    points, names = _points(result)
    found = dict(zip(map(tuple, np.round(points, 6) + 0.0), names, strict=True))
    assert found == {(-1.0, 0.0): "stable node", (1.0, 0.0): "stable node", (0.0, 0.0): "saddle"}
    for target in ([1, 0], [-1, 0], [0, 0]):
        np.testing.assert_allclose(_nearest(points, np.array(target)), target, atol=1e-6)


LINEAR_FLOWS = {
    "stable node": [[-1.0, 0.0], [0.0, -3.0]],
    "stable spiral": [[-0.5, -2.0], [2.0, -0.5]],
    "unstable node": [[2.0, 1.0], [0.0, 1.0]],
    "unstable spiral": [[0.3, 1.0], [-1.0, 0.3]],
    "saddle": [[1.0, 2.0], [2.0, 1.0]],
}


@pytest.mark.parametrize("expected", list(LINEAR_FLOWS))
def test_linear_flow_point_and_class(expected):
    M, c = np.array(LINEAR_FLOWS[expected]), np.array([0.7, -1.3])
    flow = Dynamics(lambda x, p: jnp.asarray(M) @ x + c, {}, 2)
    points, names = _points(fixed_points(flow, box=(-5, 5), num_starts=16))
    np.testing.assert_allclose(points, [-np.linalg.solve(M, c)], atol=1e-9)
    assert names == [expected]


@pytest.mark.parametrize(
    ("expected", "A"),
    [
        ("stable node", [[0.5, 0.1], [0.0, -0.8]]),
        ("stable spiral", [[0.6, -0.5], [0.5, 0.6]]),
        ("unstable spiral", [[1.0, -0.5], [0.5, 1.0]]),
        ("saddle", [[1.5, 0.0], [0.3, 0.4]]),
        ("unstable node", [[1.5, 0.0], [0.0, -2.0]]),
    ],
)
def test_linear_map_point_and_class(expected, A):
    A, b = np.array(A), np.array([0.4, 0.2])
    linear_map = Dynamics(lambda x, p: jnp.asarray(A) @ x + b, {}, 2, kind="map")
    points, names = _points(fixed_points(linear_map, box=(-5, 5), num_starts=16))
    np.testing.assert_allclose(points, [np.linalg.solve(np.eye(2) - A, b)], atol=1e-9)
    assert names == [expected]


def test_marginal_class_by_growth_rate():
    assert CLASSES[int(classify(np.array([0.0, -1.0]), "flow", 1e-3))] == "marginal"
    assert CLASSES[int(classify(np.array([1j, -1j]), "flow", 1e-3))] == "marginal"
    assert CLASSES[int(classify(np.array([np.exp(0.5j), 0.3]), "map", 1e-3))] == "marginal"
    assert CLASSES[int(classify(np.array([-0.9, 0.3]), "map", 1e-3))] == "stable node"


def test_levenberg_marquardt_least_squares_matches_lstsq():
    rng = np.random.default_rng(0)
    A, y = rng.normal(size=(5, 2)), rng.normal(size=5)
    x, _ = levenberg_marquardt(
        lambda x: jnp.asarray(A) @ x - y, jnp.zeros(2), tol=1e-10, max_steps=100
    )
    np.testing.assert_allclose(x, np.linalg.lstsq(A, y, rcond=None)[0], atol=1e-8)


def _equivalent_lds_draws(num_draws: int, seed: int):
    """Draws of one LDS seen through random invertible latent maps: same system, other coords."""
    rng = np.random.default_rng(seed)
    A0 = 0.8 * np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
    b0, C0, d0 = np.array([0.3, -0.1]), rng.normal(size=(4, 2)), rng.normal(size=4)
    M = rng.normal(size=(num_draws, 2, 2)) + 2 * np.eye(2)
    Minv = np.linalg.inv(M)
    draws = {
        "A": M @ A0 @ Minv,
        "b": np.einsum("sij,j->si", M, b0),
        "C": C0 @ Minv,
        "d": np.broadcast_to(d0, (num_draws, 4)),
        "q": np.ones((num_draws, 2)),
        "r": np.ones((num_draws, 4)),
    }
    x_star = np.linalg.solve(np.eye(2) - A0, b0)
    return draws, C0 @ x_star + d0


def test_draws_differing_by_latent_maps_match_in_observation_space_and_align():
    draws, y_star = _equivalent_lds_draws(12, seed=3)
    result = fixed_points(
        LDS(parameterisation="redundant", latent_dim=2), draws, num_starts=8, seed=0
    )
    ds = result.dataset
    assert ds.sizes["fixed_point"] == 1 and ds["exists"].values.all()
    np.testing.assert_allclose(
        ds["observation_mean"].values[:, 0], np.tile(y_star, (12, 1)), atol=1e-8
    )
    # Own coordinates differ between draws; aligned ones coincide with the reference draw's.
    assert ds["location"].values[:, 0].std(axis=0).min() > 0.05
    aligned = ds["aligned_location"].values[:, 0]
    np.testing.assert_allclose(aligned, np.tile(aligned[0], (12, 1)), atol=1e-7)
    summary = result.summary()
    assert summary.loc[0, "class"] == "stable spiral" and summary.loc[0, "p_class"] == 1.0
    assert result.in_credible_region(y_star, 0) is True


@dataclasses.dataclass(frozen=True)
class Pitchfork:
    """f(x) = (a x1 - x1^3, -x2): three points for a > 0, one for a < 0 (a per draw)."""

    kind = "flow"
    latent_dim = 2

    def vector_field(self, params, x, u=None):
        return jnp.stack([params["a"] * x[0] - x[0] ** 3, -x[1]])

    def emission_mean(self, params, x):
        return x


def test_number_and_classes_of_points_vary_across_draws():
    a = np.array([1.0] * 14 + [-1.0] * 6)
    result = fixed_points(Pitchfork(), {"a": a}, box=(-2, 2), num_starts=40, seed=0)
    counts = result.count_distribution()
    assert counts.loc[3, "total"] == pytest.approx(0.7) and counts.loc[1, "total"] == pytest.approx(
        0.3
    )
    assert counts.loc[2, "stable node"] == pytest.approx(0.7)
    assert counts.loc[1, "stable node"] == pytest.approx(0.3)
    summary = result.summary()
    origin = summary.index[np.abs(summary["x0_mean"]) < 1e-6][0]
    assert summary.loc[origin, "p_exists"] == 1.0
    assert summary.loc[origin, "class"] == "saddle"
    assert summary.loc[origin, "p_class"] == pytest.approx(0.7)
    assert summary.loc[origin, "p_stable"] == pytest.approx(0.3)
    wells = summary.drop(origin)
    assert len(wells) == 2 and np.allclose(wells["p_exists"], 0.7)
    assert sorted(np.round(wells["x0_mean"], 9)) == [-1.0, 1.0]
    assert (wells["class"] == "stable node").all()


def test_dataset_joins_a_datatree_and_survives_netcdf(tmp_path):
    a = np.array([1.0, 1.0, -1.0])
    result = fixed_points(Pitchfork(), {"a": a}, box=(-2, 2), num_starts=20, seed=0)
    tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"a": (("chain", "draw"), a[None])})})
    joined = result.attach(tree)
    assert "fixed_points" not in tree.children
    joined.to_netcdf(tmp_path / "run.nc")
    reloaded = xr.open_datatree(tmp_path / "run.nc")
    xr.testing.assert_identical(reloaded["fixed_points"].to_dataset().load(), result.dataset)
    # The saved tree is a valid input too: same points from its posterior group.
    again = fixed_points(Pitchfork(), reloaded, box=(-2, 2), num_starts=20, seed=0)
    xr.testing.assert_identical(again.dataset, result.dataset)


def test_figures_show_every_point(tmp_path):
    pytest.importorskip("matplotlib")
    a = np.array([1.0, 1.0, -1.0])
    result = fixed_points(Pitchfork(), {"a": a}, box=(-2, 2), num_starts=20, seed=0)
    fig = result.phase_portrait()
    shown = sum(
        len(c.get_offsets())
        for c in fig.axes[0].collections
        if c.get_offsets().ndim == 2 and len(c.get_offsets()) and c.get_label() in CLASSES
    )
    assert shown == int(result.dataset["exists"].sum())
    figure = result.eigenvalue_figure()
    assert len(figure.axes[0].patches) == result.dataset.sizes["fixed_point"]
    lorenz = fixed_points(
        Dynamics(systems.lorenz, {"sigma": 10.0, "rho": 28.0, "beta": 8 / 3}, 3),
        box=((-20, -30, 0), (20, 30, 50)),
        num_starts=30,
    )
    assert lorenz.phase_portrait().axes[0].get_xlabel() == "PC 1 of the points"


def test_bad_requests_name_the_problem():
    dynamics = Dynamics(systems.double_well, {}, 2)
    with pytest.raises(ConfigError, match="box"):
        fixed_points(dynamics)
    with pytest.raises(ConfigError, match="upper bound"):
        fixed_points(dynamics, box=(1, -1))
    with pytest.raises(ConfigError, match="latent dims"):
        fixed_points(dynamics, states=np.zeros((5, 3)))
    with pytest.raises(ConfigError, match="posterior must be"):
        fixed_points(LDS(latent_dim=2), [1, 2, 3])
    with pytest.raises(ConfigError, match="leading draw axis"):
        fixed_points(Pitchfork(), {"a": np.ones(3), "b": np.ones(4)}, box=(-1, 1))
    with pytest.raises(ConfigError, match="posterior=None"):
        fixed_points(LDS(latent_dim=2))


def test_starts_from_states_find_the_point_near_them():
    # Only the well the states visit is found when starts stay close to the states.
    states = np.random.default_rng(0).normal([1.0, 0.0], 0.05, size=(50, 2))
    result = fixed_points(Dynamics(systems.double_well, {}, 2), states=states, num_starts=10)
    points, names = _points(result)
    np.testing.assert_allclose(points, [[1.0, 0.0]], atol=1e-8)
    assert names == ["stable node"]


# -- posterior case: NUTS on a 2-D LDS with a known fixed point -----------------------------------

ROTATION = 0.85 * np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
OFFSET = np.array([0.3, -0.2])
READOUT = np.array([[1.0, 0.3], [-0.5, 1.0], [0.7, 0.7]])
BASELINE = np.array([0.5, -0.3, 0.1])
NOISE = 0.3


def _lds_recording(seed: int, num_trials: int = 4, num_timesteps: int = 30) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    x = np.zeros((num_trials, num_timesteps, 2))
    x[:, 0] = rng.normal(size=(num_trials, 2))
    for t in range(1, num_timesteps):
        x[:, t] = x[:, t - 1] @ ROTATION.T + OFFSET + NOISE * rng.normal(size=(num_trials, 2))
    y = x @ READOUT.T + BASELINE + NOISE * rng.normal(size=(num_trials, num_timesteps, 3))
    return xr.Dataset({"y": (("trial", "time", "neuron"), y)}, attrs={"dt": 1.0})


@pytest.mark.slow
def test_credible_regions_cover_the_true_fixed_point_over_20_datasets():
    # Readout and noise known (Delta priors), so the latent space is identifiable too; A and b
    # (the dynamics) are inferred under their default priors.
    model = LDS(
        parameterisation="redundant",
        latent_dim=2,
        priors={
            "q": dist.Delta(jnp.full(2, NOISE)),
            "r": dist.Delta(jnp.full(3, NOISE)),
            "C": dist.Delta(jnp.asarray(READOUT)),
            "d": dist.Delta(jnp.asarray(BASELINE)),
        },
    )
    x_star = np.linalg.solve(np.eye(2) - ROTATION, OFFSET)
    y_star = READOUT @ x_star + BASELINE
    covered = {"observation": 0, "latent": 0}
    for seed in range(20):
        # Cold NUTS: faster here than a warm start (docs/geometry.md has both times).
        posterior = short_nuts(
            model, _lds_recording(seed), seed=seed, num_warmup=200, num_samples=200
        )
        result = fixed_points(model, posterior, num_starts=8, seed=seed)
        summary = result.summary()
        assert len(summary) == 1 and summary.loc[0, "p_exists"] == 1.0
        assert summary.loc[0, "class"] == "stable spiral" and summary.loc[0, "p_class"] > 0.9
        covered["observation"] += result.in_credible_region(y_star, 0, level=0.9)
        covered["latent"] += result.in_credible_region(x_star, 0, level=0.9, space="latent")
    # 90% regions: Binomial(20, 0.9) falls below 14 with probability 0.002.
    assert 14 <= covered["observation"] <= 20 and 14 <= covered["latent"] <= 20, covered


# -- a trained discrete-time RNN through the same call -------------------------------------------


class TrainedRNN:
    """An autonomous tanh RNN h' = tanh(W h + b) with a linear readout y = C h + d."""

    kind = "map"
    latent_dim = 8

    def vector_field(self, params, h, u=None):
        return jnp.tanh(params["W"] @ h + params["b"])

    def emission_mean(self, params, h):
        return params["C"] @ h + params["d"]


def _train_rnn(targets, seed):
    """Fit W, b, C, d and per-trial initial states to noise-free trajectories by Adam."""
    import jax
    import optax

    H, (num_trials, T, N) = TrainedRNN.latent_dim, targets.shape
    keys = jax.random.split(jax.random.key(seed), 3)
    params = {
        "W": 0.5 * jax.random.normal(keys[0], (H, H)) / np.sqrt(H),
        "b": jnp.zeros(H),
        "C": jax.random.normal(keys[1], (N, H)) / np.sqrt(H),
        "d": jnp.zeros(N),
        "h0": 0.1 * jax.random.normal(keys[2], (num_trials, H)),
    }
    rnn = TrainedRNN()

    def loss(p):
        def roll(h0):
            def step(h, _):
                return rnn.vector_field(p, h), h

            return jax.lax.scan(step, h0, None, length=T)[1]

        states = jax.vmap(roll)(p["h0"])
        return jnp.mean((states @ p["C"].T + p["d"] - targets) ** 2)

    optimizer = optax.adam(1e-2)

    @jax.jit
    def update(p, state):
        value, grad = jax.value_and_grad(loss)(p)
        updates, state = optimizer.update(grad, state)
        return optax.apply_updates(p, updates), state, value

    state = optimizer.init(params)
    for _ in range(1500):
        params, state, value = update(params, state)
    return params, float(value)


def test_a_trained_rnn_goes_through_the_same_call():
    # Targets: noise-free trajectories of a damped rotation (|lambda| = 0.9, angle 0.3) seen by
    # three channels with offsets; its one fixed point is a stable spiral at y* = d.
    A = 0.9 * np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    C, d = np.array([[1.0, 0.0], [0.4, 1.0], [-0.6, 0.5]]), np.array([0.2, -0.1, 0.3])
    starts = np.random.default_rng(0).normal(0, 0.6, size=(6, 2))
    x = np.stack([np.stack([np.linalg.matrix_power(A, t) @ s for t in range(25)]) for s in starts])
    targets = jnp.asarray(x @ C.T + d)
    trained = [_train_rnn(targets, seed) for seed in range(3)]
    assert max(value for _, value in trained) < 1e-3
    draws = {k: np.stack([p[k] for p, _ in trained]) for k in ("W", "b", "C", "d")}
    result = fixed_points(TrainedRNN(), draws, box=(-1.0, 1.0), num_starts=64, seed=0)
    summary = result.summary()
    # The networks' point that reproduces the target's: present in every network, a stable
    # spiral, at y* = d, with the target's leading eigenvalue.
    distance = np.linalg.norm(summary[["y0_mean", "y1_mean", "y2_mean"]].values - d, axis=1)
    point = summary.iloc[int(np.argmin(distance))]
    assert distance.min() < 0.05 and point["p_exists"] == 1.0
    assert point["class"] == "stable spiral" and point["p_class"] == 1.0
    lead = point["lead_real_mean"] + 1j * point["lead_imag_abs_mean"]
    assert abs(lead - 0.9 * np.exp(0.3j)) < 0.05


def test_a_slow_root_reached_from_many_starts_is_one_point():
    # F(x) = x* + A (x - x*) with a slow direction (eigenvalue 0.999): a residual under tol
    # leaves each end point up to tol / 0.001 from x*, far beyond the merge radius alone.
    A = np.diag([0.999, 0.3])
    root = np.array([0.4, -0.2])
    slow_map = Dynamics(
        lambda x, p: jnp.asarray(root) + jnp.asarray(A) @ (x - jnp.asarray(root)),
        {},
        2,
        kind="map",
    )
    result = fixed_points(slow_map, box=(-3, 3), num_starts=24, seed=1, tol=1e-4)
    assert result.dataset.sizes["fixed_point"] == 1
    assert int(result.dataset.exists.values.sum()) == 1
    np.testing.assert_allclose(result.dataset.location.values[0, 0], root, atol=0.2)
    # The control: two distinct roots (a fold in the map) stay two points.
    double_well = Dynamics(systems.double_well, {}, 2)
    assert fixed_points(double_well, box=(-2, 2), num_starts=60).dataset.sizes["fixed_point"] == 3


def test_matching_survives_points_whose_observations_overflow():
    from probdyn.analysis.fixed_points.matching import match_points as _match

    reference = np.array([[0.0, 0.0], [5.0, 5.0]], np.float32)
    overflowing = np.array([[0.1, 0.0], [np.inf, 3e38]], np.float32)
    assignment, ref = _match([reference, overflowing], match_tol=0.5)
    assert ref == 0 and assignment[1][0] == 0 and assignment[1][1] >= 2


def test_matching_follows_a_point_whose_posterior_spreads_beyond_the_data():
    from probdyn.analysis.fixed_points.matching import match_points

    rng = np.random.default_rng(0)
    # One point per draw, its predicted observation spread 3 data units over 20 channels (a
    # posterior far wider than the trajectories): one point, in every draw.
    broad = [rng.normal(0.0, 3.0, size=(1, 20)) for _ in range(100)]
    assignment, _ = match_points(broad, match_tol=0.5)
    assert {int(a[0]) for a in assignment} == {0}
    # Control: two tight modes, 70 draws near +5 and 30 near -5: two points, not one.
    modes = [rng.normal(5.0 if d < 70 else -5.0, 0.1, size=(1, 20)) for d in range(100)]
    assignment, reference = match_points(modes, match_tol=0.5)
    labels = np.array([int(a[0]) for a in assignment])
    assert len(set(labels)) == 2
    assert (labels[:70] == labels[reference]).all() and (labels[70:] != labels[reference]).all()
