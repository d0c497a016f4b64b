"""NODE sequential autoencoders: dynamics against independent references, fitting, new trials."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from scipy.integrate import solve_ivp

import probdyn
from probdyn.data import simulate_attractor
from probdyn.errors import ConfigError, PriorError
from probdyn.inference import DiagnosticWarning, nuts, svi
from probdyn.inference.density import bind
from probdyn.model import prior_predictive
from probdyn.models import LDS, NODE


def random_params(model: NODE, seed: int = 0) -> dict:
    draws = prior_predictive(
        model, seed=seed, num_samples=1, num_trials=2, num_timesteps=4, emission_dim=5
    )
    return {k: jnp.asarray(v[0]) for k, v in draws.items() if k in model.default_priors(5)}


def test_node_rollout_matches_an_adaptive_ode_solver():
    model = NODE(latent_dim=3, num_neurons=5, hidden=16, substeps=8, tau=0.5)
    params = random_params(model)
    z0 = jnp.array([0.3, -0.5, 0.8])
    dt, T = 0.2, 6
    path = model.rollout(params, z0, T, dt)

    def field(t, z):
        return np.asarray(model.vector_field(params, jnp.asarray(z, jnp.float32)), np.float64)

    reference = solve_ivp(
        field, (0, dt * (T - 1)), np.asarray(z0), t_eval=np.arange(T) * dt, rtol=1e-10, atol=1e-10
    ).y.T
    np.testing.assert_allclose(path, reference, atol=2e-5)


def test_gru_dynamics_equal_flax_gru_cell_with_zero_input():
    D = 4
    model = NODE(latent_dim=D, num_neurons=5, dynamics="gru")
    cell = nn.GRUCell(features=D)
    z = jax.random.normal(jax.random.key(1), (D,))
    variables = cell.init(jax.random.key(2), z, jnp.zeros(3))
    p = variables["params"]
    params = {
        "U": jnp.stack([p["hr"]["kernel"].T, p["hz"]["kernel"].T, p["hn"]["kernel"].T]),
        "a": jnp.stack([p["ir"]["bias"], p["iz"]["bias"], p["in"]["bias"], p["hn"]["bias"]]),
    }
    expected, _ = cell.apply(variables, z, jnp.zeros(3))
    np.testing.assert_allclose(model.step(params, z, dt=None), expected, rtol=1e-5, atol=1e-6)
    assert model.kind == "map"


def test_ablations_are_the_stated_maps():
    z = jnp.array([0.2, -0.4])
    mlp = NODE(latent_dim=2, num_neurons=3, dynamics="mlp", hidden=5)
    p = random_params(mlp)
    expected = p["W2"] @ jnp.tanh(p["W1"] @ z + p["b1"]) + p["b2"]
    np.testing.assert_allclose(mlp.step(p, z, dt=None), expected, rtol=1e-6)
    rnn = NODE(latent_dim=2, num_neurons=3, dynamics="rnn")
    q = random_params(rnn)
    np.testing.assert_allclose(rnn.step(q, z, dt=None), jnp.tanh(q["U"] @ z + q["a"]), rtol=1e-6)
    residual = NODE(latent_dim=2, num_neurons=3, dynamics="residual")
    assert set(residual.default_priors(3)) == set(rnn.default_priors(3))
    np.testing.assert_allclose(
        residual.step(q, z, dt=None), z + jnp.tanh(q["U"] @ z + q["a"]), rtol=1e-6
    )
    assert residual.kind == "map"


def test_flow_readout_with_zero_mlp_is_the_zero_padded_state():
    model = NODE(latent_dim=2, num_neurons=5, readout="flow", readout_hidden=7)
    params = random_params(model)
    params |= {"R2": jnp.zeros((5, 7)), "r2": jnp.zeros(5)}
    z = jnp.array([[0.5, -1.0]])
    np.testing.assert_allclose(model.log_rates(params, z), [[0.5, -1.0, 0, 0, 0]])
    with pytest.raises(PriorError, match="latent_dim=6 exceeds num_neurons=5"):
        NODE(latent_dim=6, num_neurons=5, readout="flow")


def test_flow_readout_is_injective_for_any_weights():
    # Weights ten times the prior's scale: the unconstrained step 0.1 would make each residual
    # step's Lipschitz constant far above 1; the step size keeps it at 0.9.
    model = NODE(latent_dim=3, num_neurons=5, readout="flow", readout_hidden=8, readout_steps=5)
    params = {k: 10.0 * v for k, v in random_params(model, seed=3).items()}
    h = float(model.flow_step_size(params))
    R1, r1, R2, r2 = (np.asarray(params[k], float) for k in ("R1", "r1", "R2", "r2"))
    gain = np.linalg.norm(R1, 2) * np.linalg.norm(R2, 2)
    assert h * gain == pytest.approx(0.9) and h < 0.1

    def residual(u):
        return h * (np.tanh(u @ R1.T + r1) @ R2.T + r2)

    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, 200, 5)) * 3
    ratio = np.linalg.norm(residual(u) - residual(v), axis=1) / np.linalg.norm(u - v, axis=1)
    assert ratio.max() < 0.9
    # Invert: each step by the fixed point of u = v - residual(u), from the last step back;
    # the latents come back and the padding is zero again.
    z = rng.normal(size=(50, 3)) * 2
    eta = np.asarray(model.log_rates(params, jnp.asarray(z)), float)
    u = eta
    for _ in range(model.readout_steps):
        target, u = u, u.copy()
        for _ in range(300):
            u = target - residual(u)
    np.testing.assert_allclose(u[:, :3], z, atol=1e-8)
    np.testing.assert_allclose(u[:, 3:], 0.0, atol=1e-8)


def test_fixed_point_of_a_known_node_field():
    # f(z) = -tanh(2 z) / 2: one stable node at 0 with eigenvalues -1.
    D, H = 2, 2
    model = NODE(latent_dim=D, num_neurons=3, hidden=H)
    params = random_params(model)
    params |= {
        "W1": 2 * jnp.eye(D),
        "b1": jnp.zeros(H),
        "W2": -0.5 * jnp.eye(D),
        "b2": jnp.zeros(D),
    }
    draws = {k: np.asarray(v)[None] for k, v in params.items()}
    points = probdyn.fixed_points(model, draws, num_starts=16, seed=0)
    assert points.dataset.sizes["fixed_point"] == 1
    np.testing.assert_allclose(points.dataset.location.values[0, 0], [0, 0], atol=1e-6)
    np.testing.assert_allclose(points.dataset.eigenvalue_real.values[0, 0], [-1, -1], atol=1e-5)
    np.testing.assert_allclose(points.dataset.eigenvalue_imag.values[0, 0], [0, 0], atol=1e-6)


def test_bad_hyperparameters_and_guides_name_the_problem():
    with pytest.raises(PriorError, match="dynamics='lstm'"):
        NODE(latent_dim=3, num_neurons=5, dynamics="lstm")
    with pytest.raises(PriorError, match="latent_dim=0"):
        NODE(latent_dim=0, num_neurons=5)
    ds = simulate_attractor("Arneodo", num_trials=4, num_timesteps=10, num_neurons=5, seed=0)
    lds = LDS(latent_dim=2, observation="poisson")
    with pytest.raises(ConfigError, match="needs a model with an encoder"):
        svi(lds, ds, num_steps=1, seed=0, guide="amortised", progress=False)


@pytest.mark.parametrize("guide", ["amortised", "amortised-delta"])
def test_amortised_fit_lowers_the_loss_and_infers_new_trials(guide):
    ds = simulate_attractor("Arneodo", num_trials=40, num_timesteps=20, num_neurons=6, seed=1)
    train, new = ds.isel(trial=slice(0, 32)), ds.isel(trial=slice(32, 40))
    model = NODE(latent_dim=3, num_neurons=6, hidden=16, encoder_hidden=8)
    result = svi(
        model,
        train,
        num_steps=60,
        seed=0,
        guide=guide,
        batch_size=16,
        learning_rate=0.01,
        progress=False,
    )
    assert result.losses[-20:].mean() < result.losses[:20].mean()
    draws = result.sample_posterior(5, seed=1, data=new)
    assert draws["latents"].shape == (5, 8, 20, 3)
    assert draws["initial"].shape == (5, 8, 3)
    spread = np.ptp(draws["W1"], axis=0).max()
    assert (spread > 0) if guide == "amortised" else (spread == 0)
    rates = model.emission_mean(
        {k: draws[k][0] for k in model.default_priors(6)}, draws["latents"][0]
    )
    assert np.isfinite(np.asarray(rates)).all() and (np.asarray(rates) > 0).all()
    refined = result.sample_posterior(5, seed=1, data=new, refine=20)
    for name in model.default_priors(6):
        np.testing.assert_array_equal(refined[name], draws[name])  # the weights stay
    assert not np.allclose(refined["initial"], draws["initial"])
    weights = {k: jnp.asarray(refined[k][2]) for k in model.default_priors(6)}
    dt = model.as_data(new).dt
    path = model.rollout(weights, jnp.asarray(refined["initial"][2, 0]), 20, dt)
    np.testing.assert_allclose(refined["latents"][2, 0], path, rtol=1e-5, atol=1e-5)


def test_nuts_over_weights_given_encoded_initial_states():
    ds = simulate_attractor("Arneodo", num_trials=6, num_timesteps=12, num_neurons=4, seed=2)
    model = NODE(latent_dim=2, num_neurons=4, hidden=4, encoder_hidden=4)
    fit = svi(model, ds, num_steps=30, seed=0, guide="amortised-delta", progress=False)
    loc, scale = fit.encode()
    assert loc.shape == scale.shape == (6, 2) and np.all(scale > 0)
    given = {"initial": loc}
    density = bind(model, model.as_data(ds), given=given)
    assert "initial" not in density.shapes
    # The bound density is the joint with z0 held at the encoder's means, Jacobian-free here.
    weights = {k: v[0] for k, v in prior_predictive(model, seed=1, num_samples=1, data=ds).items()
               if k in density.shapes}  # fmt: skip
    expected, _ = numpyro.infer.util.log_density(
        model.program, (model.as_data(ds),), {}, {**weights, "initial": jnp.asarray(loc)}
    )
    got = density.log_posterior(density.unconstrain(weights))
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-9)
    with pytest.warns(DiagnosticWarning):  # 40 draws are too few for its ESS limits
        mcmc = nuts(model, ds, given=given, num_warmup=40, num_samples=40, num_chains=1,
                    max_tree_depth=5, seed=0, progress=False)  # fmt: skip
    np.testing.assert_array_equal(mcmc.samples["initial"][0, 7], loc)
    assert np.ptp(mcmc.samples["W1"], axis=(0, 1)).max() > 0
    with pytest.raises(ConfigError, match="given site 'initial' has shape"):
        bind(model, model.as_data(ds), given={"initial": loc[:3]})
