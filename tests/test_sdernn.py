"""The SDE RNN family: low-rank reduction, transition density, programs, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import probdyn
from probdyn.algorithms.canonical import LowerTrapezoidal, LowerTrapezoidalNormal
from probdyn.algorithms.sde import EulerMaruyamaPath
from probdyn.errors import DataError, PriorError
from probdyn.models import SDERNN


def _draw(model, emission_dim, seed=0):
    """One parameter draw from the model's prior."""
    keys = jax.random.split(jax.random.key(seed), 32)
    priors = model.site_priors(emission_dim)
    return {
        name: prior.sample(key)
        for (name, prior), key in zip(priors.items(), keys[: len(priors)], strict=True)
    }


def _unit_field(model, params, x):
    r"""The network in unit space, :math:`(-x + J\phi(x) + b)/\tau`, written independently."""
    J = params["M"] @ params["N"].T / model.num_units
    return (-x + J @ jnp.tanh(x) + params["b"]) / model.tau


def test_low_rank_latent_flow_is_the_unit_flow_on_its_subspace():
    model = SDERNN(num_units=12, rank=2, tau=0.5)
    params = _draw(model, 1)
    z = jnp.array([0.3, -0.7])
    x = model.unit_states(params, z)
    # The unit-space velocity at x = M z + b_perp lies along M and equals M times dz/dt.
    np.testing.assert_allclose(
        _unit_field(model, params, x), params["M"] @ model.vector_field(params, z), atol=1e-12
    )


def test_low_rank_fixed_points_are_fixed_points_of_the_whole_network():
    model = SDERNN(num_units=10, rank=2)
    params = _draw(model, 1, seed=3)
    result = probdyn.fixed_points(model, {k: v[None] for k, v in params.items()}, num_starts=64)
    points = np.asarray(result.dataset.location[0])
    points = points[~np.isnan(points[:, 0])]
    assert len(points) >= 1
    for z in points:
        x = model.unit_states(params, jnp.asarray(z))
        np.testing.assert_allclose(_unit_field(model, params, x), 0.0, atol=1e-7)
        # Unit-space eigenvalues: the latent ones plus -1/tau for the directions off M.
        unit = np.linalg.eigvals(jax.jacobian(lambda v: _unit_field(model, params, v))(x))
        latent = np.linalg.eigvals(jax.jacobian(lambda v: model.vector_field(params, v))(z))
        expected = np.concatenate([latent, -np.ones(8)])
        np.testing.assert_allclose(np.sort_complex(unit), np.sort_complex(expected), atol=1e-8)


def test_full_rank_field_and_connectivity():
    model = SDERNN(num_units=4, nonlinearity="relu", tau=2.0)
    params = _draw(model, 1)
    x = jnp.array([0.5, -1.0, 2.0, 0.0])
    expected = (-x + params["J"] @ jax.nn.relu(x) + params["b"]) / 2.0
    np.testing.assert_allclose(model.vector_field(params, x), expected, atol=1e-12)
    np.testing.assert_array_equal(model.connectivity(params), params["J"])
    assert model.latent_dim == 4


def test_symmetric_networks_have_symmetric_connectivity_and_no_currents():
    from probdyn.analysis.nonequilibrium import ou_entropy_production_rate

    full = SDERNN(num_units=3, nonlinearity="linear", symmetric=True)
    params = _draw(full, 1, seed=4)
    J = full.connectivity(params)
    np.testing.assert_allclose(J, (params["J"] + params["J"].T) / 2, atol=1e-15)
    # Linear units, isotropic noise: drift -(I - J)x with J symmetric is in detailed balance.
    B = -jax.jacobian(lambda x: full.vector_field(params, x))(jnp.zeros(3))
    np.testing.assert_allclose(B, jnp.eye(3) - J, atol=1e-12)
    # (shifted by 3I so that every eigenvalue is positive: a stationary state exists)
    shifted = B + 3 * jnp.eye(3)
    assert np.linalg.eigvalsh(shifted).min() > 0
    assert ou_entropy_production_rate(shifted, jnp.eye(3)) == pytest.approx(0, abs=1e-9)
    low = SDERNN(num_units=8, rank=2, symmetric=True)
    params = _draw(low, 1, seed=5)
    assert "N" not in params and params["s"].shape == (2,)
    J = low.connectivity(params)
    np.testing.assert_allclose(J, J.T, atol=1e-12)
    expected = params["M"] @ jnp.diag(params["s"]) @ params["M"].T / 8
    np.testing.assert_allclose(J, expected, atol=1e-12)
    with pytest.raises(PriorError, match="symmetric"):
        SDERNN(num_units=3, symmetric="yes")


def test_transition_density_equals_the_gaussian_steps_written_out():
    rng = np.random.default_rng(0)
    paths = jnp.asarray(rng.normal(size=(3, 6, 2)))
    tril = jnp.array([[0.4, 0.0], [0.1, 0.3]])
    A = jnp.array([[-1.0, 0.5], [-0.5, -1.0]])
    density = EulerMaruyamaPath(lambda z, u: A @ z, tril, 0.1, 6, batch_shape=(3,))
    expected = np.zeros(3)
    for trial in range(3):
        z = np.asarray(paths[trial])
        expected[trial] = dist.Normal(0, 1).log_prob(z[0]).sum()
        for t in range(5):
            mean = z[t] + 0.1 * np.asarray(A) @ z[t]
            step = dist.MultivariateNormal(mean, 0.1 * tril @ tril.T)
            expected[trial] += step.log_prob(z[t + 1])
    np.testing.assert_allclose(density.log_prob(paths), expected, rtol=1e-10)


def test_transition_density_sample_has_the_step_statistics():
    tril = jnp.array([[0.5, 0.0], [0.2, 0.4]])
    density = EulerMaruyamaPath(lambda z, u: -z, tril, 0.05, 3, batch_shape=())
    paths = np.asarray(density.sample(jax.random.key(1), (20000,)))
    steps = paths[:, 1] - paths[:, 0] * (1 - 0.05)
    # Increments given the start: N(0, dt L L^T); 20000 draws give ~1% error on each entry.
    np.testing.assert_allclose(np.cov(steps.T), 0.05 * tril @ tril.T, atol=4e-4)


@pytest.mark.parametrize("observation", ["gaussian", "poisson"])
def test_prior_predictive_runs_the_non_centred_program(observation):
    model = SDERNN(num_units=6, rank=2, observation=observation, substeps=3, diffusion="lowrank")
    draws = probdyn.prior_predictive(
        model, seed=0, num_samples=2, num_trials=3, num_timesteps=5, emission_dim=4
    )
    assert draws["latents"].shape == (2, 3, 5, 2)
    assert draws["latent_noise"].shape == (2, 3, 1 + 4 * 3, 2)
    site = "y" if observation == "gaussian" else "spikes"
    assert draws[site].shape == (2, 3, 5, 4)
    # The first latent state is the first noise draw through the initial factor (canonical
    # form: z_0 ~ N(0, L_0 L_0^T)).
    np.testing.assert_allclose(
        draws["latents"][:, :, 0],
        np.einsum("sij,stj->sti", draws["initial_chol"], draws["latent_noise"][:, :, 0]),
        atol=1e-6,
    )


def test_latent_observation_checks_the_data():
    ds = probdyn.data.simulate_sde("double_well", num_trials=2, num_timesteps=10, seed=0)
    with pytest.raises(DataError, match="latent dim is 3"):
        SDERNN(num_units=5, rank=3, observation="latent").prepare(ds)
    missing = ds.copy(deep=True)
    missing["y"][0, 3, 0] = np.nan
    with pytest.raises(DataError, match="missing"):
        SDERNN(num_units=5, rank=2, observation="latent").prepare(missing)
    with pytest.raises(DataError, match="input_dim=1"):
        SDERNN(num_units=5, rank=2, observation="latent", input_dim=1).prepare(ds)


def test_bad_hyperparameters_and_priors_are_named():
    with pytest.raises(PriorError, match="rank=7 exceeds"):
        SDERNN(num_units=5, rank=7)
    with pytest.raises(PriorError, match="diffusion='full'"):
        SDERNN(num_units=5, diffusion="full")
    with pytest.raises(PriorError, match="nonlinearity"):
        SDERNN(num_units=5, nonlinearity="sigmoid")
    with pytest.raises(PriorError, match="unknown prior site"):
        SDERNN(num_units=5, rank=2, priors={"J": dist.Normal(0, 1)})
    model = SDERNN(
        num_units=5, rank=2, parameterisation="redundant", priors={"sigma": dist.Normal(0, 1)}
    )
    with pytest.raises(PriorError, match="support"):
        model.site_priors(2)


def test_priors_on_sites_the_form_does_not_have_are_refused_with_what_to_do():
    with pytest.raises(PriorError, match="no site 'sigma'.*parameterisation='redundant'"):
        SDERNN(num_units=5, rank=2, priors={"sigma": dist.HalfNormal(1.0)})
    with pytest.raises(PriorError, match="lower trapezoidal"):
        SDERNN(num_units=5, rank=2, priors={"C": dist.Normal(jnp.zeros((3, 2)), 1.0)})
    with pytest.raises(PriorError, match="no site 'initial_chol'"):
        SDERNN(
            num_units=5,
            rank=2,
            parameterisation="redundant",
            priors={"initial_chol": LowerTrapezoidalNormal(2, 2)},
        )
    with pytest.raises(PriorError, match="no canonical form"):
        SDERNN(
            num_units=5, rank=2, symmetric=True, diffusion="lowrank", parameterisation="canonical"
        )
    # Where the coordinates are already fixed the sites stay as they were, priors included.
    full = SDERNN(num_units=3, priors={"sigma": dist.HalfNormal(2.0)})
    assert "sigma" in full.site_priors(2) and "initial_scale" not in full.site_priors(2)
    with pytest.raises(PriorError, match="one form"):
        full.canonical_form(_draw(full, 2))
    # A symmetric network keeps a free readout: only diagonal maps preserve N = M diag(s).
    symmetric = SDERNN(num_units=5, rank=2, symmetric=True, priors={"C": dist.Normal(0.0, 2.0)})
    C = symmetric.site_priors(3)["C"]
    assert C.event_shape == (3, 2) and not isinstance(C.support, LowerTrapezoidal)


FORMS = [
    {},
    {"diffusion": "diagonal"},
    {"diffusion": "lowrank"},
    {"symmetric": True},
    {"symmetric": True, "diffusion": "diagonal"},
    {"input_dim": 1},
]


@pytest.mark.parametrize("options", FORMS, ids=lambda o: "-".join(map(str, o.values())) or "iso")
def test_the_canonical_form_is_the_same_network_seen_in_other_coordinates(options):
    red = SDERNN(num_units=6, rank=2, substeps=2, tau=0.7, parameterisation="redundant", **options)
    can = SDERNN(num_units=6, rank=2, substeps=2, tau=0.7, **options)
    params = _draw(red, 3, seed=1)
    canonical = can.canonical_form(params)
    assert set(canonical) == set(can.default_priors(3))
    assert all(bool(can.site_priors(3)[k].support(v)) for k, v in canonical.items())
    np.testing.assert_allclose(can.connectivity(canonical), red.connectivity(params), atol=1e-10)
    # z'' = T z: read T off the left factors, M'' = M T^{-1}.
    T = jnp.linalg.inv(jnp.linalg.pinv(params["M"]) @ canonical["M"])
    noise_map = T @ red.diffusion_tril(params) * red.tau  # (T Sigma_z): orthogonal
    np.testing.assert_allclose(noise_map @ noise_map.T, np.eye(2), atol=1e-10)
    xi = jax.random.normal(jax.random.key(5), (1 + 9 * 2, 2))
    start = T @ xi[0]
    if "initial_chol" in canonical:
        xi0 = jnp.linalg.solve(canonical["initial_chol"], start)
    else:
        xi0 = start / canonical["initial_scale"]
    xi_canonical = jnp.concatenate([xi0[None], xi[1:] @ noise_map.T])
    # The same noise density (the maps are orthogonal) and the same readout of the path.
    np.testing.assert_allclose(jnp.sum(xi_canonical**2), jnp.sum(xi**2), rtol=1e-10)
    inputs = jnp.linspace(-1, 1, 10)[:, None] if "input_dim" in options else None
    paths = [
        jax.vmap(lambda z, m=m, q=q: m.emission_mean(q, z))(m.latent_path(q, n, 0.1, inputs))
        for m, q, n in ((red, params, xi), (can, canonical, xi_canonical))
    ]
    np.testing.assert_allclose(paths[1], paths[0], atol=1e-9)
    # And back: the redundant form of the canonical draw has the canonical form it came from.
    back = can.canonical_form(can.redundant_form(canonical))
    for name, value in canonical.items():
        np.testing.assert_allclose(back[name], value, atol=1e-9, err_msg=name)


def test_rotated_networks_share_one_canonical_form_and_other_networks_do_not():
    model = SDERNN(num_units=6, rank=2)
    params = _draw(SDERNN(num_units=6, rank=2, parameterisation="redundant"), 3, seed=2)
    angle = 1.1
    G = jnp.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rotated = {**params, "M": params["M"] @ G, "N": params["N"] @ G, "C": params["C"] @ G}
    one, other = model.canonical_form(params), model.canonical_form(rotated)
    for name in one:
        np.testing.assert_allclose(other[name], one[name], atol=1e-10, err_msg=name)
    # Control: rotating the left factors alone changes the network, and its canonical form.
    changed = model.canonical_form({**params, "M": params["M"] @ G})
    assert not np.allclose(changed["M"], one["M"], atol=1e-3)


@pytest.mark.slow
def test_drift_diffusion_matching_recovers_the_double_well():
    """A 20-unit rank-2 network fitted to double-well paths carries its drift and diffusion.

    MAP first, then a full-covariance Gaussian guide started there (docs/models/sdernn.md).
    """
    from probdyn.algorithms.sde import matching_errors
    from probdyn.data import systems
    from probdyn.inference import svi

    ds = probdyn.data.simulate_sde("double_well", num_trials=100, seed=1)
    model = SDERNN(num_units=20, rank=2, observation="latent")
    point = svi(model, ds, num_steps=3000, seed=0, guide="delta", progress=False)
    fit = svi(
        model,
        ds,
        num_steps=3000,
        seed=0,
        guide="mvn",
        learning_rate=0.005,
        init=point,
        init_scale=0.01,
        progress=False,
    )
    draws = fit.sample_posterior(200, seed=1)
    errors = matching_errors(
        model,
        draws,
        lambda x: systems.double_well(x, {}),
        float(ds.noise_scale_true),
        ds.y.values,
    )
    assert errors["drift_error"] < 0.2
    assert errors["diffusion_error"] < 0.1
    summary = probdyn.fixed_points(model, draws, states=ds.y.values, seed=0).summary()
    found = summary[summary.p_exists > 0.9]
    assert len(found) == 3
    for (x0, x1), name in [
        ((-1.0, 0.0), "stable node"),
        ((0.0, 0.0), "saddle"),
        ((1.0, 0.0), "stable node"),
    ]:
        distance = np.hypot(found.x0_mean - x0, found.x1_mean - x1)
        row = found.loc[distance.idxmin()]
        assert distance.min() < 0.15
        assert row["class"] == name and row.p_class > 0.9


def test_diffrax_solvers_integrate_the_same_noise():
    pytest.importorskip("diffrax")
    import jax.scipy.linalg

    rng = np.random.default_rng(0)
    noise = jnp.asarray(rng.normal(size=(1 + 9 * 4, 3)))
    inputs = jnp.asarray(rng.normal(size=(10, 1)))
    euler = SDERNN(num_units=3, input_dim=1, substeps=4)
    params = _draw(euler, 1, seed=2)
    built_in = euler.latent_path(params, noise, 0.1, inputs)
    through_diffrax = SDERNN(num_units=3, input_dim=1, substeps=4, solver="Euler")
    np.testing.assert_allclose(
        through_diffrax.latent_path(params, noise, 0.1, inputs), built_in, atol=1e-10
    )
    # Without noise and with a linear unit, the path is exp((J - I) t) z0: Heun's error is
    # second order in the step, Euler's first order.
    linear = {**params, "b": jnp.zeros(3), "sigma": jnp.array(0.0)}
    quiet = noise.at[1:].set(0.0)
    exact = np.stack(
        [jax.scipy.linalg.expm((linear["J"] - jnp.eye(3)) * 0.1 * t) @ noise[0] for t in range(10)]
    )
    errors = {}
    for solver in ("euler", "Heun"):
        model = SDERNN(num_units=3, nonlinearity="linear", substeps=4, solver=solver)
        errors[solver] = np.abs(model.latent_path(linear, quiet, 0.1) - exact).max()
    assert errors["Heun"] < errors["euler"] / 10
    with pytest.raises(PriorError, match="solver='rk4'"):
        SDERNN(num_units=3, solver="rk4")
