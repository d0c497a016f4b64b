"""FacRNN on monkey motor cortex (MC_Maze_Small): which latent group carries hand movement.

The held-in neurons of the 75 training trials of ``mc_maze_small_train.h5`` are smoothed
(Gaussian kernel, 40 ms), rebinned to 20 ms, square-root transformed and z-scored per neuron;
trials are split 60/15 (seeded). On the 60, a plain rank-6 low-rank RNN and FacRNN (G = 2
groups of H = 3, PC penalty, started from the plain fit unmixed by ICA) are fitted by MAP. On
the 15 held-out trials, hand velocity and hand position are regressed (affine, fitted on the
60) on each group's latents and on all six: cross-validated R^2 per group, as the seed's monkey
analysis relates groups to behaviour; the groups' partial correlation is reported beside it,
and so is what the same affine read-out gets from all held-in neurons (a reference for the
six latents). Held-out neurons (the 35 the recording withholds from the models, processed the
same way) are predicted by an affine read-out of the latents fitted on the 60 trials, and
scored by R^2 on the 15: how much of the population's activity outside the fitted neurons
each model's latents carry. ``--fit-seeds K`` fits each model K times per split; every fit is
one JSON line in ``--jsonl``, and the summary gives each figure's mean and spread over splits
and seeds and the paired difference FacRNN - low-rank.
The NLB file holds velocity only: position is velocity integrated from each trial's first bin
(every maze reach starts at the central hold). ``--lag L`` regresses the behaviour L bins (of
20 ms) after the latents (motor cortex leads the hand).

    python tests/benchmarks/facrnn_motor_cortex.py [--data ../shared/data] [--seeds 3]
        [--fit-seeds 2] [--lag 0] [--jsonl results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import xarray as xr

from probdyn.algorithms.independence import sample_partial_correlation
from probdyn.analysis.metrics import affine_map
from probdyn.app.nlb import gaussian_smooth
from probdyn.data import load_nlb
from probdyn.inference import svi
from probdyn.models import FacRNN


def processed(spikes: np.ndarray) -> np.ndarray:
    """Smoothed (40 ms), rebinned to 20 ms, square-root transformed, z-scored per neuron."""
    smooth = gaussian_smooth(spikes.astype(float), sigma_bins=8.0)  # 40 ms at 5 ms bins
    trials, bins, neurons = smooth.shape
    rebinned = smooth[:, : bins // 4 * 4].reshape(trials, bins // 4, 4, neurons).sum(2)
    y = np.sqrt(rebinned)
    return (y - y.mean((0, 1))) / np.maximum(y.std((0, 1)), 1e-12)


def prepare(path: Path):
    """Held-in activity (a Dataset), held-out activity, hand velocity and position (20 ms)."""
    full = load_nlb(path, split="train")
    y = processed(full.spikes.values[..., ~full.heldout.values])
    heldout = processed(full.spikes.values[..., full.heldout.values])
    trials, bins = full.spikes.shape[:2]
    raw = full.behavior.values[:, : bins // 4 * 4]
    position = np.cumsum(raw, axis=1) * full.attrs["dt"]  # relative to the trial's start
    velocity = raw.reshape(trials, bins // 4, 4, -1)
    position = position.reshape(trials, bins // 4, 4, -1)
    ds = xr.Dataset(
        {"y": (("trial", "time", "neuron"), y)},
        coords={"time": np.arange(bins // 4) * 0.02},
        attrs={"dt": 0.02},
    )
    return ds, heldout, velocity.mean(2), position.mean(2)


def behaviour_r2(latents, behaviour, train, test) -> float:
    """Affine map latents -> behaviour fitted on ``train`` trials, R^2 on ``test`` (pooled)."""
    A, b = affine_map(latents[train], behaviour[train])
    target = behaviour[test].reshape(-1, behaviour.shape[-1])
    prediction = latents[test].reshape(-1, latents.shape[-1]) @ A + b
    return float(1 - np.sum((target - prediction) ** 2) / np.sum((target - target.mean(0)) ** 2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("PROBDYN_DATA", "../shared/data")
    parser.add_argument("--data", default=default, help="folder holding mc_maze_small/")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--fit-seeds", type=int, default=1, help="fits per model and split")
    parser.add_argument("--lag", type=int, default=0, help="behaviour this many bins later")
    parser.add_argument("--jsonl", help="append one JSON line per fit")
    args = parser.parse_args()
    path = Path(args.data) / "mc_maze_small" / "mc_maze_small_train.h5"
    ds, heldout, velocity, position = prepare(path)
    x = ds.y.values
    # The codes of bin t are read from bin t - 1.
    behaviours = {"velocity": velocity[:, 1:], "position": position[:, 1:]}
    records = []
    neurons = ds.sizes["neuron"]
    print(f"{ds.sizes['trial']} trials x {ds.sizes['time']} bins x {neurons} held-in neurons")
    for seed in range(args.seeds):
        order = np.random.default_rng(seed).permutation(ds.sizes["trial"])
        train, test = np.sort(order[:60]), np.sort(order[60:])
        fitting = ds.isel(trial=train)
        # Reference: what an affine read-out of all held-in neurons of the previous bin gets.
        activity = x[:, : x.shape[1] - 1 - args.lag]
        ceiling = {
            what: behaviour_r2(activity, behaviour[:, args.lag :], train, test)
            for what, behaviour in behaviours.items()
        }
        ceiling["held-out neurons"] = behaviour_r2(x[:, :-1], heldout[:, 1:], train, test)
        print(
            f"split {seed} all {neurons} neurons, affine: velocity R2 {ceiling['velocity']:.3f}, "
            f"position R2 {ceiling['position']:.3f}, held-out neurons R2 "
            f"{ceiling['held-out neurons']:.3f}"
        )
        for fit_seed in range(args.fit_seeds):
            results = {}
            for name, correlation in (("low-rank", None), ("FacRNN", "pc")):
                model = FacRNN(
                    num_neurons=neurons, num_groups=2, group_rank=3, correlation=correlation
                )
                init = None
                if correlation == "pc":
                    init = model.unmixed_start(results["low-rank"][0], fitting.y.values[:, :-1])
                start = time.perf_counter()
                fit = svi(model, fitting, num_steps=args.steps, seed=100 * fit_seed + seed,
                          guide="delta", learning_rate=1e-2, batch_size=20, init=init,
                          progress=False)  # fmt: skip
                params = {k: np.asarray(v[0]) for k, v in fit.sample_posterior(1, seed=0).items()}
                results[name] = (params, time.perf_counter() - start)
                codes = np.asarray(model.codes(params, x[:, :-1]))
                latents = codes[:, : codes.shape[1] - args.lag]
                row = {
                    "split": seed,
                    "fit_seed": fit_seed,
                    "model": name,
                    "PC": sample_partial_correlation(latents[test].reshape(-1, 6), model.groups),
                    "held-out neurons R2": behaviour_r2(codes, heldout[:, 1:], train, test),
                    "seconds": results[name][1],
                }
                for what, behaviour in behaviours.items():
                    later = behaviour[:, args.lag :]
                    for g in range(2):
                        part = latents[..., g * 3 : g * 3 + 3]
                        row[f"{what} R2 group {g}"] = behaviour_r2(part, later, train, test)
                    row[f"{what} R2"] = behaviour_r2(latents, later, train, test)
                records.append(row)
                print(
                    f"split {seed} fit {fit_seed} {name:9s} "
                    + "; ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)),
                    flush=True,
                )
                if args.jsonl:
                    with open(args.jsonl, "a") as handle:
                        handle.write(json.dumps(row) + "\n")
    summarise(records)


def summarise(records: list[dict]) -> None:
    """Mean and spread over splits and fit seeds; FacRNN - low-rank paired by split and seed."""
    keys = [k for k, v in records[0].items() if isinstance(v, float) and k != "seconds"]
    by_model = {name: [r for r in records if r["model"] == name] for name in ("low-rank", "FacRNN")}
    print(f"\nover {len(by_model['FacRNN'])} fits per model (splits x seeds): mean (sd, min-max)")
    for key in keys:
        cells = []
        for name, rows in by_model.items():
            values = np.array([r[key] for r in rows])
            cells.append(
                f"{name} {values.mean():.3f} ({values.std():.3f}, "
                f"{values.min():.3f}-{values.max():.3f})"
            )
        paired = np.array(
            [a[key] - b[key] for a, b in zip(by_model["FacRNN"], by_model["low-rank"], strict=True)]
        )
        print(
            f"  {key:24s} " + "; ".join(cells) + f"; FacRNN - low-rank {paired.mean():+.3f} "
            f"(lower in {np.sum(paired < 0)} of {paired.size})"
        )


if __name__ == "__main__":
    main()
