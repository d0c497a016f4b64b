"""HMM marginal likelihood: probdyn's DiscreteHMM against dynamax's ``hmm_filter``, one run.

T = 10,000 steps, K = 8 states, Gaussian emissions, 64-bit, jit-compiled. Prints both values
(they must agree to 1e-8), the time per call of each after compilation (median of repeats),
and the ratios. dynamax is not a probdyn dependency: install it next to probdyn to run this.

    python tests/benchmarks/hmm_benchmark.py [--steps 10000] [--states 8] [--repeats 20]
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

from probdyn.algorithms.hmm import DiscreteHMM  # noqa: E402


def per_call(fn, *args, repeats: int) -> float:
    """Median seconds per call after one compiling call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--states", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    T, K = args.steps, args.states
    rng = np.random.default_rng(0)
    initial = jnp.asarray(rng.dirichlet(np.ones(K)))
    transition = jnp.asarray(rng.dirichlet(np.ones(K) + 20 * np.eye(K)[0], size=K))
    means = jnp.asarray(rng.normal(0, 2, size=K))
    y = jnp.asarray(rng.normal(0, 2, size=T))

    def probdyn_log_prob(method):
        # DiscreteHMM draws z_{-1} ~ initial and moves once before the first emission; dynamax
        # draws z_0 from its initial distribution, so it is given initial @ transition.
        @jax.jit
        def run(y, initial, transition, means):
            hmm = DiscreteHMM(
                jnp.log(initial),
                jnp.log(transition),
                dist.Normal(means, 1.0),
                num_steps=T,
                method=method,
            )
            return hmm.log_prob(y)

        return run

    print(f"jax {jax.__version__}, devices {jax.devices()}, T = {T}, K = {K}")
    results = {}
    for method in ("sequential", "parallel"):
        fn = probdyn_log_prob(method)
        inputs = (y, initial, transition, means)
        results[f"probdyn {method}"] = (
            float(fn(*inputs)),
            per_call(fn, *inputs, repeats=args.repeats),
        )
    try:
        from dynamax.hidden_markov_model.inference import hmm_filter
    except ImportError:
        print("dynamax is not installed: its row is skipped")
    else:

        @jax.jit
        def dynamax_log_prob(y, initial, transition, means):
            log_likelihoods = dist.Normal(means, 1.0).log_prob(y[:, None])
            # dynamax draws z_0 from its initial distribution: that of z_0 here.
            return hmm_filter(initial @ transition, transition, log_likelihoods).marginal_loglik

        inputs = (y, initial, transition, means)
        results["dynamax hmm_filter"] = (
            float(dynamax_log_prob(*inputs)),
            per_call(dynamax_log_prob, *inputs, repeats=args.repeats),
        )
    reference_value, reference_time = results.get(
        "dynamax hmm_filter", results["probdyn sequential"]
    )
    print(f"{'implementation':<22} {'log p(y)':>18} {'|diff|':>9} {'ms/call':>9} {'ratio':>7}")
    for name, (value, seconds) in results.items():
        print(
            f"{name:<22} {value:>18.10f} {abs(value - reference_value):>9.1e} "
            f"{1e3 * seconds:>9.3f} {reference_time / seconds:>7.2f}"
        )
    print("ratio: reference time / this time (reference: dynamax where installed); > 1 is faster")


if __name__ == "__main__":
    main()
