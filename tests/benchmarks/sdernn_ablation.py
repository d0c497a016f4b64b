r"""What a noise-driven network loses when its antisymmetric connectivity or a population is removed.

Nartallo-Kaluarachchi et al. (2026) argue that asymmetric populations carry a network's
nonequilibrium computations. Here a 64-unit rank-2 tanh network is embedded by drift-diffusion
matching (:func:`probdyn.inference.match_sde`) in

- ``sequential``: ``cyclic_attractors`` (three stable nodes on the unit circle, rotational drift
  :math:`\omega = 0.5`, noise 0.4): noise carries the state round the three nodes, mostly
  forward (a sequential memory, nonequilibrium);
- ``control``: the same system with :math:`\omega = 0`, mirror-symmetric: forward and backward
  jumps are equally likely, the order is 1/2 and the coarse-grained entropy production zero.

The intact network and each ablation (:mod:`probdyn.analysis.ablation`: :math:`J_a` removed;
the most / least asymmetric quarter of the units silenced, or only their antisymmetric
couplings removed; ten random quarters treated alike, the control for the ablation as such)
are run in unit space, 40 paths x 2000 bins of 0.05 after 200 bins of burn-in, and the latent
paths scored (:func:`probdyn.analysis.transitions.attractor_transitions`,
centres = the intact network's stable fixed points): switching rate, forward fraction (share of
jumps along the target's cycle; "ordered" when a one-sided binomial test puts it above 1/2 at
p < 0.01), coarse-grained entropy production. For the intact network also
the path estimator of the entropy production split into its leak, symmetric and antisymmetric
forces (:func:`probdyn.analysis.nonequilibrium.entropy_production_parts`) and into the four
populations.

    python tests/benchmarks/sdernn_ablation.py [--seed 0] [--steps 10000] [--random 10]
        [--jsonl results.jsonl]
"""

import argparse
import json
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import binomtest

jax.config.update("jax_enable_x64", True)

import probdyn  # noqa: E402
from probdyn.algorithms.sde import matching_errors  # noqa: E402
from probdyn.analysis.ablation import (  # noqa: E402
    ablated_connectivity,
    asymmetry_populations,
    simulate_units,
)
from probdyn.analysis.nonequilibrium import (  # noqa: E402
    entropy_production_parts,
    entropy_production_rate,
)
from probdyn.analysis.transitions import attractor_transitions  # noqa: E402
from probdyn.data import systems  # noqa: E402
from probdyn.inference import match_sde  # noqa: E402
from probdyn.models import SDERNN  # noqa: E402

DT, BINS, BURN_IN, TRIALS, SIGMA = 0.05, 2000, 200, 40, 0.4
OMEGA = {"sequential": 0.5, "control": 0.0}


def stable_nodes(model, params, states):
    """Stable points (nodes or spirals: near-equal eigenvalues tip either way), by angle."""
    points = probdyn.fixed_points(
        model, {k: np.asarray(v)[None] for k, v in params.items()}, states=states, seed=0
    )
    table = points.summary()
    stable = table["class"].isin(["stable node", "stable spiral"])
    nodes = table[stable][["x0_mean", "x1_mean"]].to_numpy()
    return nodes[np.argsort(np.arctan2(nodes[:, 1], nodes[:, 0]))]


def score(latent, nodes):
    """Transition statistics along latent paths, the cycle being counterclockwise."""
    stats = attractor_transitions(latent, nodes, DT, order=np.arange(len(nodes)))
    jumps = int(stats.counts.sum())
    forward = round(float(stats.forward_fraction) * jumps) if jumps else 0
    ordered = jumps > 0 and binomtest(forward, jumps, 0.5, alternative="greater").pvalue < 0.01
    return {
        "ordered": bool(ordered),
        "switching_rate": float(stats.switching_rate),
        "switching_rate_se": float(stats.switching_rate_se),
        "forward_fraction": float(stats.forward_fraction),
        "forward_fraction_se": float(stats.forward_fraction_se),
        "coarse_entropy_production": float(stats.coarse_entropy_production),
        "jumps": int(stats.counts.sum()),
        "occupancy": float(stats.occupancy),
    }


def run(name, args):
    parameters = {"omega": OMEGA[name], "a": 2.0}
    drift = partial(systems.cyclic_attractors, p=parameters)
    ds = probdyn.data.simulate_sde(
        "cyclic_attractors",
        num_trials=50,
        num_timesteps=600,
        parameters=parameters,
        noise_scale=SIGMA,
        seed=args.seed,
    )
    states = ds.y.values[:, 200:]
    reference = probdyn.data.simulate_sde(
        "cyclic_attractors",
        num_trials=TRIALS,
        num_timesteps=BURN_IN + BINS,
        parameters=parameters,
        noise_scale=SIGMA,
        seed=args.seed + 500,
    ).y.values[:, BURN_IN:]
    produced = entropy_production_rate(drift, SIGMA**2 / 2, reference, DT)
    print(f"{name}: the target's own path entropy production {produced}", flush=True)
    model = SDERNN(num_units=64, rank=2, observation="latent")
    fit = match_sde(
        model, drift, SIGMA, states, seed=args.seed, num_steps=args.steps, progress=False
    )
    params = {k: jnp.asarray(v) for k, v in fit.params.items()}
    errors = matching_errors(model, fit.draws(), drift, SIGMA, states)
    nodes = stable_nodes(model, params, states)
    print(
        f"{name}: drift error {errors['drift_error']:.3f}, diffusion error "
        f"{errors['diffusion_error']:.3f}, {len(nodes)} stable nodes",
        flush=True,
    )
    if len(nodes) < 2:
        print("  fewer than two stable nodes: no switching to score")
        return []
    J = np.asarray(model.connectivity(params))
    groups = asymmetry_populations(J, 4)
    rng = np.random.default_rng(args.seed)
    starts = nodes[rng.integers(len(nodes), size=TRIALS)]
    ablations = {
        "intact": J,
        "J_a removed": ablated_connectivity(J, remove="antisymmetric"),
        "most asymmetric quarter silenced": ablated_connectivity(J, silence=groups == 0),
        "least asymmetric quarter silenced": ablated_connectivity(J, silence=groups == 3),
        "J_a of the most asymmetric quarter removed": ablated_connectivity(
            J, remove="antisymmetric", among=groups == 0
        ),
        "J_a of the least asymmetric quarter removed": ablated_connectivity(
            J, remove="antisymmetric", among=groups == 3
        ),
    }
    for draw in range(args.random):
        quarter = rng.permutation(len(J))[: len(J) // 4]
        ablations[f"random quarter {draw} silenced"] = ablated_connectivity(J, silence=quarter)
        ablations[f"J_a of random quarter {draw} removed"] = ablated_connectivity(
            J, remove="antisymmetric", among=quarter
        )
    rows = []
    for label, connectivity in ablations.items():
        latent, off = simulate_units(
            model, params, connectivity, starts, DT, BINS, seed=args.seed + 1, burn_in=BURN_IN
        )
        row = {
            "system": name,
            "ablation": label,
            "seed": args.seed,
            "target_ep": produced.rate,
            "target_ep_se": produced.se,
            "asymmetry": float(
                np.linalg.norm(connectivity - connectivity.T) / (2 * np.linalg.norm(connectivity))
            ),
            "off_subspace_rms": float(np.sqrt(np.mean(off**2))),
            **score(latent, nodes),
        }
        if label == "intact":
            tril = model.diffusion_tril(params)
            D = tril @ tril.T / 2
            for by in ("symmetry", groups):
                names, parts = model.drift_parts(params, by)
                split = entropy_production_parts(parts, D, latent, DT, names=names)
                for part in split.part.values:
                    key = part if isinstance(by, str) else f"population {part}"
                    row[f"ep_{key}"] = float(split.rate.sel(part=part))
                    row[f"ep_{key}_se"] = float(split.se.sel(part=part))
            row["ep_total"] = float(split.total)
            row["ep_total_se"] = float(split.total_se)
        rows.append(row)
        print(
            f"  {label:44s} switching {row['switching_rate']:.3f} +- "
            f"{row['switching_rate_se']:.3f}  forward {row['forward_fraction']:.2f} +- "
            f"{row['forward_fraction_se']:.2f}{' ordered' if row['ordered'] else '        '}  coarse EP {row['coarse_entropy_production']:.3f}"
            f"  ({row['jumps']} jumps, {row['occupancy']:.0%} in a core, off-subspace "
            f"{row['off_subspace_rms']:.2f})",
            flush=True,
        )
        if label == "intact":
            parts = ", ".join(
                f"{key[3:]} {value:.3f}"
                for key, value in row.items()
                if key.startswith("ep_") and not key.endswith("_se")
            )
            print(f"    path entropy production by force: {parts}", flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as handle:
                handle.write(json.dumps(row) + "\n")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(OMEGA), action="append")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random", type=int, default=10, help="random quarters silenced")
    parser.add_argument("--jsonl")
    args = parser.parse_args()
    for name in args.system or list(OMEGA):
        run(name, args)


if __name__ == "__main__":
    main()
