"""Recovery of a chaotic attractor by sequential autoencoders (Sedler et al. 2023, Table 1).

Poisson spikes from ``simulate_attractor(--system)`` (Arneodo by default, or Lorenz; 2000
trials x 70 bins x 10 neurons, split 64/16/20 into training, validation and test trials); each
latent dynamics of ``NODE`` (the neural ODE and the baselines: GRU, no pass-through, no MLP, no
MLP with the pass-through) is trained at each latent size D of ``--latent-dims`` by the same
code (``svi`` with the amortised guide) and scored on the validation trials:

- rate R^2: true against inferred rates (posterior mean), no fitting, averaged over neurons;
- state R^2 (true -> inferred): affine regression from true to inferred latents, averaged over
  inferred dims (invented dimensions score low);
- recovery R^2 (inferred -> true): affine regression from inferred to true latents, averaged
  over the true dims (missed dimensions score low);
- the wall time per fit on this machine;
- for the neural ODE on Arneodo: its fixed points (``probdyn.fixed_points``) carried into the true
  coordinates by the affine map fitted from inferred to true latents, against the true fixed
  points of the Arneodo system, and their Jacobian eigenvalues against the true ones (an affine
  change of coordinates leaves eigenvalues unchanged; both are per unit of the system's time).

The paper's own numbers at D = 3 (from the authors' logs): NODE rate R^2 0.912, state R^2 0.940;
GRU 0.511 / 0.686; NODE without pass-through 0.617 / 0.745.

    python tests/benchmarks/node_attractor_recovery.py --seeds 5
    python tests/benchmarks/node_attractor_recovery.py --latent-dims 3 5 8 12 --dynamics node gru
    python tests/benchmarks/node_attractor_recovery.py --dynamics node --readout flow

Each fit is also appended as one JSON line to ``--jsonl`` (when given), so a long sweep keeps
what it finished.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np
import optax

import probdyn
from probdyn.analysis.metrics import affine_map, rate_r2, recovery_r2, state_r2
from probdyn.data import simulate_attractor
from probdyn.data.systems import ATTRACTORS
from probdyn.inference import svi
from probdyn.models import NODE

PAPER = {"node": (0.912, 0.940), "gru": (0.511, 0.686), "mlp": (0.617, 0.745)}
LABELS = {
    "node": "NODE",
    "gru": "GRU",
    "mlp": "no pass-through",
    "rnn": "no MLP",
    "residual": "no MLP, pass",
}


def split(ds, seed: int):
    """64/16/20 split of the trials (training, validation, test) by a seeded permutation."""
    order = np.random.default_rng(seed).permutation(ds.sizes["trial"])
    a, b = int(0.64 * order.size), int(0.80 * order.size)
    return ds.isel(trial=order[:a]), ds.isel(trial=order[a:b]), ds.isel(trial=order[b:])


def fit_and_score(ds, dynamics: str, latent_dim: int, args, seed: int) -> dict:
    train, valid, _ = split(ds, seed)
    model = NODE(
        latent_dim=latent_dim,
        readout=args.readout,
        num_neurons=ds.sizes["neuron"],
        dynamics=dynamics,
        substeps=args.substeps,
        tau=args.tau,
    )
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.learning_rate, 100, args.steps, args.learning_rate * 0.01
    )
    optimizer = optax.chain(optax.clip_by_global_norm(args.clip), optax.adam(schedule))
    start = time.perf_counter()
    result = svi(
        model,
        train,
        num_steps=args.steps,
        seed=seed,
        guide=args.guide,
        optimizer=optimizer,
        batch_size=args.batch_size,
        curriculum=tuple(args.curriculum) if args.curriculum else None,
        progress=False,
    )
    seconds = time.perf_counter() - start
    draws = result.sample_posterior(args.num_samples, seed=seed + 1, data=valid)
    weights = {k: v for k, v in draws.items() if k not in ("initial", "latents")}
    rates = jax.vmap(lambda p, z: model.emission_mean(p, z))(
        weights, draws["latents"].reshape(args.num_samples, -1, latent_dim)
    )
    rates = np.asarray(rates).mean(axis=0)
    latents = draws["latents"].mean(axis=0)
    if dynamics == "node" and ds.attrs.get("system") == "Arneodo" and latent_dim == 3:
        compare_fixed_points(model, weights, latents, valid)
    return {
        "rate_r2": rate_r2(valid.rates_true.values.reshape(-1, rates.shape[-1]), rates),
        "state_r2": state_r2(valid.latents_true.values, latents),
        "recovery_r2": recovery_r2(valid.latents_true.values, latents),
        "seconds": seconds,
        "final_loss": float(result.losses[-50:].mean()),
        "losses": result.losses,
    }


def true_fixed_points():
    r"""Arneodo's fixed points (x, 0, 0) with :math:`-a x + d x^3 = 0`; their eigenvalues."""
    attractor = ATTRACTORS["Arneodo"]
    p = attractor.parameters
    roots = [0.0, *(s * np.sqrt(p["a"] / p["d"]) for s in (-1, 1))]
    points = np.array([[x, 0.0, 0.0] for x in roots])
    eigenvalues = [
        np.linalg.eigvals(np.asarray(jax.jacfwd(lambda z: attractor.vector_field(z, p))(x)))
        for x in points
    ]
    return points, eigenvalues


def compare_fixed_points(model, weights, latents, valid):
    """Print each fixed point of the fitted flow in true coordinates beside the nearest true one."""
    found = probdyn.fixed_points(model, weights, states=latents, num_draws=1, seed=0)
    ds = found.dataset
    A, b = affine_map(latents, valid.latents_true.values)
    truth, true_eigenvalues = true_fixed_points()
    print(f"  fixed points of the fitted NODE: {int(ds.exists.values[0].sum())} (true: 3)")
    for k in np.flatnonzero(ds.exists.values[0]):
        mapped = ds.location.values[0, k] @ A + b
        nearest = int(np.argmin(np.linalg.norm(truth - mapped, axis=1)))
        eig = ds.eigenvalue_real.values[0, k] + 1j * ds.eigenvalue_imag.values[0, k]
        print(
            f"    at {np.round(mapped, 2)} (true {np.round(truth[nearest], 2)}), eigenvalues "
            f"{np.round(np.sort_complex(eig), 2)} (true "
            f"{np.round(np.sort_complex(true_eigenvalues[nearest]), 2)})"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--system", default="Arneodo", choices=("Arneodo", "Lorenz"))
    parser.add_argument(
        "--dynamics", nargs="+", default=["node", "gru", "mlp", "rnn"], choices=list(LABELS)
    )
    parser.add_argument("--latent-dims", type=int, nargs="+", default=[3])
    parser.add_argument("--readout", default="linear", choices=("linear", "flow"))
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--clip", type=float, default=200.0)
    parser.add_argument("--substeps", type=int, default=1)
    parser.add_argument("--tau", type=float, default=1.0, help="time constant, system units")
    parser.add_argument("--guide", default="amortised-delta")
    parser.add_argument(
        "--curriculum",
        type=int,
        nargs=2,
        metavar=("BINS", "EVERY"),
        help="grow by BINS every EVERY steps",
    )
    parser.add_argument("--num-samples", type=int, default=20)
    parser.add_argument("--jsonl", help="append one JSON line per fit to this file")
    args = parser.parse_args()

    rows = {(name, D): [] for D in args.latent_dims for name in args.dynamics}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        ds = simulate_attractor(args.system, num_trials=args.trials, seed=seed)
        for D in args.latent_dims:
            for name in args.dynamics:
                score = fit_and_score(ds, name, D, args, seed)
                rows[name, D].append(score)
                print(
                    f"seed {seed} D {D:2d} {LABELS[name]:>16}: rate R2 {score['rate_r2']:.3f}  "
                    f"state R2 {score['state_r2']:.3f}  recovery R2 {score['recovery_r2']:.3f}  "
                    f"{score['seconds']:.0f} s  loss {score['final_loss']:.1f}",
                    flush=True,
                )
                curve = score["losses"][:: max(1, args.steps // 10)]
                print("  loss every tenth of the run:", " ".join(f"{v:.4g}" for v in curve))
                if args.jsonl:
                    line = {k: v for k, v in score.items() if k != "losses"}
                    line |= {"system": args.system, "dynamics": name, "D": D, "seed": seed}
                    line["readout"] = args.readout
                    with open(args.jsonl, "a") as file:
                        file.write(json.dumps(line) + "\n")

    print(f"\n{args.system}, validation trials, {args.seeds} seeds (mean +- sd)")
    print(
        f"{'dynamics':>16} | {'D':>2} | {'rate R2':>15} | {'state R2':>15} | "
        f"{'recovery R2':>15} | {'s per fit':>9} | paper (D = 3)"
    )
    for (name, D), scores in rows.items():
        rate, state, recovered = (
            np.array([s[key] for s in scores]) for key in ("rate_r2", "state_r2", "recovery_r2")
        )
        seconds = np.mean([s["seconds"] for s in scores])
        paper = "-"
        if name in PAPER and args.system == "Arneodo" and D == 3:
            paper = "{:.3f} / {:.3f}".format(*PAPER[name])
        print(
            f"{LABELS[name]:>16} | {D:2d} | {rate.mean():.3f} +- {rate.std():.3f} | "
            f"{state.mean():.3f} +- {state.std():.3f} | "
            f"{recovered.mean():.3f} +- {recovered.std():.3f} | {seconds:9.0f} | {paper}"
        )


if __name__ == "__main__":
    main()
