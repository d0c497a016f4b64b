"""Evidence estimators against the exact value on the 1-D reference LDS, in one run.

Prints, for each estimator, the error against the exact log evidence (SciPy quadrature of the
Kalman likelihood), the reported standard error, the wall time, and ratios to the SMC run.
NumPyro's NestedSampler (jaxns) is included where it is installed.

    python tests/benchmarks/evidence_benchmark.py [--seeds 3]
"""

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lds_cases import ou_dataset, ou_exact, ou_model  # noqa: E402

from probdyn.inference import bind, log_evidence, svi  # noqa: E402


def nested_sampling(model, ds, seed):
    try:
        from numpyro.contrib.nested_sampling import NestedSampler
    except ImportError:
        return None
    try:
        density = bind(model, model.prepare(ds))
        start = time.perf_counter()
        sampler = NestedSampler(density.program)
        sampler.run(jax.random.key(seed), density.data)
        results = sampler._results
        return float(results.log_Z_mean), float(results.log_Z_uncert), time.perf_counter() - start
    except Exception as error:
        print(f"nested sampling failed: {type(error).__name__}: {error}")
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    ds = ou_dataset(seed=11)
    exact = ou_exact(ds)[0]
    print(f"exact log evidence {exact:.4f}")
    rows = []
    for seed in range(args.seeds):
        for label, model, method, options in [
            ("exact (grid)", ou_model(), "exact", {}),
            ("smc marginalised", ou_model(), "smc", {}),
            ("smc path sampled", ou_model("sample"), "smc", {}),
            ("laplace", ou_model(), "laplace", {}),
        ]:
            result = log_evidence(model, ds, method=method, seed=seed, **options)
            rows.append(
                (label, seed, result.log_evidence - exact, result.standard_error, result.seconds)
            )
        start = time.perf_counter()
        fit = svi(ou_model(), ds, num_steps=1500, seed=seed, progress=False, guide="normal")
        result = log_evidence(
            ou_model(), ds, method="iwae", seed=seed, svi_result=fit, num_importance=1000
        )
        rows.append(
            (
                "iwae K=1000 (+ svi)",
                seed,
                result.log_evidence - exact,
                result.standard_error,
                time.perf_counter() - start,
            )
        )
        nested = nested_sampling(ou_model(), ds, seed)
        if nested is None:
            rows.append(("nested sampling (jaxns)", seed, float("nan"), float("nan"), float("nan")))
        else:
            rows.append(("nested sampling (jaxns)", seed, nested[0] - exact, nested[1], nested[2]))
    smc_time = {s: t for label, s, _, _, t in rows if label == "smc marginalised"}
    print(
        f"{'estimator':26s} {'seed':>4s} {'error':>8s} {'se':>7s} {'seconds':>8s} {'time / smc':>10s}"
    )
    for label, seed, error, se, seconds in rows:
        print(
            f"{label:26s} {seed:4d} {error:8.4f} {se:7.4f} {seconds:8.1f} {seconds / smc_time[seed]:10.2f}"
        )


if __name__ == "__main__":
    main()
