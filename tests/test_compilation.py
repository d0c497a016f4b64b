"""probdyn.runtime.compilation: run-once blocks change compile settings, never results."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import numpyro.infer.util
import optax
import pytest
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

from probdyn.runtime.compilation import run_once


def _regression(x, y=None):
    slope = numpyro.sample("slope", dist.Normal(0.0, 1.0))
    noise = numpyro.sample("noise", dist.HalfNormal(1.0))
    with numpyro.plate("points", x.shape[0]):
        numpyro.sample("y", dist.Normal(slope * x, noise), obs=y)


def _impossible():
    """No starting point has a finite log density."""
    rate = numpyro.sample("rate", dist.Exponential(1.0))
    numpyro.factor("wall", -jnp.inf * rate)


def _initial_state(guide_class, once: bool):
    x = jnp.linspace(-1.0, 1.0, 20)
    y = 0.7 * x + 0.1 * jnp.cos(7.0 * x)
    engine = SVI(_regression, guide_class(_regression), optax.adam(1e-2), Trace_ELBO())
    if once:
        with run_once():
            return engine, engine.init(jax.random.key(3), x, y)
    return engine, engine.init(jax.random.key(3), x, y)


@pytest.mark.parametrize("guide_class", [AutoNormal, AutoMultivariateNormal])
def test_guide_set_up_in_a_run_once_block_starts_where_it_would_outside(guide_class):
    engine, state = _initial_state(guide_class, once=True)
    reference_engine, reference = _initial_state(guide_class, once=False)
    params, expected = engine.get_params(state), reference_engine.get_params(reference)
    assert params.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(params[name], expected[name], rtol=1e-12, atol=1e-12)


def test_run_once_nests_and_restores_the_settings_even_when_the_block_raises():
    original = numpyro.infer.util.find_valid_initial_params
    assert jax.config.read("jax_disable_most_optimizations") is False
    with pytest.raises(ZeroDivisionError), run_once():
        with run_once():
            pass
        assert jax.config.read("jax_disable_most_optimizations") is True
        assert numpyro.infer.util.find_valid_initial_params is not original
        1 / 0  # noqa: B018
    assert jax.config.read("jax_disable_most_optimizations") is False
    assert numpyro.infer.util.find_valid_initial_params is original


@pytest.mark.parametrize("once", [False, True])
def test_a_model_without_a_valid_start_fails_alike_inside_and_outside_run_once(once):
    engine = SVI(_impossible, AutoNormal(_impossible), optax.adam(1e-2), Trace_ELBO())
    with pytest.raises(RuntimeError, match="Cannot find valid initial parameters"):
        if once:
            with run_once():
                engine.init(jax.random.key(0))
        else:
            engine.init(jax.random.key(0))
