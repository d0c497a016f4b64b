"""An RNN emulator trained on a 3-state linear-chain HMM, as Torre et al. (2025) train theirs.

Trains ``RNNEmulator(hidden=150, noise_dim=100)`` on HMM symbol sequences by Sinkhorn divergence
(blur 0.2, straight-through Gumbel-softmax; ``--fit sinkhorn``) or by the evidence lower bound
with MAP weights and an amortised Gaussian over each sequence's noise path (``--fit svi``), or
by the particle filter's likelihood bound (``--fit filter``, ``--train-particles`` per
sequence; its gradient through the resampling too, or FIVO's without it with
``--fivo-gradient``), and prints:

- the output statistics of generated sequences against the HMM's (frequencies, volatility,
  transition matrix), each with its standard error over trials;
- the residency groups of generated and held-out sequences, the variance of the hidden states
  along their first principal components;
- the fixed points of the noise-free network (``probdyn.fixed_points``);
- held-out log likelihood per sequence of the true HMM (forward algorithm, exact) and of the
  RNN (particle filter), with standard errors, and both as rows of one comparison table
  (``held_out_evidence``, ``comparison_table``): one evidence scale for both.

    python tests/benchmarks/hmm_emulator_benchmark.py [--fit sinkhorn|svi|filter] [--steps 3000]
        [--hidden 150 --noise-dim 100] [--batch-size 256] [--learning-rate 1e-3] [--prior-scale 1] [--seed 0]
        [--generated 2000] [--save W.npz] [--init W.npz] [--posterior-steps 0] [--checkpoint FILE]
        [--fivo-gradient]

``--save`` keeps the fitted weights; ``--init W.npz`` starts a fit from them, or with ``--steps 0``
evaluates them again (e.g. with more ``--generated`` sequences) without fitting.
``--posterior-steps K`` goes on to a mean-field Gaussian over the weights
(``fit_particle_filter_posterior``) whose 200 draws give the posterior over fixed points.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

import probdyn
from probdyn.algorithms.hmm import DiscreteHMM
from probdyn.analysis.mechanism import GROUPS, kick_neurons, orbit_pca, residency_groups
from probdyn.analysis.symbols import symbol_statistics
from probdyn.data import hmm_architecture, simulate_hmm
from probdyn.inference import (
    comparison_table,
    fit_particle_filter,
    fit_particle_filter_posterior,
    fit_sinkhorn,
    held_out_evidence,
    svi,
)
from probdyn.models import RNNEmulator


def exact_output_statistics(initial, transition, emission, T):
    """The HMM's output frequencies, transition matrix and volatility over T steps, exactly.

    With state marginals p_t = initial A^t and emissions E (state, symbol): the symbol pairs
    P(s_t = i, s_t+1 = j) = sum_zz' p_t(z) E(z, i) A(z, z') E(z', j), pooled over t as
    symbol_statistics pools its counts.
    """
    p, pairs, firsts, frequency = np.asarray(initial), 0.0, 0.0, 0.0
    for t in range(T):
        frequency = frequency + p @ emission / T
        if t < T - 1:
            pairs = pairs + emission.T @ (p[:, None] * transition) @ emission
            firsts = firsts + p @ emission
        p = p @ transition
    return {
        "frequency": frequency,
        "transition": pairs / firsts[:, None],
        "volatility": (pairs.sum() - np.trace(pairs)) / (T - 1),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", choices=("sinkhorn", "svi", "filter"), default="sinkhorn")
    parser.add_argument("--hidden", type=int, default=150)
    parser.add_argument("--noise-dim", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--timesteps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--particles", type=int, default=500, help="held-out particle filter")
    parser.add_argument("--train-particles", type=int, default=16, help="--fit filter")
    parser.add_argument(
        "--fivo-gradient",
        action="store_true",
        help="--fit filter without the resampling gradient (FIVO's, inconsistent; was the default)",
    )
    parser.add_argument(
        "--prior-scale", type=float, default=1.0, help="multiplies the weights' prior scales"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--generated", type=int, default=2000, help="RNN sequences behind its output statistics"
    )
    parser.add_argument(
        "--posterior-steps",
        type=int,
        default=0,
        help="then a mean-field posterior over the weights by the filter bound (this many "
        "steps, --train-particles, --batch-size); its draws give the fixed points",
    )
    parser.add_argument("--posterior-learning-rate", type=float, default=1e-2)
    parser.add_argument("--posterior-init-scale", type=float, default=1e-2)
    parser.add_argument("--save", help="write the fitted weights to this .npz file")
    parser.add_argument(
        "--checkpoint",
        help="the sinkhorn or filter fit is checkpointed to this file every 100 steps and "
        "resumes from it (the posterior fit to FILE.posterior)",
    )
    parser.add_argument(
        "--average-over",
        type=int,
        default=0,
        help="sinkhorn or filter fit: return the mean of the last this many iterates",
    )
    parser.add_argument(
        "--init", help="start from the weights in this .npz file (--steps 0: evaluate them only)"
    )
    args = parser.parse_args()
    T = args.timesteps
    train = simulate_hmm("linear", num_trials=args.trials, num_timesteps=T, seed=args.seed)
    test = simulate_hmm("linear", num_trials=100, num_timesteps=T, seed=1000 + args.seed)
    model = RNNEmulator(hidden=args.hidden, noise_dim=args.noise_dim, num_symbols=3)
    if args.prior_scale != 1.0:
        priors = {
            name: dist.Normal(prior.loc, prior.scale * args.prior_scale)
            for name, prior in model.default_priors(3).items()
        }
        model = RNNEmulator(
            hidden=args.hidden, noise_dim=args.noise_dim, num_symbols=3, priors=priors
        )
    init = None if args.init is None else {k: jnp.asarray(v) for k, v in np.load(args.init).items()}
    settings = dict(
        seed=args.seed,
        num_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        progress=not args.no_progress,
    )
    start = time.perf_counter()
    if args.steps == 0:
        if init is None:
            parser.error("--steps 0 evaluates the weights given by --init")
        result = None
        params, label = init, ""
    elif args.fit == "sinkhorn":
        result = fit_sinkhorn(
            model,
            train,
            init=init,
            checkpoint=args.checkpoint,
            average_over=args.average_over,
            **settings,
        )
        params, label = result.params, "divergence"
    elif args.fit == "filter":
        result = fit_particle_filter(
            model,
            train,
            num_particles=args.train_particles,
            resampling_gradient=not args.fivo_gradient,
            init=init,
            checkpoint=args.checkpoint,
            average_over=args.average_over,
            **settings,
        )
        params, label = result.params, "negative filtering bound per symbol"
    else:
        if init is not None or args.average_over:
            parser.error("--init and --average-over are for the sinkhorn and filter fits only")
        result = svi(model, train, guide="amortised-delta", **settings)
        params, label = result.guide.median(result.params), "negative ELBO"
    if result is not None:
        seconds = time.perf_counter() - start
        print(
            f"{args.fit}: {args.steps} steps in {seconds:.0f} s; {label} {result.losses[:50].mean():.3f}"
            f" (first 50) -> {result.losses[-50:].mean():.3f} (last 50)"
        )
    if args.save:
        np.savez(args.save, **{name: np.asarray(value) for name, value in params.items()})

    symbols, hidden = model.generate(params, jax.random.key(7), args.generated, T)
    fitted = symbol_statistics(np.asarray(symbols), 3)
    sample = symbol_statistics(train.symbols.values, 3)
    truth = exact_output_statistics(*hmm_architecture("linear"), T)
    print(
        f"\n            RNN ({args.generated} seqs)        HMM training sample ({args.trials})"
        "    HMM (exact)"
    )
    for name in ("frequency", "volatility"):
        for index in np.ndindex(fitted[name].shape):
            print(
                f"{name}{list(index) or ''}: {float(fitted[name][index]):.4f} ± "
                f"{float(fitted[name + '_se'][index]):.4f}   {float(sample[name][index]):.4f} ± "
                f"{float(sample[name + '_se'][index]):.4f}   {float(truth[name][index]):.4f}"
            )
    difference = np.abs(fitted.transition.values - truth["transition"])
    print("output transition matrix, RNN:\n", np.round(fitted.transition.values, 3))
    print("output transition matrix, HMM:\n", np.round(truth["transition"], 3))
    print(
        "the training sample's own max |difference| from the HMM's: "
        f"{np.nanmax(np.abs(sample.transition.values - truth['transition'])):.4f}"
    )
    # A symbol the network never emits has no row (NaN): the target is missed outright.
    silent = np.flatnonzero(np.isnan(fitted.transition.values).all(axis=1)).tolist()
    print(
        f"max |difference| over emitted symbols {np.nanmax(difference):.4f} (RNN se up to "
        f"{np.nanmax(fitted.transition_se.values):.4f})"
        + (f"; symbols never emitted: {silent}" if silent else "")
    )

    groups = {
        "RNN": residency_groups(np.asarray(symbols)),
        "HMM": residency_groups(test.symbols.values),
    }
    for label, group in groups.items():
        shares = ", ".join(f"{name} {np.mean(group == i):.3f}" for i, name in enumerate(GROUPS))
        print(f"residency groups, {label}: {shares}")
    pca = orbit_pca(np.asarray(hidden[:200]))
    print(
        "hidden states under noise: variance explained by 3 PCs",
        np.round(pca.explained_variance_ratio.values, 3),
    )

    kicks = kick_neurons(model, params, seed=8)
    strongest = kicks.relative_drop.fillna(-np.inf).max(["from", "to"])
    kinds = {
        int(unit): [
            f"{i}->{j} {float(kicks.relative_drop[unit, i, j]):.2f}"
            for i, j in zip(*np.nonzero(kicks.relative_drop.values[unit] > 0.5), strict=True)
        ]
        for unit in np.flatnonzero(kicks.kick.values)
    }
    print(
        f"output transitions of the intact network (most likely symbol):\n{kicks.transitions.values}"
        f"\nkick neurons (ablation removes > half of the transitions of some kind): {kinds or 'none'}"
        f"; largest drop of any unit {float(strongest.max()):.2f}"
    )
    group_drop = kicks.group_relative_drop.fillna(-np.inf)
    print(
        "the top-ranked units ablated together, largest drop of any kind of transition: "
        + ", ".join(
            f"{int(size)} units {float(group_drop.sel(group_size=size).max()):.2f}"
            for size in kicks.group_size.values
        )
    )

    states = np.asarray(hidden[:50, ::5]).reshape(-1, model.hidden)
    if args.posterior_steps:
        start = time.perf_counter()
        posterior = fit_particle_filter_posterior(
            model,
            train,
            params,
            seed=args.seed,
            num_steps=args.posterior_steps,
            batch_size=args.batch_size,
            num_particles=args.train_particles,
            resampling_gradient=not args.fivo_gradient,
            learning_rate=args.posterior_learning_rate,
            init_scale=args.posterior_init_scale,
            progress=not args.no_progress,
            checkpoint=args.checkpoint and f"{args.checkpoint}.posterior",
        )
        losses = posterior.losses
        print(
            f"\nweight posterior: {args.posterior_steps} steps in {time.perf_counter() - start:.0f}"
            f" s; negative bound per symbol {losses[:50].mean():.3f} -> {losses[-50:].mean():.3f};"
            " median scale "
            + ", ".join(f"{k} {np.median(v):.4f}" for k, v in posterior.scale.items())
        )
        draws = posterior.draws(200, seed=args.seed)
    else:
        draws = {name: np.asarray(value)[None] for name, value in params.items()}  # one draw
    points = probdyn.fixed_points(model, draws, states=states, seed=0)
    print("\nnoise-free network:", points.describe())

    initial, transition, emission = hmm_architecture("linear")

    def log(p):
        return jnp.log(jnp.clip(jnp.asarray(p), 1e-30))  # the chain's zero entries stay finite

    hmm = DiscreteHMM(
        log(initial),
        log(transition),
        probdyn.algorithms.hmm.dist.Categorical(probs=jnp.asarray(emission)),
        num_steps=T,
        initial_step=0,
    )
    exact = np.asarray(hmm.log_prob(jnp.asarray(test.symbols.values)))
    start = time.perf_counter()
    rnn, rnn_se = model.log_likelihood(params, test.symbols.values, num_particles=args.particles)
    n = exact.shape[0]
    print(
        f"\nheld-out log likelihood per sequence ({n} sequences of {T}; particle filter "
        f"{time.perf_counter() - start:.0f} s):"
    )
    print(f"  true HMM (exact)     {exact.mean():.3f} ± {exact.std(ddof=1) / np.sqrt(n):.3f}")
    print(
        f"  RNN (particle filter) {rnn.mean():.3f} ± {rnn.std(ddof=1) / np.sqrt(n):.3f} "
        f"(Monte Carlo se per sequence up to {rnn_se.max():.3f})"
    )
    gap = rnn - exact
    print(f"  RNN - HMM, paired: {gap.mean():.3f} ± {gap.std(ddof=1) / np.sqrt(n):.3f} nats/seq")
    source = f"{args.fit} fit" if args.steps else "weights from --init"
    table = comparison_table(
        {
            "HMM (generating parameters)": held_out_evidence(exact),
            f"RNN emulator ({source})": held_out_evidence(rnn, rnn_se),
        }
    )
    print("\nheld-out evidence of all test sequences (standard errors: Monte Carlo):")
    print(table.drop(columns=["note", "seconds"]).to_string(index=False))


if __name__ == "__main__":
    main()
