r"""Throughput against the number of devices: SVI steps/s, NUTS gradients/s, SMC particle-steps/s.

Each device count runs in a process of its own (JAX fixes the device count when it starts): on
CPU the host is split into ``N`` XLA devices (``--xla_force_host_platform_device_count``), on a
GPU machine the visible GPUs are used. Workloads:

``svi-sdernn``
    SDE RNN (64 units, rank 2, Gaussian emissions) on ``--trials`` x ``--bins`` x ``--neurons``
    simulated data, mean-field guide over the weights and every trial's noise path, full batch
    split over the devices. 4K steps in chunks of K; steps/s over the last three chunks (the
    first compiles), from ``SVIResult.chunk_timings``.
``svi-node``
    Neural-ODE sequential autoencoder (8 latents, 128 hidden, Poisson), amortised guide, on the
    same data as counts; full batch split over the devices; steps/s as above.
``nuts``
    8 chains on the 1-D OU posterior of tests/lds_cases.py (``chain_method="parallel"`` when
    more than one device): leapfrog gradients/s of a second run (the sampler is compiled once).
``smc``
    Tempered SMC with 2000 particles split over the devices, 4 repeats: particles x HMC steps
    per second, compilation included (a fresh program each call).

    python tests/benchmarks/device_throughput.py --devices 1 2 4 --trials 200 --x64
    python tests/benchmarks/device_throughput.py --devices 1 --trials 2000 --steps 5 \
        --workloads svi-sdernn svi-node
    python tests/benchmarks/device_throughput.py --platform gpu --trials 2000   # on a GPU
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORKLOADS = ("svi-sdernn", "svi-node", "nuts", "smc")


def measure(workload: str, args) -> dict:
    """Run one workload on every visible device; return its throughput."""
    import jax
    import numpy as np
    import xarray as xr

    jax.config.update("jax_enable_x64", args.x64)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lds_cases import ou_dataset, ou_model

    from probdyn.inference import log_evidence, nuts, svi
    from probdyn.models import NODE, SDERNN

    rng = np.random.default_rng(0)
    shape = (args.trials, args.bins, args.neurons)
    latent = np.cumsum(rng.normal(size=(args.trials, args.bins, 3)) * 0.2, axis=1)
    mixing = rng.normal(size=(3, args.neurons)) / np.sqrt(3)
    y = latent @ mixing + 0.3 * rng.normal(size=shape)
    dims = ("trial", "time", "neuron")
    gaussian = xr.Dataset({"y": (dims, y)}, attrs={"dt": 0.05})
    counts = xr.Dataset(
        {"spikes": (dims, rng.poisson(np.exp(0.5 * np.tanh(y))))}, attrs={"dt": 0.05}
    )
    out = {
        "workload": workload,
        "devices": jax.device_count(),
        "device": str(jax.devices()[0]),
        "float": 64 if args.x64 else 32,
    }

    def svi_rate(model, data, **options):
        k = args.steps
        fit = svi(
            model, data, num_steps=4 * k, seed=0, checkpoint_every=k, progress=False, **options
        )
        steps, seconds = fit.chunk_timings[1:].sum(axis=0)  # the first chunk compiles
        return {"steps_per_s": steps / seconds, "first_chunk_s": fit.chunk_timings[0, 1]}

    if workload == "svi-sdernn":
        model = SDERNN(num_units=64, rank=2, emission_dim=args.neurons)
        out |= svi_rate(model, gaussian, guide="normal", learning_rate=1e-3)
    elif workload == "svi-node":
        model = NODE(latent_dim=8, num_neurons=args.neurons, hidden=128)
        out |= svi_rate(model, counts, guide="amortised-delta", learning_rate=1e-3)
    elif workload == "nuts":
        method = "parallel" if jax.device_count() > 1 else "vectorized"
        options = dict(num_warmup=500, num_samples=500, num_chains=8, seed=1, progress=False)
        nuts(ou_model(), ou_dataset(0), chain_method=method, **options)  # compiles
        start = time.perf_counter()
        result = nuts(ou_model(), ou_dataset(0), chain_method=method, **options)
        seconds = time.perf_counter() - start
        out |= {"gradients_per_s": float(result.sample_stats["n_steps"].sum()) / seconds}
    else:
        start = time.perf_counter()
        evidence = log_evidence(
            ou_model(), ou_dataset(0), method="smc", seed=2, num_particles=2000, num_repeats=4
        )
        seconds = time.perf_counter() - start
        moves = 2000 * 10 * sum(evidence.diagnostics["tempering_steps"])
        out |= {"particle_steps_per_s": moves / seconds, "seconds": seconds}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--platform", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--bins", type=int, default=70)
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--x64", action="store_true", help="double precision (default: float32)")
    parser.add_argument("--steps", type=int, default=20, help="K: SVI steps per timed chunk")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args)), flush=True)
        return
    counts = args.devices if args.platform == "cpu" else [None]
    for count in counts:
        env = dict(os.environ)
        if count is not None:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"
            env["JAX_PLATFORMS"] = "cpu"
        for workload in args.workloads:
            command = [sys.executable, __file__, *sys.argv[1:], "--worker", workload]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                print(
                    json.dumps(
                        {"workload": workload, "devices": count, "error": done.stderr[-800:]}
                    )
                )
            else:
                print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
