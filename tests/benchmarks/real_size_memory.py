"""Peak resident memory and wall time of ``probdyn fit`` at real sizes, and of what reads its runs.

Each cell is one ``probdyn fit`` process (family x inference x evidence x recording), timed and
measured from outside: its peak resident memory is the kernel's high-water mark (VmHWM, polled
every 0.2 s, and the rusage of the finished process). Then, per recording, ``probdyn compare``
over the runs that finished, and ``probdyn fixed-points`` and ``probdyn report`` on each.

Recordings: the MC_Maze_Small NWB test file (100 trials, 107 units, 700 ms around movement onset)
binned at 20 ms and at 5 ms (``$PROBDYN_DATA`` or ../shared/data), and a synthetic Poisson
recording ten times larger than the 5 ms one in every direction that matters (1000 trials x 140
bins x 200 neurons, a rotating 4-D latent state), written once to the output folder.

    python tests/benchmarks/real_size_memory.py --out bench-memory                  # all cells
    python tests/benchmarks/real_size_memory.py --only LDS:svi:iwae:nwb20 SDERNN:svi:iwae:nwb5
    python tests/benchmarks/real_size_memory.py --families LDS --recordings nwb20 --timeout 600
    python tests/benchmarks/real_size_memory.py --scaling   # peak memory vs trials and draws
    python tests/benchmarks/real_size_memory.py --demo      # probdyn demo --recording mc_maze_small

Cells are ``FAMILY:METHOD:EVIDENCE:RECORDING``. A cell that runs past ``--timeout`` is stopped
and recorded with its peak so far; results go to ``OUT/results.jsonl`` (one line per cell, kept
across invocations, so cells can be run a few at a time) and ``OUT/table.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("PROBDYN_DATA", Path(__file__).resolve().parents[2] / "../shared/data"))
NWB = DATA / "mc_maze_small" / "sub-Jenkins_ses-small_desc-test_ecephys.nwb"

FAMILIES = {
    "LDS": {"latent_dim": 4, "observation": "poisson"},
    "SDERNN": {"num_units": 30, "rank": 4, "observation": "poisson"},
    "HMM": {"num_states": 4, "observation": "poisson"},
    # Its weights by an amortised guide (encoder over each trial's initial state); num_neurons
    # is the recording's.
    "NODE": {"latent_dim": 8, "hidden": 64},
}
#: Neurons per recording (the NODE's num_neurons).
NEURONS = {"nwb20": 107, "nwb5": 107, "synthetic": 200}
METHODS = {
    "svi": {"method": "svi", "num_steps": 1500},
    "nuts": {"method": "nuts", "num_warmup": 200, "num_samples": 200, "num_chains": 2},
}
EVIDENCE = ("iwae", "smc", "bridge", "laplace")
#: Evidence options per method (the CLI's defaults otherwise); SMC with fewer particles so that
#: a cell can finish at all, and the 10x synthetic recording with a shorter fit and bound.
EVIDENCE_OPTIONS = {"smc": {"num_particles": 100, "num_repeats": 2}}
SYNTHETIC = {
    "inference": {"num_steps": 500, "num_draws": 100},
    "iwae": {"num_importance": 100, "num_batches": 4},
}
RECORDINGS = ("nwb20", "nwb5", "synthetic")


def synthetic_recording(path: Path, seed: int = 0) -> Path:
    """1000 trials x 140 bins x 200 neurons of Poisson counts from a rotating 4-D latent."""
    if path.exists():
        return path
    import xarray as xr

    rng = np.random.default_rng(seed)
    trials, bins, neurons, dt = 1000, 140, 200, 0.005
    angle = 2 * np.pi * dt * np.array([2.0, 5.0])
    rotation = np.zeros((4, 4))
    for k, a in enumerate(angle):
        rotation[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = 0.995 * np.array(
            [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
        )
    x = np.zeros((trials, bins, 4))
    x[:, 0] = rng.normal(size=(trials, 4))
    for t in range(1, bins):
        x[:, t] = x[:, t - 1] @ rotation.T + 0.1 * rng.normal(size=(trials, 4))
    loadings = rng.normal(scale=0.4, size=(neurons, 4))
    rates = np.exp(x @ loadings.T + np.log(0.1))  # about 0.1 spikes per 5 ms bin at rest
    counts = rng.poisson(rates).astype(np.int32)
    xr.Dataset(
        {"spikes": (("trial", "time", "neuron"), counts)},
        coords={"time": np.arange(bins) * dt},
        attrs={"dt": dt},
    ).to_netcdf(path)
    return path


def data_section(recording: str, out: Path) -> str:
    if recording == "synthetic":
        path = synthetic_recording(out / "synthetic_1000x140x200.nc")
        return f'[data]\nsource = "netcdf"\npath = "{path}"\n'
    bin_size = {"nwb20": 0.02, "nwb5": 0.005}[recording]
    return textwrap.dedent(
        f"""
        [data]
        source = "nwb"
        path = "{NWB}"
        [data.options]
        bin_size = {bin_size}
        align = "move_onset_time"
        """
    )


def config_text(family, method, evidence, recording, out: Path, run: Path) -> str:
    hyperparameters = dict(FAMILIES[family])
    settings = dict(METHODS[method])
    if family == "NODE":
        hyperparameters["num_neurons"] = NEURONS[recording]
        settings["guide"] = "amortised"
    hyper = "\n".join(f"{k} = {json.dumps(v)}" for k, v in hyperparameters.items())
    options = dict(EVIDENCE_OPTIONS.get(evidence, {}))
    if recording == "synthetic":
        settings.update(SYNTHETIC["inference"] if method == "svi" else {})
        options.update(SYNTHETIC.get(evidence, {}))
    inference = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    table = ", ".join(f"{k} = {json.dumps(v)}" for k, v in options.items())
    return (
        f'seed = 0\nout = "{run}"\n'
        + data_section(recording, out)
        + f'\n[model]\nfamily = "{family}"\n[model.hyperparameters]\n{hyper}\n'
        + f'\n[inference]\n{inference}\nevidence = "{evidence}"\n'
        + f"evidence_options = {{ {table} }}\n"
    )


def peak_of(pid: int) -> int:
    """VmHWM of a live process in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_resident(pid: int) -> int:
    """Resident memory (VmRSS) of a process and all its descendants now, in bytes."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending += [int(c) for c in children.read().split()]
        except OSError:
            continue
    return total


def measured(command: list[str], timeout: float, log: Path) -> dict:
    """Run ``command``; its exit code, wall time, peak resident memory (its own and, polled,
    of it with its worker processes together: ``tree_peak_gb``)."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    peak, tree_peak, timed_out = 0, 0, False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)  # reaps it once it ends
        if pid:
            break
        peak = max(peak, peak_of(process.pid))
        tree_peak = max(tree_peak, tree_resident(process.pid))
        if not timed_out and time.perf_counter() - start > timeout:
            process.kill()
            timed_out = True
        time.sleep(0.2)
    code = os.waitstatus_to_exitcode(status)
    peak = max(peak, usage.ru_maxrss * 1024)
    return {
        "exit": code,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_gb": round(peak / 1e9, 3),
        "tree_peak_gb": round(max(tree_peak, peak) / 1e9, 3),
        "timed_out": timed_out,
        "last_line": (log.read_text().strip().splitlines() or [""])[-1][:200],
    }


def run_cell(cell: str, out: Path, timeout: float, extra: list[str]) -> dict:
    family, method, evidence, recording = cell.split(":")
    run = out / "runs" / cell.replace(":", "-")
    config = out / "configs" / (cell.replace(":", "-") + ".toml")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(config_text(family, method, evidence, recording, out, run))
    command = [sys.executable, "-m", "probdyn.app.cli", "fit", str(config), "--no-progress", *extra]
    result = measured(command, timeout, out / "logs" / f"{run.name}.log")
    run_file = run / "run.nc"
    result.update(cell=cell, run=str(run_file), has_evidence=False)
    if run_file.exists():
        import xarray as xr

        with xr.open_datatree(run_file) as tree:
            result["has_evidence"] = "evidence" in tree.children
    return result


def readers(out: Path, results: list[dict], timeout: float) -> list[dict]:
    """compare per recording; fixed-points and report per finished run."""
    rows = []
    finished = [r for r in results if r["has_evidence"]]
    for recording in RECORDINGS:
        runs = [r["run"] for r in finished if r["cell"].endswith(":" + recording)]
        if runs:
            command = [sys.executable, "-m", "probdyn.app.cli", "compare", *runs]
            rows.append(
                {
                    "cell": f"compare {recording} ({len(runs)} runs)",
                    **measured(command, timeout, out / "logs" / f"compare-{recording}.log"),
                }
            )
    for r in finished:
        for verb in ("fixed-points", "report"):
            command = [sys.executable, "-m", "probdyn.app.cli", verb, r["run"]]
            name = r["cell"].replace(":", "-")
            rows.append(
                {
                    "cell": f"{verb} {r['cell']}",
                    **measured(command, timeout, out / "logs" / f"{verb}-{name}.log"),
                }
            )
    return rows


SCALING_JOB = """
import sys
import xarray as xr
from probdyn.inference import log_evidence, svi
from probdyn.models import LDS
path, trials, draws = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ds = xr.open_dataset(path).isel(trial=slice(0, trials)).load()
model = LDS(latent_dim=4, observation="poisson")
fit = svi(model, ds, num_steps=200, seed=0, progress=False)
evidence = log_evidence(
    model, ds, method="iwae", seed=0, svi_result=fit, num_importance=draws // 4, num_batches=4
)
print(evidence)
"""


def scaling(out: Path, timeout: float) -> list[dict]:
    """Peak memory of a short fit plus the IWAE bound against trials and importance draws."""
    path = synthetic_recording(out / "synthetic_1000x140x200.nc")
    rows = []
    for trials, draws in [(50, 200), (100, 200), (200, 200), (400, 200), (100, 1600)]:
        command = [sys.executable, "-c", SCALING_JOB, str(path), str(trials), str(draws)]
        log = out / "logs" / f"scaling-{trials}-{draws}.log"
        row = {"cell": f"scaling: {trials} trials, {draws} importance draws"}
        rows.append({**row, **measured(command, timeout, log)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def demo(out: Path, timeout: float, quick: bool) -> dict:
    """``probdyn demo --recording mc_maze_small``: wall time and peak memory of all its processes."""
    target = out / ("demo-quick" if quick else "demo")
    command = [sys.executable, "-m", "probdyn.app.cli", "demo", "--recording", "mc_maze_small"]
    command += ["--out", str(target), "--no-progress"] + (["--quick"] if quick else [])
    row = {"cell": "demo --recording mc_maze_small" + (" --quick" if quick else "")}
    return {**row, **measured(command, timeout, out / "logs" / f"{target.name}.log")}


def table(rows: list[dict]) -> str:
    lines = [
        "| cell | exit | wall s | peak GB | with workers GB | evidence saved | last line |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        note = "timed out" if r.get("timed_out") else r.get("last_line", "").replace("|", "/")
        lines.append(
            f"| {r['cell']} | {r['exit']} | {r['seconds']} | {r['peak_gb']} | "
            f"{r.get('tree_peak_gb', '-')} | "
            f"{'yes' if r.get('has_evidence') else '-'} | {note} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-memory"))
    parser.add_argument("--only", nargs="*", help="cells FAMILY:METHOD:EVIDENCE:RECORDING")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--evidence", nargs="*", default=list(EVIDENCE))
    parser.add_argument("--recordings", nargs="*", default=list(RECORDINGS))
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per process")
    parser.add_argument("--memory-limit", help="passed to probdyn fit")
    parser.add_argument(
        "--demo", action="store_true", help="only the demo on the shipped real recording"
    )
    parser.add_argument(
        "--scaling", action="store_true", help="only the trials x draws scaling of the IWAE step"
    )
    parser.add_argument(
        "--no-readers", action="store_true", help="skip compare/fixed-points/report"
    )
    args = parser.parse_args()
    if not NWB.exists():
        sys.exit(f"needs {NWB} (set PROBDYN_DATA)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)
    cells = args.only or [
        ":".join(c)
        for c in itertools.product(args.families, args.methods, args.evidence, args.recordings)
    ]
    if args.demo:
        rows = [demo(args.out, args.timeout, quick) for quick in (True, False)]
        (args.out / "demo.md").write_text(table(rows))
        print(table(rows))
        return
    if args.scaling:
        rows = scaling(args.out, args.timeout)
        (args.out / "scaling.md").write_text(table(rows))
        print(table(rows))
        return
    extra = ["--memory-limit", args.memory_limit] if args.memory_limit else []
    store = args.out / "results.jsonl"
    for cell in cells:
        result = run_cell(cell, args.out, args.timeout, extra)
        print(json.dumps(result), flush=True)
        with open(store, "a") as handle:
            handle.write(json.dumps(result) + "\n")
    latest = {}
    for line in store.read_text().splitlines():
        row = json.loads(line)
        latest[row["cell"]] = row
    rows = list(latest.values())
    if not args.no_readers:
        rows += readers(args.out, rows, args.timeout)
    (args.out / "table.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
