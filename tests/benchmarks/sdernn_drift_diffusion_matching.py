r"""Drift-diffusion matching of three given SDEs by low-rank SDE RNNs, against the sampling floor.

The route of Nartallo-Kaluarachchi et al. (2026): the target's drift :math:`f(x)` and noise
:math:`G(x)` are given as functions, and a network's latent drift and noise factor are fitted to
them at states drawn from the target's stationary distribution
(:func:`probdyn.inference.match_sde`). Targets:

- ``double_well_multiplicative``: the double well with state-dependent noise
  :math:`G = 0.5\,\mathrm{diag}(\sqrt{0.1 + x_1^2}, 1)`;
- ``limit_cycle``: the Hopf normal form (:math:`\omega = 1`) with additive noise 0.2;
- ``lorenz``: Lorenz (10, 28, 8/3) with additive noise 1, standardised per dimension (an affine
  change of coordinates, applied exactly to :math:`f` and :math:`G`).

Each is fitted by a 64-unit (Lorenz: 128, :math:`\tau = 0.1`) tanh network of rank = dim with
``diffusion="state"``, and, as the control that shows the comparison can fail, by the same
network with constant (diagonal) noise. The fitted network is then run on its own
(Euler-Maruyama, 10 substeps per bin, started at target states, after a burn-in) and its stationary
sample compared with a held-out reference sample of the target of the same size: the state-space
KL of binned occupancy and the power-spectrum Hellinger distance
(:mod:`probdyn.analysis.metrics`), each averaged over ``--repeats`` independent samples and
beside its floor (the same average for independent target samples against the same reference:
rare well-to-well switches make one sample's distance vary by a factor of two). Drift and diffusion
errors (:func:`probdyn.algorithms.sde.matching_errors`) are on held-out target states.

    python tests/benchmarks/sdernn_drift_diffusion_matching.py [--steps 10000] [--seed 0]
        [--system lorenz] [--repeats 4] [--jsonl results.jsonl]
"""

import argparse
import json
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from probdyn.algorithms.sde import matching_errors  # noqa: E402
from probdyn.analysis.metrics import power_spectrum_hellinger, state_space_kl  # noqa: E402
from probdyn.data import systems  # noqa: E402
from probdyn.data.integrate import euler_maruyama_path  # noqa: E402
from probdyn.inference import match_sde  # noqa: E402
from probdyn.models import SDERNN  # noqa: E402

#: (bin width, bins per trial, burn-in bins, units, tau)
SETTINGS = {
    "double_well_multiplicative": (0.05, 400, 200, 64, 1.0),
    "limit_cycle": (0.05, 400, 200, 64, 1.0),
    "lorenz": (0.01, 400, 300, 128, 0.1),
}


def initial_states(spec, num_trials, seed):
    """The system's default initial distribution, in its own coordinates."""
    noise = jax.random.normal(jax.random.key(seed), (num_trials, spec.dim))
    return jnp.asarray(spec.initial_mean) + spec.initial_scale * noise


def target(system):
    """Drift, noise factor and initial states (trials, seed) in the benchmark's coordinates.

    Lorenz is standardised by a long reference run: :math:`x' = (x - m)/s`,
    :math:`f'(x') = f(m + s x')/s`, :math:`G' = G/s`.
    """
    spec = systems.SDE_SYSTEMS[system]
    drift = partial(spec.drift, p=spec.parameters)
    noise = spec.noise_factor()
    starts = partial(initial_states, spec)
    if system != "lorenz":
        return drift, noise, starts
    raw = sample(drift, noise, starts(20, 99), 0.01, 2000, 300, seed=99).reshape(-1, 3)
    m, s = raw.mean(0), raw.std(0)
    return (
        lambda x: drift(m + s * x) / s,
        jnp.diag(noise / s),
        lambda num_trials, seed: (starts(num_trials, seed) - m) / s,
    )


def sample(drift, noise, starts, dt, num_bins, burn_in, *, seed):
    """Paths (trial, bin, dim) from ``starts``: ``burn_in`` bins dropped, 10 substeps per bin."""
    paths = jax.jit(
        jax.vmap(
            lambda x0, k: euler_maruyama_path(
                drift, x0, noise, k, num_points=burn_in + num_bins, interval=dt, substeps=10
            )
        )
    )(jnp.asarray(starts), jax.random.split(jax.random.key(seed), len(starts)))
    return np.asarray(paths[:, burn_in:])


def run(system, args):
    dt, num_bins, burn_in, units, tau = SETTINGS[system]
    drift, noise, starts = target(system)
    dim = systems.SDE_SYSTEMS[system].dim

    def target_sample(seed, num_trials):
        return sample(drift, noise, starts(num_trials, seed), dt, num_bins, burn_in, seed=seed)

    train = target_sample(args.seed, args.trials)
    reference = target_sample(args.seed + 1000, args.trials)

    def distances(samples):
        """Mean KL and Hellinger to the reference over independent samples."""
        return {
            "kl": float(np.mean([state_space_kl(reference, x) for x in samples])),
            "hellinger": float(np.mean([power_spectrum_hellinger(reference, x) for x in samples])),
        }

    floor = distances(
        [target_sample(args.seed + 2000 + r, args.trials) for r in range(args.repeats)]
    )
    print(
        f"{system}: floor (target vs target) KL {floor['kl']:.4f}, "
        f"spectrum Hellinger {floor['hellinger']:.4f}",
        flush=True,
    )
    rows = []
    for diffusion in ("state", "diagonal"):
        model = SDERNN(
            num_units=units,
            rank=dim,
            tau=tau,
            diffusion=diffusion,
            observation="latent",
        )
        start = time.perf_counter()
        fit = match_sde(
            model,
            drift,
            noise,
            train,
            seed=args.seed,
            num_steps=args.steps,
            learning_rate=args.learning_rate,
            progress=False,
        )
        seconds = time.perf_counter() - start
        params = {name: jnp.asarray(value) for name, value in fit.params.items()}
        errors = matching_errors(model, fit.draws(), drift, noise, reference, on="states")
        rng = np.random.default_rng(args.seed)
        starts_from = train.reshape(-1, dim)
        field, factor = model.drift(params), model.noise_factor(params)
        generated = [
            sample(
                field,
                factor,
                starts_from[rng.choice(len(starts_from), args.trials)],
                dt,
                num_bins,
                burn_in,
                seed=args.seed + 3000 + r,
            )
            for r in range(args.repeats)
        ]
        fitted = distances(generated)
        kl, hellinger = fitted["kl"], fitted["hellinger"]
        row = {
            "system": system,
            "diffusion": diffusion,
            "seed": args.seed,
            "units": units,
            "steps": args.steps,
            "fit_s": round(seconds, 1),
            "final_loss": float(fit.losses[-1]),
            "drift_error": errors["drift_error"],
            "diffusion_error": errors["diffusion_error"],
            "kl": kl,
            "kl_floor": floor["kl"],
            "kl_ratio": kl / floor["kl"],
            "hellinger": hellinger,
            "hellinger_floor": floor["hellinger"],
            "hellinger_ratio": hellinger / floor["hellinger"],
        }
        rows.append(row)
        print(
            f"  {diffusion:9s} drift err {errors['drift_error']:.3f}  diffusion err "
            f"{errors['diffusion_error']:.3f}  KL {kl:.4f} ({kl / floor['kl']:.2f}x floor)  "
            f"Hellinger {hellinger:.4f} ({hellinger / floor['hellinger']:.2f}x floor)  "
            f"fit {seconds:.0f} s",
            flush=True,
        )
        if args.jsonl:
            with open(args.jsonl, "a") as handle:
                handle.write(json.dumps(row) + "\n")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(SETTINGS), action="append")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=4, help="samples averaged per distance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jsonl")
    args = parser.parse_args()
    for system in args.system or list(SETTINGS):
        run(system, args)


if __name__ == "__main__":
    main()
