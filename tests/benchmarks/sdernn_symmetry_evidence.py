r"""Evidence for asymmetric over symmetric connectivity on data with nonequilibrium currents.

For each seed, paths of the 2-D Ornstein-Uhlenbeck process
:math:`dx = -(I - wR)x\,dt + \sigma dW` (:math:`R` the 90-degree rotation; entropy production
:math:`2w^2` per unit time) are fitted, observed in their latents, by two linear 2-unit SDE RNNs
that differ only in ``symmetric``; each log evidence is estimated by ``--method`` (Laplace by
default: seven parameters and a likelihood close to Gaussian in them; ``smc`` checks it). Prints per seed
the log Bayes factor (asymmetric over symmetric) with its standard error, and the count of
seeds that prefer the asymmetric network. ``--w 0`` is the control: data at equilibrium, where
the symmetric network should not lose.

    python tests/benchmarks/sdernn_symmetry_evidence.py [--seeds 10] [--w 0.3] [--method smc]
"""

import argparse
import math
import time

import jax

jax.config.update("jax_enable_x64", True)

from probdyn.data import simulate_sde  # noqa: E402
from probdyn.inference import log_evidence  # noqa: E402
from probdyn.models import SDERNN  # noqa: E402

#: fewer particles and shorter HMC moves than the defaults: seven parameters, one seed a minute.
SMC_OPTIONS = {"smc": {"num_particles": 200, "num_mcmc_steps": 5, "num_integration_steps": 10}}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--w", type=float, default=0.3, help="rotation (antisymmetric) strength")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--timesteps", type=int, default=50)
    parser.add_argument("--dt", type=float, default=0.1)
    parser.add_argument("--method", choices=("laplace", "smc"), default="laplace")
    args = parser.parse_args()
    duration = args.trials * (args.timesteps - 1) * args.dt
    print(
        f"OU with w = {args.w}: entropy production {2 * args.w**2:.3f} per unit time, "
        f"{args.trials} trials x {args.timesteps} bins, dt = {args.dt} ({duration:.0f} time units)"
    )
    print(f"{'seed':>4} {'log Z asym':>11} {'log Z sym':>11} {'log BF':>8} {'se':>6} {'s':>6}")
    wins = 0
    for seed in range(args.seeds):
        ds = simulate_sde(
            "ou",
            num_trials=args.trials,
            num_timesteps=args.timesteps,
            dt=args.dt,
            parameters={"w": args.w},
            seed=seed,
        )
        start = time.perf_counter()
        result = {
            symmetric: log_evidence(
                SDERNN(
                    num_units=2, nonlinearity="linear", observation="latent", symmetric=symmetric
                ),
                ds,
                method=args.method,
                seed=seed,
                **SMC_OPTIONS.get(args.method, {}),
            )
            for symmetric in (False, True)
        }
        log_bf = result[False].log_evidence - result[True].log_evidence
        se = math.hypot(result[False].standard_error, result[True].standard_error)
        wins += log_bf > 0
        print(
            f"{seed:>4} {result[False].log_evidence:>11.2f} {result[True].log_evidence:>11.2f} "
            f"{log_bf:>8.2f} {se:>6.2f} {time.perf_counter() - start:>6.1f}",
            flush=True,
        )
    print(f"asymmetric preferred in {wins} of {args.seeds} seeds")


if __name__ == "__main__":
    main()
