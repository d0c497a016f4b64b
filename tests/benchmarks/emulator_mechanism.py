"""The mechanism of trained HMM emulators, each figure beside the untrained network's.

Fits small ``RNNEmulator`` networks by the particle filter to each HMM architecture (linear
chain, fully connected, cyclic; ``--seeds`` each). For the fitted network and its untrained
start it prints: the class and growth of the origin of the noise-free map, where every unit
sits on its kink (``probdyn.fixed_points``: ``kink``, ``growth_rate``); and under noise
(``--trials`` sequences of 200 steps) the output's volatility, the orbit's winding
(``orbit_winding``), slow and fast regions (``speed_regions``, of the steps taken and of the
noise-free map at the visited states), the phase's decoding of the
symbol (``phase_decoding``) and the kick neurons (``kick_neurons``). Then the origin's class
for ``--draws`` untrained draws at the fan-in scale as one posterior, and for one start with its
recurrent weights scaled by 1.5 and by the factor that makes it grow at 1.5 per step.

    python tests/benchmarks/emulator_mechanism.py [--hidden 20] [--seeds 2] [--steps 600]
        [--draws 24] [--trials 100]
"""

import argparse
import collections

import jax
import numpy as np

import probdyn
from probdyn.analysis.fixed_points import CLASSES, fixed_points
from probdyn.analysis.mechanism import kick_neurons, orbit_winding, phase_decoding, speed_regions
from probdyn.inference import fit_particle_filter
from probdyn.models import RNNEmulator


def verdict(model, draws, states):
    """(class counts, growth factors per step) of the origin over the draws."""
    result = fixed_points(model, draws, states=states)
    ds = result.dataset
    codes = ds["stability"].values[:, 0]
    counts = collections.Counter(CLASSES[c] for c in codes)
    return dict(counts), np.exp(ds["growth_rate"].values[:, 0]), bool(ds["kink"].values.all())


def single(model, params):
    _, hidden = model.generate(params, jax.random.key(1), 50, 100)
    return verdict(model, {k: v[None] for k, v in params.items()}, hidden)


def mechanism(model, params, trials):
    """One line: volatility, winding, speed regions, phase decoding, kick neurons."""
    symbols, hidden = (
        np.asarray(a) for a in model.generate(params, jax.random.key(2), trials, 200)
    )
    wind = orbit_winding(hidden)
    speed = speed_regions(hidden, symbols)
    noise_free = speed_regions(
        hidden, symbols, field=jax.vmap(jax.vmap(lambda h: model.vector_field(params, h)))
    )
    phase = phase_decoding(hidden, symbols)
    kicks = kick_neurons(model, params, seed=3)
    return (
        f"volatility {np.mean(symbols[:, 1:] != symbols[:, :-1]):.3f}; "
        f"winding {float(wind.winding):+.3f} +- {float(wind.winding_se):.3f} rad/step; "
        f"speeds slow {float(speed.slow_speed):.3f} fast {float(speed.fast_speed):.3f} "
        f"(Ashman D {float(speed.ashman_d):.2f}), P(fast | switch) "
        f"{float(speed.p_fast_at_switch):.2f} vs {float(speed.p_fast_elsewhere):.2f}; "
        f"noise-free speeds: Ashman D {float(noise_free.ashman_d):.2f}, P(fast | switch) "
        f"{float(noise_free.p_fast_at_switch):.2f} vs {float(noise_free.p_fast_elsewhere):.2f}; "
        f"phase decoding {float(phase.accuracy):.2f} (chance {float(phase.chance):.2f}, "
        f"shuffled {float(phase.shuffled):.2f}); kick neurons {int(kicks.kick.sum())}"
    )


def main():
    jax.config.update("jax_enable_x64", True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--draws", type=int, default=24)
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    for architecture in ("linear", "fully_connected", "cyclic"):
        for seed in range(args.seeds):
            train = probdyn.data.simulate_hmm(
                architecture, num_trials=200, num_timesteps=30, seed=seed
            )
            symbols = int(train.symbols.max()) + 1
            model = RNNEmulator(hidden=args.hidden, noise_dim=4, num_symbols=symbols)
            start = model.initial_weights(jax.random.key(10 + seed))
            fit = fit_particle_filter(
                model,
                train,
                seed=seed,
                num_steps=args.steps,
                batch_size=16,
                num_particles=8,
                learning_rate=1e-2,
                init=start,
                progress=False,
            )
            trained = {
                k: v for k, v in fit.params.items() if k in model.default_priors(model.num_symbols)
            }
            for name, params in (("trained", trained), ("its start", start)):
                counts, growth, kink = single(model, params)
                print(
                    f"{architecture:16s} seed {seed} {name:10s}: origin {counts}, "
                    f"x{growth[0]:.3f} per step, on a kink: {kink}; "
                    + mechanism(model, params, args.trials),
                    flush=True,
                )
    model = RNNEmulator(hidden=args.hidden, noise_dim=4, num_symbols=3)
    start = model.initial_weights(jax.random.key(10))
    keys = jax.random.split(jax.random.key(100), args.draws)
    _, hidden = model.generate(start, jax.random.key(1), 50, 100)
    counts, growth, kink = verdict(model, jax.vmap(model.initial_weights)(keys), hidden)
    print(
        f"{args.draws} untrained draws: {counts}, growth per step "
        f"{np.round(np.sort(growth), 2).tolist()}, on a kink: {kink}"
    )
    _, base, _ = single(model, start)
    for factor in (1.5, 1.5 / base[0]):
        counts, growth, _ = single(model, dict(start, W_hh=start["W_hh"] * factor))
        print(f"start with W_hh x{factor:.2f}: {counts}, x{growth[0]:.3f} per step")


if __name__ == "__main__":
    main()
