"""FacRNN against plain low-rank RNNs on the two-attractor teacher (Li et al. 2025's synthetic task).

For each seed, ``simulate_facrnn_teacher`` (Lorenz + Thomas carried by a 20-neuron rank-6
teacher, 40 trials cut from one trajectory) is fitted on its first ``--fit-trials`` trials (all
bins) by MAP (SVI, delta guide) with

- low-rank: the rank-6 network without a penalty, its latents split 3/3;
- low-rank + ICA: that network's latents unmixed by FastICA, grouped by least PC (the ICA
  start, not trained further);
- ICA start, no penalty: the unmixed network trained on without a penalty (redundant form, so
  that nothing but the likelihood moves its rotation): what training alone does to the start;
- FacRNN: G = 2 groups of H = 3, partial-correlation penalty (``correlation="pc"``), from a
  random start and from the ICA start (``FacRNN.unmixed_start``);
- FacRNN, seed's objective: the same from the ICA start with ``objective="vae"`` (the seed's
  ELBO with its KL term instead of the marginal likelihood);
- block: the same network with the block-diagonal penalty on BA (``correlation="block"``);

and scored on the remaining trials, whole and never fitted (later stretches of the trajectory):
group and component latent R^2 (Hungarian matching), partial correlation of the standardised
latents (same estimator and bandwidth for every method; the true latents' value is the
estimator's floor), correlation of J and of the matched sub-connectivities A_g B_g with the
teacher's. The penalty's own gain is the paired difference (same seed) between FacRNN from the
ICA start and the ICA start trained on without a penalty (the same training, less the penalty);
the difference from the untrained ICA start is printed too.

    python tests/benchmarks/facrnn_teacher.py [--seeds 5] [--steps 3000] [--beta 1.0]
        [--fit-trials 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from probdyn.algorithms.independence import sample_partial_correlation
from probdyn.analysis.metrics import component_latent_r2, connectivity_similarity, group_latent_r2
from probdyn.data import simulate_facrnn_teacher
from probdyn.inference import svi
from probdyn.models import FacRNN

GROUPS = np.repeat([0, 1], 3)


def score(ds, latents, groups, A, B, seconds) -> dict:
    """Scores on held-out trials ``ds``; ``latents`` (trial, time - 1, K) for bins 1..T-1."""
    truth = ds.latents_true.values[:, 1:].reshape(-1, 6)
    inferred = latents.reshape(-1, latents.shape[-1])
    matched = group_latent_r2(truth, inferred, GROUPS, groups)
    sub_true = ds.subconnectivity_true.values
    sub = [A[:, groups == g] @ B[groups == g] for g in np.unique(groups)]
    sub_corr = [
        connectivity_similarity(sub_true[g], sub[h])["correlation"]
        for g, h in enumerate(matched["match"])
    ]
    return {
        "group R2": matched["mean"],
        "component R2": component_latent_r2(truth, inferred)["mean"],
        "PC": sample_partial_correlation(inferred, groups),
        "J corr": connectivity_similarity(ds.connectivity_true.values, A @ B)["correlation"],
        "sub-J corr": float(np.mean(sub_corr)),
        "seconds": seconds,
    }


def fit(model, ds, args, seed, init=None):
    start = time.perf_counter()
    result = svi(
        model,
        ds,
        num_steps=args.steps,
        seed=seed,
        guide="delta",
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        init=init,
        progress=False,
    )
    params = {k: np.asarray(v[0]) for k, v in result.sample_posterior(1, seed=0).items()}
    return params, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--batch-size", type=int, default=10, help="trials per minibatch")
    parser.add_argument("--fit-trials", type=int, default=30, help="the rest are held out")
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {}
    for seed in range(args.seeds):
        whole = simulate_facrnn_teacher(seed=seed)
        ds = whole.isel(trial=slice(0, args.fit_trials)).drop_vars("fit_bins")
        held_out = whole.isel(trial=slice(args.fit_trials, None))
        floor = sample_partial_correlation(held_out.latents_true.values.reshape(-1, 6), GROUPS)
        print(
            f"seed {seed}: teacher R2 {whole.attrs['teacher_r2']:.4f}, PC of held-out true "
            f"latents {floor:.3f}"
        )

        def record(name, model, params, seconds, test=held_out):
            latents = np.asarray(model.codes(params, test.y.values[:, :-1]))
            rows.setdefault(name, []).append(
                score(test, latents, model.groups, params["A"], params["B"], seconds)
            )

        def network(correlation, **options):
            return FacRNN(num_neurons=20, num_groups=2, group_rank=3, correlation=correlation,
                          beta=args.beta, **options)  # fmt: skip

        plain = network(None)
        params, plain_seconds = fit(plain, ds, args, seed)
        record("low-rank", plain, params, plain_seconds)
        # Post-hoc ICA: the plain network's latents (fitted trials) unmixed, grouped by least
        # PC, and the network rewritten in those coordinates; also the penalised fits' start.
        penalised = network("pc")
        start = penalised.unmixed_start(params, ds.y.values[:, :-1], seed=seed)
        record("low-rank + ICA", plain, start, plain_seconds)
        free = network(None, parameterisation="redundant")
        trained, seconds = fit(free, ds, args, seed, init=start)
        record("ICA start, no penalty", free, trained, plain_seconds + seconds)
        record("FacRNN", penalised, *fit(penalised, ds, args, seed))
        unmixed, seconds = fit(penalised, ds, args, seed, init=start)
        record("FacRNN, ICA start", penalised, unmixed, plain_seconds + seconds)
        seeds_objective = network("pc", objective="vae")
        vae, seconds = fit(seeds_objective, ds, args, seed, init=start)
        record("FacRNN (VAE), ICA start", seeds_objective, vae, plain_seconds + seconds)
        record("block", network("block"), *fit(network("block"), ds, args, seed))
        for method, results in rows.items():
            cells = "  ".join(f"{k} {v:.3f}" for k, v in results[-1].items())
            print(f"  {method.ljust(25)}{cells}", flush=True)
    print(f"\nmean +- sd over {args.seeds} seeds (held-out trials)")
    keys = list(next(iter(rows.values()))[0])
    print("method".ljust(25) + "".join(k.rjust(18) for k in keys))
    for method, results in rows.items():
        cells = [np.array([r[k] for r in results]) for k in keys]
        print(method.ljust(25) + "".join(f"{c.mean():10.3f} +-{c.std():5.3f}" for c in cells))
    for baseline in ("low-rank + ICA", "ICA start, no penalty"):
        print(f"\nFacRNN from the ICA start minus {baseline!r}, paired by seed")
        for key in ("group R2", "component R2", "PC", "sub-J corr"):
            gain = np.array(
                [
                    a[key] - b[key]
                    for a, b in zip(rows["FacRNN, ICA start"], rows[baseline], strict=True)
                ]
            )
            spread = gain.std(ddof=1) / np.sqrt(gain.size) if gain.size > 1 else np.nan
            print(
                f"  {key:13s} mean {gain.mean():+.4f}, se {spread:.4f} "
                f"(per seed {', '.join(f'{g:+.3f}' for g in gain)})"
            )


if __name__ == "__main__":
    main()
