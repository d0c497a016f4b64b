"""Co-smoothing on MC_Maze_Small: NODE through ``probdyn nlb`` against the smoothing baseline.

The 75 training trials of ``mc_maze_small_train.h5`` are split 60/15 (seeded). The 60 become a
training file, the 15 an evaluation file with held-in spikes only (the benchmark's layout); the
command ``probdyn nlb`` fits a NODE and writes predicted rates, and co-bps of its held-out rates
on the 15 trials is set against the benchmark's smoothing baseline (Gaussian-smoothed held-in
spikes, Poisson GLM) computed in the same run.

    python tests/benchmarks/nlb_cosmoothing.py [--data ../shared/data] [--steps 2000] [--seeds 3]
        [--refine 150]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from probdyn import nlb
from probdyn.cli import main as probdyn
from probdyn.data import load_nlb
from probdyn.metrics import co_bps


def write_split(source: Path, folder: Path, seed: int):
    """A 60-trial training file and a 15-trial evaluation input; returns their paths and order."""
    with h5py.File(source, "r") as file:
        tensors = {key: np.asarray(file[key]) for key in file}
    order = np.random.default_rng(seed).permutation(tensors["train_spikes_heldin"].shape[0])
    fit, held = order[:60], order[60:75]
    train_path, eval_path = folder / "mc_maze_small_train.h5", folder / "eval_input.h5"
    with h5py.File(train_path, "w") as file:
        for key, value in tensors.items():
            file.create_dataset(key, data=value[fit])
    with h5py.File(eval_path, "w") as file:
        file.create_dataset("eval_spikes_heldin", data=tensors["train_spikes_heldin"][held])
    return train_path, eval_path, held


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("PROBDYN_DATA", "../shared/data")
    parser.add_argument("--data", default=default, help="folder holding mc_maze_small/")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--refine", type=int, default=150, help="0: the encoder's draws only")
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--guide", default="amortised-delta")
    parser.add_argument("--tau", default="0.02")
    args = parser.parse_args()
    source = Path(args.data) / "mc_maze_small" / "mc_maze_small_train.h5"
    full = load_nlb(source, split="train")
    heldout = full.heldout.values

    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as folder:
            train_path, eval_path, held = write_split(source, Path(folder), seed)
            out = Path(folder) / "predictions.h5"
            start = time.perf_counter()
            status = probdyn(
                [
                    "nlb",
                    "--train", str(train_path),
                    "--eval-input", str(eval_path),
                    "--out", str(out),
                    "--steps", str(args.steps),
                    "--latent-dim", str(args.latent_dim),
                    "--seed", str(seed),
                    "--guide", args.guide,
                    "--tau", args.tau,
                    "--refine", str(args.refine),
                    "--no-progress",
                ]
            )  # fmt: skip
            seconds = time.perf_counter() - start
            assert status == 0
            with h5py.File(out, "r") as file:
                predicted = np.asarray(file["mc_maze_small"]["eval_rates_heldout"])
            train = load_nlb(train_path, split="train")
            target = full.isel(trial=held)
            _, baseline = nlb.smoothing_baseline(train, target)
        truth = target.spikes.values[..., heldout]
        print(
            f"split {seed}: NODE co-bps {co_bps(truth, predicted):.4f} ({seconds:.0f} s), "
            f"smoothing baseline {co_bps(truth, baseline):.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
