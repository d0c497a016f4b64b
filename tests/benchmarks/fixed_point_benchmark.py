"""Fixed-point search throughput: probdyn's vmapped solver against a SciPy root loop, one run.

Posterior stand-in: draws of the Lorenz system with rho spread around 28 (three fixed points per
draw). probdyn searches every draw from ``--starts`` box starts in one compiled call; the
reference runs ``scipy.optimize.root`` (MINPACK hybrd, analytic Jacobian) start by start on the
first ``--reference-draws`` draws. Both must find the same points (the largest location
difference is printed). Throughput is draws x starts per second, for probdyn both on the first
call with new shapes (compilation included) and on a repeated call (compiled solver reused).

    python tests/benchmarks/fixed_point_benchmark.py [--draws 10 100 1000] [--starts 32]
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

from probdyn import fixed_points  # noqa: E402
from probdyn.data import systems  # noqa: E402

BOX = ((-20.0, -30.0, 0.0), (20.0, 30.0, 50.0))


class LorenzDraws:
    """Lorenz flow whose rho is a per-draw parameter (sigma = 10, beta = 8/3)."""

    kind = "flow"
    latent_dim = 3

    def vector_field(self, params, x, u=None):
        return systems.lorenz(x, {"sigma": 10.0, "rho": params["rho"], "beta": 8.0 / 3.0})

    def emission_mean(self, params, x):
        return x


def scipy_reference(rho: np.ndarray, starts: np.ndarray, tol: float):
    """Roots per draw from a SciPy loop over starts, de-duplicated at 1e-6."""
    field = jax.jit(lambda x, r: systems.lorenz(x, {"sigma": 10.0, "rho": r, "beta": 8 / 3}))
    jac = jax.jit(jax.jacfwd(field))
    found = []
    for r, draw_starts in zip(rho, starts, strict=True):
        points = []
        for x0 in draw_starts:
            sol = scipy.optimize.root(
                lambda x, r=r: np.asarray(field(x, r)),
                x0,
                jac=lambda x, r=r: np.asarray(jac(x, r)),
                method="hybr",
            )
            if np.max(np.abs(sol.fun)) < tol and not any(
                np.linalg.norm(sol.x - p) < 1e-6 for p in points
            ):
                points.append(sol.x)
        found.append(np.array(points))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--starts", type=int, default=32)
    parser.add_argument("--reference-draws", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    tol = 1e-8
    print(f"jax {jax.__version__}, devices {jax.devices()}, starts per draw {args.starts}")
    print(
        f"{'draws':>6} {'cold s':>7} {'warm s':>7} {'warm pts/s':>11} {'scipy pts/s':>12} "
        f"{'warm ratio':>10} {'cold ratio':>10} {'max |dx|':>9}"
    )
    model = LorenzDraws()
    for num_draws in args.draws:
        rho = rng.normal(28.0, 0.5, size=num_draws)
        seconds = []
        for _ in range(2):  # the first call compiles for these shapes, the second reuses it
            start = time.perf_counter()
            result = fixed_points(
                model, {"rho": jnp.asarray(rho)}, box=BOX, num_starts=args.starts, seed=1, tol=tol
            )
            seconds.append(time.perf_counter() - start)
        cold_rate, warm_rate = (num_draws * args.starts / s for s in seconds)

        reference = min(args.reference_draws, num_draws)
        starts = np.random.default_rng(1).uniform(BOX[0], BOX[1], size=(reference, args.starts, 3))
        start = time.perf_counter()
        roots = scipy_reference(rho[:reference], starts, tol)
        scipy_rate = reference * args.starts / (time.perf_counter() - start)

        ds = result.dataset
        worst = 0.0
        for d in range(reference):
            mine = ds["location"].values[d][ds["exists"].values[d]]
            assert len(mine) == len(roots[d]), (d, mine, roots[d])
            for point in roots[d]:
                worst = max(worst, np.min(np.linalg.norm(mine - point, axis=1)))
        print(
            f"{num_draws:>6} {seconds[0]:>7.2f} {seconds[1]:>7.2f} {warm_rate:>11.0f} "
            f"{scipy_rate:>12.0f} {warm_rate / scipy_rate:>10.1f} {cold_rate / scipy_rate:>10.1f} "
            f"{worst:>9.1e}"
        )


if __name__ == "__main__":
    main()
