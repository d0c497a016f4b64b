"""NUTS and SMC at the cost the posterior allows: today's defaults against the new ones, one run.

NUTS on an LDS(latent_dim=2) fitted to 10 trials x 100 bins x 4 Gaussian channels (Kalman
marginal, float64), 2 chains of 500 draws each:

- before: the redundant parameterisation (x_0 ~ N(0, I), diagonal process noise q), NUTS
  from the prior's median with 500 warm-up steps adapting a diagonal mass matrix (the
  defaults before issue 29);
- between them, each change alone (the redundant form warm-started, the canonical form cold);
- after: the canonical parameterisation (identity process noise, free initial covariance, C
  lower trapezoidal), an SVI fit (full-rank Gaussian guide, 2000 steps), NUTS started from
  its draws with its covariance as dense inverse mass matrix, 200 warm-up steps tuning only
  the step size.

``--family sdernn``: SDERNN(num_units=8, rank=2) on 5 trials x 30 bins x 4 channels (paths
sampled); ``--family facrnn``: FacRNN(2 groups of rank 2, block penalty) on 6 trials x 40 bins
x 8 neurons; a fifth run warm-starts from a mean-field guide and adapts the diagonal mass.
``--rows`` picks runs by index (the "before" run always).

Printed per run: wall time (SVI included), mean leapfrog steps per draw and tree depth, the
bulk ESS of the fixed point in observation space (found by Newton from the latent origin, the
same state in either parameterisation, and read out; smallest over channels) per second, the
class probabilities (eigenvalues of the Jacobian) and each channel's 90% interval of the fixed
point.

Evidence on the 15-dimensional LDS(latent_dim=1) of docs/evidence.md (3 trials x 40 bins x 4
channels, seed 0): tempered SMC from the prior (200 particles x 2 runs, today's) against SMC
from the Laplace reference on the same model (``--runs`` estimates of 200 particles x 2 runs
each, to compare their spread with the reported standard errors), both against an
independent reference value: importance sampling of 200 000 draws from a multivariate t
(5 degrees of freedom) at the Laplace approximation, widened 1.5 times.

The fixed-point calibration test (20 data sets) with NUTS cold and warm-started, timed.

    python tests/benchmarks/sampler_geometry.py [--part nuts|smc|calibration|all] [--runs 10]
        [--family lds|sdernn|facrnn] [--num-samples 500] [--rows 0,2,3]
"""

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import arviz as az  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import xarray as xr  # noqa: E402
from test_compare import _lds_recording  # noqa: E402

from probdyn.inference import bind, log_evidence, nuts, svi  # noqa: E402
from probdyn.inference.reference import laplace_reference  # noqa: E402
from probdyn.model import prior_predictive  # noqa: E402
from probdyn.models import LDS, SDERNN, FacRNN  # noqa: E402


def rotation_recording(seed=0, trials=10, bins=100, channels=4) -> xr.Dataset:
    """A damped rotation (0.95, 0.3 rad per bin), q = 0.3, r = 0.5, random C and d."""
    rng = np.random.default_rng(seed)
    angle = 0.3
    A = 0.95 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    b = np.array([0.1, -0.05])
    C, d = rng.normal(size=(channels, 2)), rng.normal(size=channels)
    y = np.zeros((trials, bins, channels))
    for s in range(trials):
        x = rng.normal(size=2)
        for t in range(bins):
            y[s, t] = C @ x + d + 0.5 * rng.normal(size=channels)
            x = A @ x + b + 0.3 * rng.normal(size=2)
    return xr.Dataset({"y": (("trial", "time", "neuron"), y)}, attrs={"dt": 1.0})


def sdernn_recording(seed=0, trials=5, bins=30, channels=4) -> xr.Dataset:
    """A rank-2 SDE RNN (8 units, tanh) with one stable spiral, read by 4 Gaussian channels.

    The left factors M are random, the right ones N = n M (M^T M)^{-1} K^T so that the latent
    overlap N^T M / n is K = [[0.5, -1.2], [1.2, 0.5]]: linearised at the origin the latent
    drift is -z + K z, a damped rotation. b random (0.3), sigma = 0.5, r = 0.3, dt = 0.2.
    """
    rng = np.random.default_rng(seed)
    n = 8
    M = rng.normal(size=(n, 2))
    overlap = np.array([[0.5, -1.2], [1.2, 0.5]])
    truth = {
        "M": M,
        "N": n * M @ np.linalg.inv(M.T @ M) @ overlap.T,
        "b": 0.3 * rng.normal(size=n),
        "sigma": np.asarray(0.5),
        "C": rng.normal(size=(channels, 2)),
        "d": rng.normal(size=channels),
        "r": np.full(channels, 0.3),
    }
    return _simulated(
        SDERNN(num_units=n, rank=2, parameterisation="redundant"),
        truth,
        seed,
        trials,
        bins,
        channels,
        dt=0.2,
    )


def facrnn_recording(seed=0, trials=6, bins=40, neurons=8) -> xr.Dataset:
    """A FacRNN of two groups of rank 2 (8 neurons, tanh) whose latent coupling is two blocks.

    A random (scaled 1/2), B = M A^+ with M = BA block diagonal, each block a rotation by 0.4
    rad scaled by 0.9, so each group is a damped oscillator of its own; a = 0, b random
    (0.2), sigma = 0.3 and the seed's bandwidth rule for the latent noise.
    """
    rng = np.random.default_rng(seed)
    A = 0.5 * rng.normal(size=(neurons, 4))
    angle = 0.4
    block = 0.9 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    coupling = np.zeros((4, 4))
    coupling[:2, :2], coupling[2:, 2:] = block, block.T
    truth = {
        "A": A,
        "a": np.zeros(neurons),
        "B": coupling @ np.linalg.pinv(A),
        "b": 0.2 * rng.normal(size=4),
        "sigma": np.full(neurons, 0.3),
    }
    model = FacRNN(num_neurons=neurons, num_groups=2, group_rank=2, parameterisation="redundant")
    return _simulated(model, truth, seed, trials, bins, neurons)


def _simulated(model, truth, seed, trials, bins, channels, dt=1.0) -> xr.Dataset:
    """The model's prior predictive with every parameter fixed at ``truth``."""
    fixed = type(model)(
        **{
            **{f.name: getattr(model, f.name) for f in dataclasses.fields(model)},
            "priors": {
                k: dist.Delta(jnp.asarray(v), event_dim=np.ndim(v)) for k, v in truth.items()
            },
        }
    )
    y = prior_predictive(
        fixed,
        seed=seed,
        num_samples=1,
        num_trials=trials,
        num_timesteps=bins,
        emission_dim=channels,
        dt=dt,
    )["y"][0]
    return xr.Dataset({"y": (("trial", "time", "neuron"), np.asarray(y))}, attrs={"dt": dt})


def fixed_point_summary(model, samples: dict) -> dict:
    """The fixed point Newton finds from the latent origin, per draw, in observation space.

    The latent origin is the same state in every parameterisation of a family (x = 0 for the
    LDS, the units at b_perp for the SDE RNN, the activity a for the FacRNN), so every form
    starts from the same point. Returned: the location C z* + d (chain, draw, channel), the
    class of each draw (flows: stable where every eigenvalue of the Jacobian has a negative
    real part; maps: modulus below one) and the share of draws whose Newton residual is below
    1e-8.
    """
    names = [k for k in samples if k not in ("latent_noise", "latents", "y")]
    leading = np.shape(samples[names[0]])[:2]
    flat = {k: jnp.asarray(samples[k]).reshape(-1, *np.shape(samples[k])[2:]) for k in names}
    flow = model.kind == "flow"

    def one(params):
        def residual(z):
            value = model.vector_field(params, z)
            return value if flow else value - z

        def newton(z, _):
            return z - jnp.linalg.solve(jax.jacfwd(residual)(z), residual(z)), None

        z = jax.lax.scan(newton, jnp.zeros(model.latent_dim), None, length=60)[0]
        jacobian = jax.jacfwd(model.vector_field, argnums=1)(params, z)
        return (
            model.emission_mean(params, z),
            jnp.linalg.eigvals(jacobian),
            jnp.max(jnp.abs(residual(z))),
        )

    location, eigenvalues, error = (np.asarray(v) for v in jax.vmap(one)(flat))
    stable = np.all(eigenvalues.real < 0 if flow else np.abs(eigenvalues) < 1, axis=-1)
    spiral = np.any(np.abs(eigenvalues.imag) > 1e-9, axis=-1)
    kind = np.where(stable, np.where(spiral, "stable spiral", "stable node"), "not stable")
    return {
        "location": location.reshape(*leading, -1),
        "class": kind.reshape(leading),
        "converged": float(np.mean(error < 1e-8)),
    }


def nuts_row(label, model, ds, *, warm, num_samples=500):
    """One NUTS run: ``warm`` None (cold, 500 warm-up steps adapting a diagonal mass),
    ``"dense"`` (2000 SVI steps of a full-rank Gaussian guide, its covariance as dense inverse
    mass, 200 warm-up steps tuning the step size) or ``"diagonal"`` (2000 SVI steps of a
    mean-field guide, its variances as the starting diagonal mass, adapted over 500 warm-up
    steps)."""
    start = time.perf_counter()
    options = {"num_samples": num_samples, "num_chains": 2, "seed": 0, "progress": False}
    if warm == "dense":
        fit = svi(model, ds, num_steps=2000, seed=0, guide="mvn", progress=False)
        result = nuts(model, ds, init=fit, dense_mass=True, num_warmup=200, **options)
    elif warm == "diagonal":
        fit = svi(model, ds, num_steps=2000, seed=0, guide="normal", progress=False)
        result = nuts(model, ds, init=fit, adapt_mass_matrix=True, num_warmup=500, **options)
    else:
        result = nuts(model, ds, num_warmup=500, **options)
    seconds = time.perf_counter() - start
    summary = fixed_point_summary(model, result.samples)
    location = summary["location"]
    ess = min(float(az.ess(location[:, :, n], method="bulk")) for n in range(location.shape[-1]))
    classes, counts = np.unique(summary["class"], return_counts=True)
    steps = result.sample_stats["n_steps"]
    return {
        "label": label,
        "seconds": seconds,
        "steps": float(steps.mean()),
        "depth": float(result.sample_stats["tree_depth"].mean()),
        "ess": ess,
        "ess_per_s": ess / seconds,
        "divergences": int(result.divergences.sum()),
        "classes": dict(
            zip(classes.tolist(), (counts / counts.sum()).round(3).tolist(), strict=True)
        ),
        "converged": summary["converged"],
        "interval": np.quantile(location.reshape(-1, location.shape[-1]), [0.05, 0.95], axis=0),
    }


#: family -> (recording, canonical model, redundant model, description)
NUTS_CASES = {
    "lds": lambda: (
        rotation_recording(),
        LDS(latent_dim=2),
        LDS(latent_dim=2, parameterisation="redundant"),
        "LDS(latent_dim=2), 10 trials x 100 bins x 4 channels",
    ),
    "sdernn": lambda: (
        sdernn_recording(),
        SDERNN(num_units=8, rank=2),
        SDERNN(num_units=8, rank=2, parameterisation="redundant"),
        "SDERNN(num_units=8, rank=2), 5 trials x 30 bins x 4 channels, paths sampled",
    ),
    "facrnn": lambda: (
        facrnn_recording(),
        # The block penalty: under NUTS the PC penalty's program grew by about 35 MB per
        # iteration here (2.6 GB after 60, 9.2 GB after 240 iterations; killed for memory in a
        # full run), the block penalty and no penalty stayed at 1 GB.
        FacRNN(num_neurons=8, num_groups=2, group_rank=2, correlation="block"),
        FacRNN(
            num_neurons=8,
            num_groups=2,
            group_rank=2,
            correlation="block",
            parameterisation="redundant",
        ),
        "FacRNN(2 groups x rank 2, block penalty), 6 trials x 40 bins x 8 neurons",
    ),
}


def run_nuts(family: str, num_samples: int, which: list[int] | None = None):
    ds, canonical, redundant, description = NUTS_CASES[family]()
    runs = [
        ("before: redundant, cold start", redundant, None),
        ("redundant, SVI warm start (dense)", redundant, "dense"),
        ("canonical, cold start", canonical, None),
        ("after: canonical, SVI warm start (dense)", canonical, "dense"),
        ("canonical, SVI warm start (diagonal, adapted)", canonical, "diagonal"),
    ]
    rows = [
        nuts_row(label, model, ds, warm=warm, num_samples=num_samples)
        for i, (label, model, warm) in enumerate(runs)
        if which is None or i in which or i == 0
    ]
    before = rows[0]
    print(f"\nNUTS, {description}, 2 chains x {num_samples} draws")
    print(
        "| run | wall s | leapfrog/draw | tree depth | min ESS fixed point | ESS/s | ESS/s vs "
        "before | divergences | classes | Newton converged |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['label']} | {r['seconds']:.1f} | {r['steps']:.1f} | {r['depth']:.2f} | "
            f"{r['ess']:.0f} | {r['ess_per_s']:.2f} | "
            f"{r['ess_per_s'] / before['ess_per_s']:.1f} | {r['divergences']} | "
            f"{r['classes']} | {r['converged']:.3f} |",
            flush=True,
        )
    for r in rows[1:]:
        for n in range(before["interval"].shape[1]):
            lo = max(before["interval"][0, n], r["interval"][0, n])
            hi = min(before["interval"][1, n], r["interval"][1, n])
            print(
                f"{r['label']}, channel {n}: 90% before [{before['interval'][0, n]:.3f}, "
                f"{before['interval'][1, n]:.3f}], this [{r['interval'][0, n]:.3f}, "
                f"{r['interval'][1, n]:.3f}], overlap {'yes' if lo < hi else 'NO'}"
            )


def importance_reference(model, ds, *, num_draws=200_000, df=5.0, widen=1.5, seed=0):
    """log p(y) by importance sampling from a multivariate t at the Laplace approximation."""
    density = bind(model, model.prepare(ds))
    q = laplace_reference(density, jax.random.key(seed), num_starts=8)
    chol = widen * q.chol
    dim = density.dim
    key_normal, key_chi = jax.random.split(jax.random.key(seed + 1))
    normal = jax.random.normal(key_normal, (num_draws, dim))
    chi2 = 2.0 * jax.random.gamma(key_chi, df / 2.0, (num_draws,))
    z = q.mean + (normal @ chol.T) * jnp.sqrt(df / chi2)[:, None]
    white = jax.scipy.linalg.solve_triangular(chol, (z - q.mean).T, lower=True).T
    log_t = (
        jax.scipy.special.gammaln((df + dim) / 2)
        - jax.scipy.special.gammaln(df / 2)
        - 0.5 * dim * jnp.log(df * jnp.pi)
        - jnp.sum(jnp.log(jnp.diagonal(chol)))
        - 0.5 * (df + dim) * jnp.log1p(jnp.sum(white**2, axis=1) / df)
    )
    log_p = jax.lax.map(density.log_posterior, z, batch_size=5000)
    log_w = np.asarray(log_p - log_t)
    top = log_w.max()
    w = np.exp(log_w - top)
    estimate = top + np.log(w.mean())
    se = w.std(ddof=1) / np.sqrt(num_draws) / w.mean()
    ess = w.sum() ** 2 / (w**2).sum()
    return estimate, se, ess


def smc_row(model, ds, label, exact, seed, **options):
    result = log_evidence(
        model,
        ds,
        method="smc",
        seed=seed,
        num_particles=options.pop("num_particles", 200),
        num_repeats=options.pop("num_repeats", 2),
        progress=False,
        **options,
    )
    error = "" if exact is None else f"{result.log_evidence - exact:+.3f}"
    print(
        f"| {model.parameterisation} | {label}, 200 x 2 (seed {seed}) | {result.log_evidence:.3f} | "
        f"{result.standard_error:.3f} | {error} | {result.seconds:.1f} | "
        f"{result.diagnostics['tempering_steps']} |",
        flush=True,
    )
    return result


def run_smc(runs: int):
    ds = _lds_recording(1, 0)
    print("\nEvidence, LDS(latent_dim=1), 3 trials x 40 bins x 4 channels (15 free dimensions)")
    print(
        "| model | method | estimate | reported se | error vs reference | wall s | tempering steps |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    canonical = LDS(latent_dim=1)
    start = time.perf_counter()
    exact, exact_se, exact_ess = importance_reference(canonical, ds)
    print(
        f"| canonical | importance sampling, 2e5 t draws | {exact:.3f} | {exact_se:.3f} | "
        f"(reference; ESS {exact_ess:.0f}) | {time.perf_counter() - start:.1f} | |"
    )
    # Today's defaults on today's model; the first call of each configuration compiles (kept
    # in the persistent cache), the later ones read the compiled programs back.
    redundant = LDS(latent_dim=1, parameterisation="redundant")
    today = [smc_row(redundant, ds, "smc from the prior (today)", None, seed) for seed in (0, 1)]
    smc_row(canonical, ds, "smc from the prior", exact, 0)
    for scale in (1.5,):
        results = [
            smc_row(
                canonical,
                ds,
                f"smc from Laplace x {scale}",
                exact,
                seed,
                reference="laplace",
                reference_scale=scale,
            )
            for seed in range(runs)
        ]
        estimates = np.array([r.log_evidence for r in results])
        errors = np.array([r.standard_error for r in results])
        seconds = np.array([r.seconds for r in results])
        print(
            f"canonical, smc from Laplace x {scale}: mean error {estimates.mean() - exact:+.3f} "
            f"against importance sampling; sd of the {runs} estimates "
            f"{estimates.std(ddof=1):.3f} against the root mean square of their reported se "
            f"{np.sqrt(np.mean(errors**2)):.3f}; {np.sum(np.abs(estimates - exact) < 0.1)} of "
            f"{runs} within 0.1 nats; wall {seconds[0]:.1f} s first (compiling), "
            f"{seconds[1:].mean():.1f} s after; ratio today / this: first calls "
            f"{today[0].seconds / seconds[0]:.1f}, compiled "
            f"{today[1].seconds / seconds[1:].mean():.1f}",
            flush=True,
        )
    redundant_is = importance_reference(redundant, ds)
    print(
        f"| redundant | importance sampling, 2e5 t draws | {redundant_is[0]:.3f} | "
        f"{redundant_is[1]:.3f} | (ESS {redundant_is[2]:.0f}: the curved posterior) | | |"
    )
    for seed in range(2):  # the fitted start on the redundant form: its posterior is curved
        smc_row(redundant, ds, "smc from Laplace", None, seed, reference="laplace")


def run_calibration():
    """The fixed-point coverage test over 20 data sets, NUTS cold and warm-started, timed."""
    import test_fixed_points as case
    from sampling import short_nuts

    from probdyn import fixed_points

    model = case.LDS(
        parameterisation="redundant",
        latent_dim=2,
        priors={
            "q": case.dist.Delta(jnp.full(2, case.NOISE)),
            "r": case.dist.Delta(jnp.full(3, case.NOISE)),
            "C": case.dist.Delta(jnp.asarray(case.READOUT)),
            "d": case.dist.Delta(jnp.asarray(case.BASELINE)),
        },
    )
    y_star = case.READOUT @ np.linalg.solve(np.eye(2) - case.ROTATION, case.OFFSET) + case.BASELINE
    print("\nFixed-point coverage over 20 data sets (tests/test_fixed_points.py)")
    print("| NUTS | wall s (20 data sets) | 90% regions covering the truth |")
    print("| --- | --- | --- |")
    for label, options in [
        ("cold: 200 warm-up (diagonal mass), 200 draws", {"num_warmup": 200}),
        (
            "warm: 1000 SVI steps, 100 warm-up (step size), 200 draws",
            {"num_warmup": 100, "warm_start": 1000},
        ),
    ]:
        start, covered = time.perf_counter(), 0
        for seed in range(20):
            posterior = short_nuts(
                model, case._lds_recording(seed), seed=seed, num_samples=200, **options
            )
            result = fixed_points(model, posterior, num_starts=8, seed=seed)
            covered += result.in_credible_region(y_star, 0, level=0.9)
        print(f"| {label} | {time.perf_counter() - start:.1f} | {covered} / 20 |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=("nuts", "smc", "calibration", "all"), default="all")
    parser.add_argument("--family", choices=tuple(NUTS_CASES), default="lds")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument(
        "--rows",
        type=lambda text: [int(i) for i in text.split(",")],
        default=None,
        help="NUTS runs to make, by index (0, the 'before' run, always)",
    )
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    # Compiled programs kept on disk (as probdyn's CLI does), in a fresh place for this run.
    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="probdyn-bench-"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if args.part in ("smc", "all"):
        run_smc(args.runs)
    if args.part in ("nuts", "all"):
        run_nuts(args.family, args.num_samples, args.rows)
    if args.part in ("calibration", "all"):
        run_calibration()


if __name__ == "__main__":
    main()
