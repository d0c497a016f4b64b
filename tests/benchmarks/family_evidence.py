"""LDS, SDE RNN and FacRNN compared by one evidence estimator on Poisson spike counts.

Every family is fitted with its latent path filtered (``marginal="particle"``: SVI of a
mean-field guide over the parameters, the likelihood a bootstrap particle filter's), then
scored by the same estimator, ``log_evidence(method="predictive")``: the posterior predictive
log probability of held-out trials, :math:`\\log \\frac1D\\sum_d \\prod_s \\hat p(y_s \\mid
\\theta_d)`, with its Monte Carlo error.

``--recording simulated`` (default): counts from a rank-2 SDE RNN with a noisy limit cycle
(known dynamics; the SDE RNN family is the true one). ``--recording linear``: the control,
counts from a Poisson LDS (a damped rotation), where the verdict must differ. ``--recording mc_maze_small``: the
shipped MC_Maze_Small training trials (75 trials, 107 neurons, 20 ms bins), split into
training and held-out trials.

    python tests/benchmarks/family_evidence.py [--recording simulated|linear|mc_maze_small]
        [--steps 3000] [--particles 64] [--eval-particles 512] [--draws 100] [--seed 0]
        [--out results.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import jax
import numpy as np
import numpyro.distributions as dist
import xarray as xr

from probdyn.data import mc_maze_small
from probdyn.inference import log_evidence, svi
from probdyn.model import prior_predictive
from probdyn.models import LDS, SDERNN, FacRNN

jax.config.update("jax_enable_x64", True)


def limit_cycle_counts(seed: int, num_trials: int, num_timesteps: int, num_neurons: int):
    r"""Counts from :math:`\tau dz = (-z + N^\top\tanh(Mz)/n)dt + \sigma dW`, overlap ~ K.

    :math:`N = M K^\top` with :math:`K = [[1.5, -1], [1, 1.5]]`: the origin is an unstable
    spiral (linear growth 0.5, rotation 1 per time constant) and tanh bounds the orbit, a limit
    cycle; rates :math:`\exp(Cz + d)` per 0.2-time-constant bin.
    """
    rng = np.random.default_rng(seed)
    units, rank = 30, 2
    M = rng.normal(size=(units, rank))
    K = np.array([[1.5, -1.0], [1.0, 1.5]])
    fixed = {
        "M": M,
        "N": M @ K.T,
        "b": np.zeros(units),
        "sigma": np.asarray(0.3),
        "C": rng.normal(0.0, 0.6, (num_neurons, rank)),
        "d": np.full(num_neurons, math.log(0.4)),
    }
    return poisson_counts(
        SDERNN, fixed, seed, num_trials, num_timesteps, num_neurons,
        num_units=units, rank=rank, substeps=4,
    )


def rotation_counts(seed: int, num_trials: int, num_timesteps: int, num_neurons: int):
    r"""The control: counts from a Poisson LDS (a damped rotation, radius 0.97, 0.2 rad/bin).

    Linear dynamics, which every family can express: the verdict must no longer be the
    SDE RNN's.
    """
    rng = np.random.default_rng(seed)
    angle = 0.2
    fixed = {
        "A": 0.97 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]),
        "b": np.zeros(2),
        "q": np.full(2, 0.3),
        "C": rng.normal(0.0, 0.6, (num_neurons, 2)),
        "d": np.full(num_neurons, math.log(0.4)),
    }
    return poisson_counts(LDS, fixed, seed, num_trials, num_timesteps, num_neurons, latent_dim=2)


def poisson_counts(family, fixed, seed, num_trials, num_timesteps, num_neurons, **hyperparameters):
    """Spike counts (bins of 0.2) drawn from ``family`` with every parameter fixed at ``fixed``."""
    truth = family(
        observation="poisson",
        priors={k: dist.Delta(np.asarray(v, float)).to_event(np.ndim(v)) for k, v in fixed.items()},
        **hyperparameters,
    )
    draws = prior_predictive(
        truth,
        seed=seed,
        num_samples=1,
        num_trials=num_trials,
        num_timesteps=num_timesteps,
        emission_dim=num_neurons,
        dt=0.2,
    )
    return xr.Dataset(
        {"spikes": (("trial", "time", "neuron"), draws["spikes"][0])}, attrs={"dt": 0.2}
    )


def candidates(num_neurons: int, latent_dim: int, particles: int) -> dict:
    """The three families, each with its path filtered by ``particles`` particles."""
    shared = dict(observation="poisson", marginal="particle", num_particles=particles)
    groups = (1, latent_dim)
    return {
        "LDS": LDS(latent_dim=latent_dim, **shared),
        "SDERNN": SDERNN(num_units=30, rank=latent_dim, substeps=4, **shared),
        "FacRNN": FacRNN(
            num_neurons=num_neurons,
            num_groups=groups[0],
            group_rank=groups[1],
            correlation=None,
            **shared,
        ),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recording", default="simulated", choices=["simulated", "linear", "mc_maze_small"]
    )
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--eval-particles", type=int, default=512)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--latent-dim", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    if args.recording in ("simulated", "linear"):
        simulate = limit_cycle_counts if args.recording == "simulated" else rotation_counts
        ds = simulate(args.seed, 60, 60, 20)
        train, test = ds.isel(trial=slice(0, 40)), ds.isel(trial=slice(40, 60))
    else:
        ds = mc_maze_small().drop_vars("heldout")
        order = np.random.default_rng(args.seed).permutation(ds.sizes["trial"])
        train, test = ds.isel(trial=order[:60]), ds.isel(trial=order[60:])
    num_neurons = ds.sizes["neuron"]
    print(
        f"{args.recording}: {train.sizes['trial']} training, {test.sizes['trial']} held-out "
        f"trials x {ds.sizes['time']} bins x {num_neurons} neurons"
    )
    rows = {}
    for name, model in candidates(num_neurons, args.latent_dim, args.particles).items():
        start = time.perf_counter()
        fit = svi(
            model,
            train,
            num_steps=args.steps,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=False,
        )
        fitted = time.perf_counter() - start
        scorer = dataclasses.replace(model, num_particles=args.eval_particles)
        evidence = log_evidence(
            scorer, test, method="predictive", seed=args.seed, posterior=fit, num_draws=args.draws
        )
        rows[name] = {
            "log_predictive": evidence.log_evidence,
            "standard_error": evidence.standard_error,
            "per_trial": evidence.diagnostics["per_trial"],
            "fit_seconds": fitted,
            "score_seconds": evidence.seconds,
            "final_loss": float(np.mean(fit.losses[-100:])),
        }
        print(f"{name:7s} {evidence}  (fit {fitted:.0f} s)", flush=True)
    best = max(rows, key=lambda k: rows[k]["log_predictive"])
    for name, row in rows.items():
        # Paired over held-out trials: the spread of per-trial differences (test-set
        # sampling), plus both estimates' Monte Carlo errors.
        diff = np.subtract(rows[best]["per_trial"], row["per_trial"])
        paired = diff.std(ddof=1) * math.sqrt(len(diff)) if len(diff) > 1 else 0.0
        se = math.sqrt(paired**2 + rows[best]["standard_error"] ** 2 + row["standard_error"] ** 2)
        row["behind_best"], row["behind_best_se"] = float(diff.sum()), se
        print(f"  {name:7s} behind {best} by {diff.sum():8.1f} +- {se:.1f} nats")
    result = {"recording": args.recording, "settings": vars(args), "families": rows, "best": best}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
