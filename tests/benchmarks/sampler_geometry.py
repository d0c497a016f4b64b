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

Printed per run: wall time (SVI included), mean leapfrog steps per draw and tree depth, the
bulk ESS of the fixed point in observation space (C (I - A)^{-1} b + d, the same in either
parameterisation; smallest over channels) per second, the class probabilities (eigenvalues of
A) and each channel's 90% interval of the fixed point.

Evidence on the 15-dimensional LDS(latent_dim=1) of docs/evidence.md (3 trials x 40 bins x 4
channels, seed 0): tempered SMC from the prior (200 particles x 2 runs, today's) against SMC
from the Laplace reference on the same model (``--runs`` estimates of 200 particles x 2 runs
each, to compare their spread with the reported standard errors), both against an
independent reference value: importance sampling of 200 000 draws from a multivariate t
(5 degrees of freedom) at the Laplace approximation, widened 1.5 times.

The fixed-point calibration test (20 data sets) with NUTS cold and warm-started, timed.

    python tests/benchmarks/sampler_geometry.py [--part nuts|smc|calibration|all] [--runs 10]
"""

import argparse
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
import xarray as xr  # noqa: E402
from test_compare import _lds_recording  # noqa: E402

from probdyn.inference import bind, log_evidence, nuts, svi  # noqa: E402
from probdyn.inference.reference import laplace_reference  # noqa: E402
from probdyn.models import LDS  # noqa: E402


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


def fixed_point_summary(samples: dict) -> dict:
    """Observation-space fixed point (chain, draw, channel) and the class of each draw."""
    A, b, C, d = (np.asarray(samples[k]) for k in ("A", "b", "C", "d"))
    eye = np.eye(A.shape[-1])
    x = np.linalg.solve(eye - A, b[..., None])[..., 0]
    y = np.einsum("...nl,...l->...n", C, x) + d
    eigenvalues = np.linalg.eigvals(A)
    stable = np.all(np.abs(eigenvalues) < 1, axis=-1)
    spiral = np.any(np.abs(eigenvalues.imag) > 1e-12, axis=-1)
    kind = np.where(stable, np.where(spiral, "stable spiral", "stable node"), "not stable")
    return {"location": y, "class": kind}


def nuts_row(label, model, ds, *, warm):
    start = time.perf_counter()
    options = {"num_samples": 500, "num_chains": 2, "seed": 0, "progress": False}
    if warm:
        fit = svi(model, ds, num_steps=2000, seed=0, guide="mvn", progress=False)
        result = nuts(model, ds, init=fit, dense_mass=True, num_warmup=200, **options)
    else:
        result = nuts(model, ds, num_warmup=500, **options)
    seconds = time.perf_counter() - start
    summary = fixed_point_summary(result.samples)
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
        "interval": np.quantile(location.reshape(-1, location.shape[-1]), [0.05, 0.95], axis=0),
    }


def run_nuts():
    ds = rotation_recording()
    canonical, redundant = LDS(latent_dim=2), LDS(latent_dim=2, parameterisation="redundant")
    rows = [
        nuts_row("before: redundant, cold start", redundant, ds, warm=False),
        nuts_row("redundant, SVI warm start", redundant, ds, warm=True),
        nuts_row("canonical, cold start", canonical, ds, warm=False),
        nuts_row("after: canonical, SVI warm start", canonical, ds, warm=True),
    ]
    print("\nNUTS, LDS(latent_dim=2), 10 trials x 100 bins x 4 channels, 2 chains x 500 draws")
    print(
        "| run | wall s | leapfrog/draw | tree depth | min ESS fixed point | ESS/s | "
        "divergences | classes |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['label']} | {r['seconds']:.1f} | {r['steps']:.1f} | {r['depth']:.2f} | "
            f"{r['ess']:.0f} | {r['ess_per_s']:.2f} | {r['divergences']} | {r['classes']} |"
        )
    before, after = rows[0], rows[-1]
    print(f"ESS/s ratio after/before: {after['ess_per_s'] / before['ess_per_s']:.1f}")
    for n in range(before["interval"].shape[1]):
        lo = max(before["interval"][0, n], after["interval"][0, n])
        hi = min(before["interval"][1, n], after["interval"][1, n])
        print(
            f"channel {n}: 90% before [{before['interval'][0, n]:.3f}, "
            f"{before['interval'][1, n]:.3f}], after [{after['interval'][0, n]:.3f}, "
            f"{after['interval'][1, n]:.3f}], overlap {'yes' if lo < hi else 'NO'}"
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
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    # Compiled programs kept on disk (as probdyn's CLI does), in a fresh place for this run.
    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="probdyn-bench-"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if args.part in ("smc", "all"):
        run_smc(args.runs)
    if args.part in ("nuts", "all"):
        run_nuts()
    if args.part in ("calibration", "all"):
        run_calibration()


if __name__ == "__main__":
    main()
