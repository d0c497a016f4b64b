"""Co-smoothing, forward prediction and decoding on MC_Maze_Small, as a user runs them.

Runs ``probdyn nlb --folds K`` on the 75 training trials of ``mc_maze_small_train.h5``: K-fold
cross-validation (the trials shuffled with ``--seed``), each fold predicted from its held-in
spikes by a SeqVAE ensemble fitted to the other folds, scored by co-bps, fp-bps and velocity
R^2 beside the benchmark's smoothing baseline computed in the same run. Then, with
``--submission``, times the default ``probdyn nlb`` run that writes a submission (fit on a 60-
trial file, predict a 15-trial evaluation file that holds held-in spikes only).

    python tests/benchmarks/nlb_cosmoothing.py [--data ../shared/data] [--folds 5] [--seed 0]
        [--members 3] [--steps 700] [--inputs 0] [--submission] [--out results/nlb]

Writes ``cv.json`` (the per-fold table), ``report.html`` (scores, rates with their band, the
generator's fixed points) and ``summary.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import h5py
import numpy as np

from probdyn.analysis.metrics import co_bps
from probdyn.app.cli import main as probdyn


def write_split(source: Path, folder: Path, seed: int):
    """A 60-trial training file and a 15-trial evaluation input; returns paths and held trials."""
    with h5py.File(source, "r") as file:
        tensors = {key: np.asarray(file[key]) for key in file}
    order = np.random.default_rng(seed).permutation(tensors["train_spikes_heldin"].shape[0])
    fit, held = np.sort(order[:60]), np.sort(order[60:75])
    train_path, eval_path = folder / "mc_maze_small_train.h5", folder / "eval_input.h5"
    with h5py.File(train_path, "w") as file:
        for key, value in tensors.items():
            file.create_dataset(key, data=value[fit])
    with h5py.File(eval_path, "w") as file:
        file.create_dataset("eval_spikes_heldin", data=tensors["train_spikes_heldin"][held])
    return train_path, eval_path, held, tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("PROBDYN_DATA", "../shared/data"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--members", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--inputs", type=int)
    parser.add_argument("--submission", action="store_true", help="also time the default run")
    parser.add_argument("--out", default="results/nlb")
    args = parser.parse_args()
    source = Path(args.data) / "mc_maze_small" / "mc_maze_small_train.h5"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = ["--seed", str(args.seed), "--no-progress"]
    for flag, value in (("--members", args.members), ("--steps", args.steps),
                        ("--inputs", args.inputs)):
        if value is not None:
            options += [flag, str(value)]
    lines = []
    if args.folds:
        start = time.perf_counter()
        status = probdyn(["nlb", "--train", str(source), "--folds", str(args.folds),
                          "--table", str(out / "cv.json"), "--work", str(out / "work"),
                          "--report", str(out / "report.html"),
                          *options])
        seconds = time.perf_counter() - start
        if status:
            raise SystemExit(f"probdyn nlb --folds failed ({status})")
        table = json.loads((out / "cv.json").read_text())
        lines.append(f"{args.folds}-fold cross-validation, {seconds:.0f} s ({os.cpu_count()} cores)")
        lines.append("")
        lines.append("| fold | co-bps | baseline | fp-bps | baseline | velocity R2 | baseline "
                     "| members' co-bps | held-out LL, member 1 (nats/trial) |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for row in [*table["folds"], {"fold": "mean", **table["mean"]}]:
            fold = row["fold"] + 1 if isinstance(row["fold"], int) else row["fold"]
            members = ", ".join(f"{v:.3f}" for v in row.get("member_co_bps", []))
            lines.append(
                f"| {fold} | {row['co_bps']:.3f} | {row['baseline_co_bps']:.3f} "
                f"| {row['fp_bps']:.3f} | {row['baseline_fp_bps']:.3f} "
                f"| {row['velocity_r2']:.3f} | {row['baseline_velocity_r2']:.3f} | {members} "
                f"| {row['heldout_ll']:.1f} |"
            )
    if args.submission:
        folder = out / "submission"
        folder.mkdir(exist_ok=True)
        train_path, eval_path, held, tensors = write_split(source, folder, args.seed)
        start = time.perf_counter()
        status = probdyn(["nlb", "--train", str(train_path), "--eval-input", str(eval_path),
                          "--out", str(folder / "rates.h5"), *options])
        seconds = time.perf_counter() - start
        if status:
            raise SystemExit(f"probdyn nlb failed ({status})")
        with h5py.File(folder / "rates.h5", "r") as file:
            group = file["mc_maze_small"]
            score = co_bps(tensors["train_spikes_heldout"][held], group["eval_rates_heldout"][:])
            forward = co_bps(
                tensors["train_spikes_heldout_forward"][held],
                group["eval_rates_heldout_forward"][:],
            )
            keys = sorted(group)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        lines += ["", f"default run (60 fit / 15 evaluation trials): {seconds:.0f} s, peak "
                  f"{peak:.2f} GB; co-bps {score:.3f}, fp-bps {forward:.3f}; keys {keys}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
