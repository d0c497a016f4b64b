"""The memory budget: sizes, the per-item bound, chunked maps equal to unchunked ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probdyn.data import simulate_sde
from probdyn.errors import ConfigError, MemoryBudgetError
from probdyn.inference import log_evidence, svi
from probdyn.inference.arviz import predictive_draws
from probdyn.inference.density import bind
from probdyn.inference.evidence import hessian_matrix, require_dense_hessian
from probdyn.inference.evidence.smc import smc as _smc
from probdyn.models import LDS
from probdyn.runtime import memory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GB", 4 * 10**9),
        ("4 GiB", 4 * 2**30),
        ("512MB", 512 * 10**6),
        (1e9, 10**9),
        ("1.5G", 1.5e9),
    ],
)
def test_sizes_parse_in_powers_of_1000_and_1024(text, expected):
    assert memory.parse_size(text) == int(expected)


@pytest.mark.parametrize("text", ["fast", "-1GB", "0", True, "4 GB extra"])
def test_bad_sizes_name_the_value(text):
    with pytest.raises(ConfigError, match="memory limit"):
        memory.parse_size(text)


def test_the_bound_covers_every_intermediate_of_one_item():
    # exp(x) and sin(x) of 1000 float32 values per item: at least 8000 bytes per item.
    def fn(x):
        return jnp.sum(jnp.exp(x)) + jnp.sum(jnp.sin(x))

    per_item, _ = memory.item_cost(fn, jnp.zeros(1000))
    assert per_item >= 2 * 1000 * 4

    # A scan's body counts once, its stacked outputs in full: 50 steps of 200 values.
    def scanned(x):
        return jax.lax.scan(lambda c, row: (c + row.sum(), jnp.exp(row)), 0.0, x)[1]

    per_item, _ = memory.item_cost(scanned, jnp.zeros((50, 200)))
    assert 50 * 200 * 4 <= per_item < 10 * 50 * 200 * 4


def test_chunked_map_equals_the_vmap_and_the_budget_sets_the_chunk():
    x = jax.random.normal(jax.random.key(0), (53, 40))

    def fn(row):
        return {"total": jnp.sum(jnp.exp(row)), "scaled": 2.0 * row}

    whole = jax.vmap(fn)(x)
    for chunk in (1, 7, 53, 100):
        part = memory.map_chunks(fn, x, what="test", chunk=chunk)
        np.testing.assert_array_equal(part["scaled"], whole["scaled"])
        np.testing.assert_allclose(part["total"], whole["total"], rtol=1e-6)
    per_item, fixed = memory.item_cost(fn, x[0])
    assert memory.chunk_size(53, per_item, fixed, what="t", budget=fixed + 5 * per_item) == 5
    assert memory.chunk_size(53, per_item, fixed, what="t", budget=10**12) == 53


def test_a_budget_below_one_item_is_one_line_naming_the_step():
    with pytest.raises(MemoryBudgetError, match=r"^iwae draws: one item needs .* --memory-limit"):
        memory.chunk_size(10, 10**6, 0, what="iwae draws", budget=10**5)
    # Under a limit below what the process holds there is no room at all.
    with memory.limit(memory.resident_bytes() // 2):
        assert memory.chunk_budget() == 0
        with pytest.raises(MemoryBudgetError, match="fixed-point search"):
            memory.map_chunks(jnp.sin, jnp.zeros((4, 3)), what="fixed-point search")


def test_limits_nest_and_restore():
    outer = memory.settings()
    with memory.limit("3GB", progress=True) as inner:
        assert inner.resolved_limit() == 3 * 10**9 and memory.settings().progress
        with memory.limit(None, progress=False):
            assert memory.settings().resolved_limit() == 3 * 10**9
    assert memory.settings() == outer


def test_hessian_by_columns_is_the_closed_form_and_refuses_dense_giants():
    a = jax.random.normal(jax.random.key(1), (6, 6))
    matrix = a @ a.T

    def quadratic(z):
        return -0.5 * z @ matrix @ z + jnp.sum(jnp.sin(z))

    z = jnp.linspace(-1.0, 1.0, 6)
    expected = -np.asarray(matrix) - np.diag(np.sin(np.asarray(z)))
    np.testing.assert_allclose(hessian_matrix(quadratic, z), expected, rtol=1e-5, atol=1e-5)
    with memory.limit(memory.resident_bytes() + 10**6):
        with pytest.raises(MemoryBudgetError, match="Hessian of 1000 free dimensions needs 24"):
            require_dense_hessian(1000)


def test_thinned_predictive_keeps_evenly_spaced_draws_of_each_chain():
    data = LDS(latent_dim=1).as_data(num_trials=10, num_timesteps=10, emission_dim=10)
    per_draw = 4 * 1000
    kept = predictive_draws(2, 100, data, max_bytes=40 * per_draw)
    assert kept.shape == (2, 20)
    np.testing.assert_array_equal(kept[1] - kept[0], 100)  # the same draws of each chain
    assert kept[0, 0] == 0 and kept[0, -1] == 99
    assert predictive_draws(1, 30, data, max_bytes=10**9).shape == (1, 30)  # small: all


@pytest.fixture(scope="module")
def poisson_lds():
    ds = simulate_sde("ou", num_trials=6, num_timesteps=20, seed=0)
    counts = np.random.default_rng(0).poisson(np.exp(0.3 * ds["y"].values))
    ds = ds.drop_vars("y").assign(spikes=(("trial", "time", "neuron"), counts))
    model = LDS(latent_dim=2, observation="poisson")
    return model, ds, svi(model, ds, num_steps=150, seed=0, progress=False)


def test_iwae_in_chunks_is_the_iwae_in_one_batch(poisson_lds):
    model, ds, fit = poisson_lds
    options = {"method": "iwae", "seed": 3, "svi_result": fit, "num_importance": 40}
    whole = log_evidence(model, ds, chunk=320, **options)
    parts = log_evidence(model, ds, chunk=7, **options)
    np.testing.assert_allclose(
        parts.diagnostics["bound_per_batch"], whole.diagnostics["bound_per_batch"], rtol=1e-6
    )


def test_smc_with_particles_in_batches_is_the_smc_in_one_batch():
    model = LDS(latent_dim=1)
    ds = simulate_sde("ou", num_trials=3, num_timesteps=15, seed=2).isel(neuron=[0])
    density = bind(model, model.prepare(ds))
    options = {"num_particles": 60, "num_repeats": 2, "num_mcmc_steps": 2}
    whole = _smc(density, jax.random.key(0), chunk=120, **options)
    batched = _smc(density, jax.random.key(0), chunk=25, **options)
    np.testing.assert_allclose(
        batched.diagnostics["log_evidence_per_run"],
        whole.diagnostics["log_evidence_per_run"],
        rtol=1e-4,
    )
    assert batched.diagnostics["particles_at_once"] == 25


def test_posterior_draws_in_chunks_are_the_draws_in_one_batch(poisson_lds, monkeypatch):
    _, _, fit = poisson_lds
    whole = fit.sample_posterior(12, seed=5)
    original = memory.map_chunks
    monkeypatch.setattr(memory, "map_chunks", lambda *a, **k: original(*a, **{**k, "chunk": 5}))
    parts = fit.sample_posterior(12, seed=5)
    for name in whole:
        np.testing.assert_allclose(parts[name], whole[name], rtol=1e-5, atol=1e-6)
    tree = fit.to_arviz(num_samples=12, seed=5)
    assert tree["log_likelihood"]["spikes_trial"].shape == (1, 12, 6)


def test_draws_too_large_for_the_budget_run_in_blocks_of_trials(poisson_lds, monkeypatch, caplog):
    import numpyro

    from probdyn.inference.arviz import over_draws_and_trials

    model, ds, fit = poisson_lds
    draws = fit.sample_posterior(5, seed=1)
    data = fit.density.data
    keys = jax.random.split(jax.random.key(0), 5)

    def log_lik(draw, part, key):
        return numpyro.infer.log_likelihood(fit.density.program, draw, part, batch_ndims=0)[
            "spikes"
        ]

    whole = over_draws_and_trials(log_lik, model, data, draws, keys, what="t")
    assert whole.shape == (5, 6)
    # A budget that holds about a third of one draw: blocks of fewer trials, same numbers.
    per_draw, fixed = memory.item_cost(
        lambda d: log_lik(d, data, None), {k: v[0] for k, v in draws.items()}
    )
    monkeypatch.setattr(memory, "chunk_budget", lambda: fixed + per_draw // 3)
    with caplog.at_level("INFO", logger="probdyn"):
        blocked = over_draws_and_trials(log_lik, model, data, draws, keys, what="t")
    assert "blocks of 2 trials" in caplog.text or "blocks of 1 trials" in caplog.text, caplog.text
    np.testing.assert_allclose(blocked, whole, rtol=1e-5)
    # The closed form: Poisson log-likelihood of each trial at each draw's rates.
    from scipy import stats

    loadings = np.swapaxes(draws["C"], -1, -2)[:, None]  # (draw, 1, latent, neuron)
    rates = np.exp(draws["latents"] @ loadings + draws["d"][:, None, None])
    expected = stats.poisson.logpmf(ds["spikes"].values[None], rates).sum(axis=(-1, -2))
    np.testing.assert_allclose(whole, expected, rtol=1e-4)


def test_an_svi_step_larger_than_the_limit_is_refused_before_it_runs(poisson_lds, monkeypatch):
    model, ds, _ = poisson_lds
    # The resident size held still: the process's own size moves by megabytes as earlier
    # tests' arrays are freed, which would open headroom larger than this tiny step.
    resident = memory.resident_bytes()
    monkeypatch.setattr(memory, "resident_bytes", lambda: resident)
    with memory.limit(resident + 1000):
        with pytest.raises(
            MemoryBudgetError, match=r"svi: one step over 6 trials needs .* batch_size = 1"
        ):
            svi(model, ds, num_steps=5, seed=0, progress=False)
