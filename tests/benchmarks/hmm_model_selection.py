"""Choosing the number of HMM states by evidence: does ``compare`` find the true K?

For each seed, symbol sequences from the 3-state linear-chain HMM of Torre et al. (2025)
(``simulate_hmm("linear")``) are compared under ``HMM(K)`` for K = 2, 3, 4 (categorical
emissions, Dirichlet(1) priors, states summed out by the forward algorithm) by evidence with
standard errors: bridge sampling from NUTS draws, averaged over the K! state relabellings
(``--method bridge``, the default), or tempered SMC (``--method smc``). Prints each seed's table
and how often K = 3 ranks first, and whether it is ahead of the runner-up by more than twice
their combined standard error.

    python tests/benchmarks/hmm_model_selection.py --seeds 10 --trials 100 --timesteps 100
    python tests/benchmarks/hmm_model_selection.py --seeds 1 --first-seed 7   # one seed per process
    python tests/benchmarks/hmm_model_selection.py --method smc --forward parallel   # on a GPU
"""

from __future__ import annotations

import argparse
import math
import time

import jax

from probdyn.data import simulate_hmm
from probdyn.inference import compare
from probdyn.models import HMM


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from here")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--timesteps", type=int, default=100)
    parser.add_argument("--states", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--method", choices=["bridge", "smc"], default="bridge")
    parser.add_argument("--warmup", type=int, default=500, help="bridge: NUTS warmup per chain")
    parser.add_argument("--samples", type=int, default=1000, help="bridge: NUTS draws per chain")
    parser.add_argument("--dense-mass", action="store_true", help="bridge: NUTS dense mass")
    parser.add_argument("--particles", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--mcmc-steps", type=int, default=5)
    parser.add_argument("--integration-steps", type=int, default=10)
    parser.add_argument("--forward", choices=["sequential", "parallel"], default="sequential")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0]}; {vars(args)}", flush=True)

    wins = clear = 0
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        ds = simulate_hmm("linear", num_trials=args.trials, num_timesteps=args.timesteps, seed=seed)
        models = {
            f"K={k}": HMM(num_states=k, observation="categorical", forward=args.forward)
            for k in args.states
        }
        start = time.perf_counter()
        if args.method == "bridge":
            options = {
                "num_warmup": args.warmup,
                "num_samples": args.samples,
                "dense_mass": args.dense_mass,
            }
        else:
            options = {
                "num_particles": args.particles,
                "num_repeats": args.repeats,
                "num_mcmc_steps": args.mcmc_steps,
                "num_integration_steps": args.integration_steps,
            }
        table = compare(models, ds, seed=seed, method=args.method, **options)
        seconds = time.perf_counter() - start
        cells = ", ".join(
            f"{row.model} {row.log_evidence:.2f} +- {row.standard_error:.2f}"
            for row in table.itertuples()
        )
        first, second = table.iloc[0], table.iloc[1]
        won = first["model"] == "K=3"
        margin = first["log_evidence"] - second["log_evidence"]
        error = math.hypot(first["standard_error"], second["standard_error"])
        wins += won
        clear += won and margin > 2 * error
        print(f"seed {seed}: {cells}  ({seconds:.0f} s)", flush=True)
    print(
        f"\nK = 3 (the generating HMM) ranked first in {wins} of {args.seeds} seeds, "
        f"ahead by more than 2 standard errors in {clear}"
    )


if __name__ == "__main__":
    main()
