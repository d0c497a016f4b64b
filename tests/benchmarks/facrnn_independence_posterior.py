"""FacRNN with a correlation prior: is group independence a posterior statement, and G = 2 vs 1?

On the two-attractor teacher (Lorenz + Thomas, independent by construction) and on the
entangled control (six-site Lorenz-96 through the same kind of teacher), for each seed:

1. a plain rank-6 network is fitted by MAP;
2. ``FacRNN(correlation="prior")`` with G = 2 (horseshoe on the cross-group coupling) and with
   G = 1 (no groups) start from it unmixed by ICA (``unmixed_start``) and are fitted by SVI
   with a mean-field Gaussian guide, or with ``--guide mvn`` a full-covariance one (a check
   that the answer is not the mean-field family's); ``--nuts N`` also samples G = 2 by NUTS
   from the guide's draws (on this 350-dimensional horseshoe posterior NUTS needed step sizes
   near 1e-4 and did not mix in short runs, so it is off by default);
3. the posterior probability that the cross-group coupling is near zero,
   P(||M_cross||_F / ||M||_F < 0.1), from the guide's draws (and NUTS's when run);
4. ``compare`` of G = 2 against G = 1 by the importance-weighted bound of each guide (both
   bounds, so like is compared with like; the table says so).

    python tests/benchmarks/facrnn_independence_posterior.py [--seeds 2] [--first-seed 0]
        [--guide normal|mvn] [--nuts 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from probdyn.data import simulate_facrnn_teacher
from probdyn.inference import compare, log_evidence, nuts, svi
from probdyn.models import FacRNN

NEAR_ZERO = 0.1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--guide", choices=("normal", "mvn"), default="normal")
    parser.add_argument("--nuts", type=int, default=0, help="warm-up = kept draws (0: none)")
    parser.add_argument("--svi-steps", type=int, default=1500)
    args = parser.parse_args()
    for latents in ("Lorenz+Thomas", "Lorenz96"):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            start_time = time.perf_counter()
            ds = simulate_facrnn_teacher(latents=latents, seed=seed)
            plain = FacRNN(num_neurons=20, num_groups=2, group_rank=3, correlation=None)
            point = svi(plain, ds, num_steps=3000, seed=seed, guide="delta",
                        learning_rate=1e-2, batch_size=10, progress=False)  # fmt: skip
            params = {k: v[0] for k, v in point.sample_posterior(1, seed=0).items()}
            fitted = ds.y.values[:, :-1][:, ds.fit_bins.values[1:]]
            models, fits, evidence = {}, {}, {}
            for groups in (2, 1):
                model = FacRNN(num_neurons=20, num_groups=groups, group_rank=6 // groups,
                               correlation="prior")  # fmt: skip
                models[f"G = {groups}"] = model
                fits[groups] = svi(model, ds, num_steps=args.svi_steps, seed=seed,
                                   guide=args.guide, learning_rate=5e-3,
                                   init=model.unmixed_start(params, fitted, seed=seed),
                                   init_scale=0.01, progress=False)  # fmt: skip
                evidence[f"G = {groups}"] = log_evidence(
                    model, ds, method="iwae", seed=seed, svi_result=fits[groups]
                )
            model = fits[2].model
            coupling = fits[2].sample_posterior(1000, seed=seed)["cross_coupling"]
            line = (
                f"{latents} seed {seed}: cross coupling ({args.guide} guide) median {np.median(coupling):.3f} "
                f"[{np.percentile(coupling, 5):.3f}, {np.percentile(coupling, 95):.3f}], "
                f"P(< {NEAR_ZERO}) = {np.mean(coupling < NEAR_ZERO):.2f}"
            )
            if args.nuts:
                mcmc = nuts(model, ds, num_warmup=args.nuts, num_samples=args.nuts, num_chains=1,
                            seed=seed, init=fits[2], max_tree_depth=8, progress=False)  # fmt: skip
                drawn = np.asarray(mcmc.samples["cross_coupling"]).ravel()
                line += (
                    f"; NUTS P(< {NEAR_ZERO}) = {np.mean(drawn < NEAR_ZERO):.2f}, "
                    f"min bulk ESS {mcmc.diagnostics()['min_ess_bulk']:.0f}"
                )
            table = compare(models, ds, seed=seed, evidences=evidence)
            print(f"{line}; {time.perf_counter() - start_time:.0f} s", flush=True)
            print(table.to_string(), flush=True)


if __name__ == "__main__":
    main()
