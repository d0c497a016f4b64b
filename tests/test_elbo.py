"""OrderedTraceELBO: NumPyro's Trace_ELBO estimate, compiled to one program in every process."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

from probdyn.errors import ConfigError
from probdyn.inference.objectives import OrderedTraceELBO

#: A model with many sites: their order in a Python set changes with the string hash seed.
PROGRAM = textwrap.dedent(
    """
    import hashlib, sys
    import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    from numpyro.infer import Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from probdyn.inference.objectives import OrderedTraceELBO

    def model(y=None):
        total = 0.0
        for name in "abcdefghijkl":
            total = total + numpyro.sample(name, dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(total, 1.0), obs=y)

    guide = AutoNormal(model)
    elbo = {"ordered": OrderedTraceELBO(), "numpyro": Trace_ELBO()}[sys.argv[1]]
    engine = numpyro.infer.SVI(model, guide, numpyro.optim.Adam(0.1), elbo)
    params = engine.get_params(engine.init(jax.random.key(0), jnp.array(1.0)))
    def loss(p):
        return elbo.loss(jax.random.key(1), p, model, guide, jnp.array(1.0))
    print(hashlib.sha256(jax.jit(loss).lower(params).as_text().encode()).hexdigest())
    """
)


def _program_digest(elbo: str, hash_seed: int) -> str:
    env = dict(os.environ, PYTHONHASHSEED=str(hash_seed), JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, elbo], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_compiled_loss_is_the_same_program_under_every_string_hash_seed():
    ordered = {_program_digest("ordered", seed) for seed in (1, 2)}
    assert len(ordered) == 1
    # The check can fail: NumPyro's own estimator gives other programs under these seeds.
    assert len({_program_digest("numpyro", seed) for seed in (1, 2)}) == 2


def _model(x, y=None):
    slope = numpyro.sample("slope", dist.Normal(0.0, 1.0))
    noise = numpyro.sample("noise", dist.HalfNormal(1.0))
    with numpyro.plate("points", x.shape[0], subsample_size=5):
        batch = numpyro.subsample(x, event_dim=0)
        observed = None if y is None else numpyro.subsample(y, event_dim=0)
        numpyro.sample("y", dist.Normal(slope * batch, noise), obs=observed)


@pytest.mark.parametrize("num_particles", [1, 7])
def test_ordered_elbo_equals_numpyros_trace_elbo_at_the_same_key(num_particles):
    x = jnp.linspace(-1.0, 1.0, 20)
    y = 0.7 * x + 0.1 * jnp.cos(7.0 * x)
    guide = AutoNormal(_model)
    engine = numpyro.infer.SVI(_model, guide, numpyro.optim.Adam(0.1), Trace_ELBO())
    params = engine.get_params(engine.init(jax.random.key(0), x, y))
    key = jax.random.key(4)
    ordered = OrderedTraceELBO(num_particles).loss(key, params, _model, guide, x, y)
    reference = Trace_ELBO(num_particles).loss(key, params, _model, guide, x, y)
    np.testing.assert_allclose(ordered, reference, rtol=1e-6)


def test_a_guide_with_mutable_state_is_refused():
    def guide():
        numpyro.primitives.mutable("counter", jnp.zeros(()))
        numpyro.sample("z", dist.Normal(0.0, 1.0))

    def model():
        numpyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ConfigError, match="mutable state"):
        OrderedTraceELBO().loss(jax.random.key(0), {}, model, guide)
