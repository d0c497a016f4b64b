r"""Adaptive tempered SMC: an unbiased estimate of the evidence (``method="smc"``).

The tempering starts from the prior or from a fitted reference
(:mod:`probdyn.inference.reference`): with :math:`q` the starting density and
:math:`\ell = \pi_0 L / q` (:math:`\ell = L` from the prior) the path is
:math:`\pi_\beta \propto q\,\ell^\beta`, and :math:`\hat Z = \prod_k \sum_i W_i^{(k-1)}
\ell_i^{\beta_k - \beta_{k-1}}` is unbiased for :math:`p(y)` either way.
"""

from __future__ import annotations

from typing import Annotated, Literal

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import resampling
from tqdm.auto import tqdm

from probdyn.errors import ConfigError
from probdyn.inference.density import Density, fingerprint
from probdyn.inference.evidence.result import (
    Evidence,
    ess_fraction,
    log_mean_and_se,
    without_free_parameters,
)
from probdyn.inference.reference import tempering_path
from probdyn.runtime import devices, memory
from probdyn.schema import Count, Fraction, Positive, Range

#: Compiled SMC programs kept for reuse (least recently used dropped first).
CACHED_PROGRAMS = 4
_compiled: dict[str, object] = {}
_bar: list = [None]  # the progress bar of the call in progress


def _show_tempering(tempering, steps):
    """Host side of the progress callback: the tempering the current run has reached."""
    _bar[0].set_postfix_str(
        f"tempering {float(np.min(tempering)):.3g} after {int(np.max(steps))} steps",
        refresh=True,
    )


def smc(
    density: Density,
    key,
    *,
    model=None,
    num_particles: Count = 1000,
    num_repeats: Count = 4,
    num_mcmc_steps: Count = 10,
    num_integration_steps: Count = 20,
    target_ess: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.5,
    dense_mass: bool = False,
    max_steps: Count = 1000,
    num_devices: Count | None = None,
    chunk: Count | None = None,
    progress: bool | None = None,
    reference: Literal["prior", "laplace", "guide"] = "prior",
    svi_result=None,
    reference_scale: Positive = 1.5,
    prior_weight: Fraction = 0.05,
) -> Evidence:
    r"""``method="smc"``: adaptive tempered SMC (:mod:`probdyn.inference.evidence`).

    ``reference``: where the tempering starts: ``"prior"``, ``"laplace"`` (the Gaussian at the
    mode) or ``"guide"`` (the Gaussian of ``svi_result``'s draws), widened by
    ``reference_scale`` and mixed with the prior at ``prior_weight``
    (:func:`probdyn.inference.reference.tempering_path`). The reference is fitted once;
    the repeats are independent given it. The diagnostics hold each run's tempering steps and
    the effective sample size of the weights :math:`\ell` at the start (the fraction of
    particles that would count if the posterior were reached in one step).
    ``progress``: a bar over the runs that shows the tempering reached by the current one
    (None: the process setting, :func:`probdyn.runtime.memory.limit`).

    Each tempering step moves every particle by ``num_mcmc_steps`` HMC moves of
    ``num_integration_steps`` leapfrog steps, with the particles' variances (their covariance
    with ``dense_mass=True``) as the inverse mass matrix. The same moves are made from a fitted
    reference: cheaper ones (5 moves of 8 steps with the reference's covariance as the mass)
    left the estimates of docs/geometry.md's benchmark up to 0.2 nats off with a reported
    error of 0.01-0.07, since the repeats share one reference and mix too little to forget it.
    """
    progress = memory.shows_progress(progress)
    if density.dim == 0:
        return without_free_parameters(density)
    if num_repeats < 2:
        raise ConfigError("num_repeats must be at least 2 to estimate a standard error")
    if reference != "prior":  # the prior's path draws from the key as before
        key, key_reference = jax.random.split(key)
    else:
        key_reference = key
    path = tempering_path(
        density,
        key_reference,
        reference=reference,
        svi_result=svi_result,
        scale=reference_scale,
        prior_weight=prior_weight,
    )
    # Particles move in batches sized by the memory budget (a gradient of the log density per
    # particle), and the repeats run side by side only as far as the budget allows.
    per_particle, fixed = memory.item_cost(
        jax.value_and_grad(density.log_posterior), jnp.zeros(density.dim)
    )
    if chunk is None:
        at_once = memory.chunk_size(
            num_particles * num_repeats, per_particle, fixed, what="smc particles"
        )
    else:
        at_once = min(chunk, num_particles * num_repeats)
    particle_batch = 0 if at_once >= num_particles else at_once
    # On a CPU the repeats run one after another: side by side they gain nothing over the
    # particles' own vectorisation and wait for the slowest (4 repeats x 1000 particles of a
    # 1-D LDS: 53 s in sequence, 113 s side by side on 2 cores, docs/memory.md).
    side_by_side = jax.default_backend() != "cpu"
    repeats_at_once = max(1, at_once // num_particles) if side_by_side else 1
    memory.logger.info(
        f"smc: {num_repeats} runs of {num_particles} particles, "
        f"{min(at_once, num_particles)} particles at a time in {min(repeats_at_once, num_repeats)}"
        f" run(s) at a time (up to {memory.format_size(per_particle)} per particle)"
    )

    def tempered_kernel(q):
        return blackjax.smc.adaptive_tempered.build_kernel(
            lambda z: path.log_start(z, q),
            lambda z: path.log_increment(z, q),
            blackjax.hmc.build_kernel(),
            blackjax.hmc.init,
            resampling.systematic,
            target_ess,
            batch_size=particle_batch,
        )

    mesh = devices.mesh(num_particles, num_devices)

    def spread(state):
        """Keep the particles and their weights split over the devices."""
        if mesh.size == 1:
            return state
        split = devices.split(mesh)
        return state._replace(
            particles=jax.lax.with_sharding_constraint(state.particles, split),
            weights=jax.lax.with_sharding_constraint(state.weights, split),
        )

    def one_run(key, q):
        kernel = tempered_kernel(q)
        key_init, key_loop = jax.random.split(key)
        particles = path.draw(key_init, num_particles, q)
        state = spread(blackjax.smc.adaptive_tempered.init(particles))
        log_weights = jax.lax.map(
            lambda z: path.log_increment(z, q), particles, batch_size=particle_batch or None
        )
        start_ess = ess_fraction(log_weights)
        # HMC steps of size ~ d^(-1/4) in whitened coordinates keep acceptance reasonable.
        step_size = jnp.asarray(0.5 * density.dim**-0.25, particles.dtype)

        def keep_going(carry):
            state, *_, steps = carry
            return (state.tempering_param < 1.0) & (steps < max_steps)

        def advance(carry):
            state, step_size, log_z, _, key, steps = carry
            key, key_step = jax.random.split(key)
            if dense_mass:
                inverse_mass = jnp.cov(state.particles.T).reshape(density.dim, density.dim)
                inverse_mass = inverse_mass + 1e-10 * jnp.eye(density.dim)
            else:
                inverse_mass = jnp.var(state.particles, axis=0) + 1e-10
            parameters = {
                "step_size": step_size[None],
                "inverse_mass_matrix": inverse_mass[None],
                "num_integration_steps": jnp.array([num_integration_steps]),
            }
            state, info = kernel(key_step, state, num_mcmc_steps, parameters)
            state = spread(state)
            if progress:  # the host shows how far the tempering has come
                jax.debug.callback(_show_tempering, state.tempering_param, steps + 1)
            accept = jnp.mean(info.update_info.acceptance_rate)
            # Multiplicative step-size control toward 0.75 acceptance.
            step_size = step_size * jnp.exp(2.0 * (accept - 0.75))
            return state, step_size, log_z + info.log_likelihood_increment, accept, key, steps + 1

        init = (state, step_size, jnp.zeros((), particles.dtype), jnp.zeros(()), key_loop, 0)
        state, _, log_z, acceptance, _, steps = jax.lax.while_loop(keep_going, advance, init)
        return log_z, steps, acceptance, state.tempering_param, start_ess

    bar = tqdm(total=num_repeats, disable=not progress, desc="smc", unit="run")
    _bar[0] = bar

    # The repeats run in groups of repeats_at_once (one compiled program for every group),
    # each group a progress step.
    keys = jax.random.split(key, num_repeats)
    groups = [keys[i : i + repeats_at_once] for i in range(0, num_repeats, repeats_at_once)]
    groups = [jax.device_put(g, devices.replicated(mesh)) for g in groups]
    # One compiled program per model, data and settings, kept for the next call (the fitted
    # reference is an argument): tracing this program takes longer than a short run.
    cache_key = None
    if model is not None:
        cache_key = fingerprint(
            {
                "model": model,
                "fixed": density.fixed,
                "data": density.data,
                "reference": reference == "prior",
                "settings": (num_particles, num_mcmc_steps, num_integration_steps, target_ess),
                "more": (dense_mass, max_steps, particle_batch, prior_weight, progress),
                "devices": mesh.devices.tolist(),
            }
        )
    runs = _compiled.pop(cache_key, None) or jax.jit(jax.vmap(one_run, in_axes=(0, None)))
    if cache_key is not None:
        _compiled[cache_key] = runs  # most recently used last
        while len(_compiled) > CACHED_PROGRAMS:
            _compiled.pop(next(iter(_compiled)))
    for group in {len(g): g for g in groups}.values():
        runs.lower(group, path.reference)  # traced now, one per group size: the loop only runs
    outcomes = []
    with devices.hot_loop():
        for group in groups:
            outcomes.append(devices.to_host(runs(group, path.reference)))  # waits for the group
            bar.update(len(group))
    bar.close()
    joined = (np.concatenate(values) for values in zip(*outcomes, strict=True))
    log_z, steps, final_acceptance, reached, start_ess = joined
    if not np.all(reached >= 1.0):
        raise FloatingPointError(
            f"SMC did not reach the posterior within {max_steps} tempering steps"
        )
    estimate, standard_error = log_mean_and_se(log_z)
    gradients = int(steps.sum()) * num_particles * num_mcmc_steps * (num_integration_steps + 1)
    return Evidence(
        estimate,
        standard_error,
        "smc",
        False,
        f"spread of {num_repeats} independent runs (delta method on the mean of Z)",
        0.0,
        gradients,
        {
            "log_evidence_per_run": log_z.tolist(),
            "reference": path.label,
            "tempering_steps": steps.tolist(),
            "start_ess_fraction": start_ess.tolist(),
            "final_acceptance": final_acceptance.tolist(),
            "num_particles": num_particles,
            "num_devices": mesh.size,
            "dense_mass": dense_mass,
            "particles_at_once": min(at_once, num_particles),
        },
    )
