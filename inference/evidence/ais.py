r"""Annealed importance sampling (Neal 2001): an unbiased evidence estimate (``method="ais"``).

Each particle starts from :math:`q` (the prior or a fitted reference,
:func:`~probdyn.inference.reference.tempering_path`) and walks a fixed ladder
:math:`0 = \beta_0 < \beta_1 < \dots < \beta_K = 1`, :math:`\beta_k = (k/K)^p`, of the
densities :math:`\pi_k \propto q\,\ell^{\beta_k}` (:math:`q\,\ell = \pi_0 L`): its log weight
gains :math:`(\beta_k - \beta_{k-1}) \log \ell(z)` and then ``num_mcmc_steps`` HMC moves
leave :math:`\pi_k` invariant. Without resampling the particles stay independent, and

.. math::
    \hat Z = \frac1N \sum_i \exp\Big(\sum_k (\beta_k - \beta_{k-1}) \log \ell(z_i^{(k-1)})\Big)

is unbiased for :math:`p(y)`. The HMC inverse mass matrix is the particles' variance and
the step size follows their acceptance (toward 0.75), both read before each move from the
cloud, as in the tempered SMC. ``num_repeats`` independent runs give the standard error
(delta method); the effective sample size of each run's final weights says how far
:math:`q` and the ladder were from the posterior.
"""

from __future__ import annotations

from typing import Literal

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

from probdyn.errors import ConfigError
from probdyn.inference.density import Density
from probdyn.inference.evidence.result import (
    Evidence,
    ess_fraction,
    log_mean_and_se,
    without_free_parameters,
)
from probdyn.inference.reference import tempering_path
from probdyn.runtime import memory
from probdyn.schema import Count, Fraction, Positive


def ais(
    density: Density,
    key,
    *,
    model=None,
    reference: Literal["prior", "laplace", "guide"] = "laplace",
    svi_result=None,
    reference_scale: Positive = 1.5,
    prior_weight: Fraction = 0.05,
    num_particles: Count = 500,
    num_repeats: Count = 4,
    num_temperatures: Count = 100,
    schedule_power: Positive | None = None,
    num_mcmc_steps: Count = 2,
    num_integration_steps: Count = 10,
    chunk: Count | None = None,
) -> Evidence:
    r"""``method="ais"`` (module docstring).

    ``reference``, ``svi_result``, ``reference_scale``, ``prior_weight``: the start, as for
    SMC (:func:`probdyn.inference.reference.tempering_path`).

    ``schedule_power`` :math:`p`: None takes 1 from a fitted reference (already close) and 4
    from the prior (most of the change happens near :math:`\beta = 0`).
    """
    if density.dim == 0:
        return without_free_parameters(density)
    if num_repeats < 2:
        raise ConfigError("num_repeats must be at least 2 to estimate a standard error")
    key, key_reference = jax.random.split(key)
    path = tempering_path(
        density,
        key_reference,
        reference=reference,
        svi_result=svi_result,
        scale=reference_scale,
        prior_weight=prior_weight,
    )
    power = schedule_power or (4.0 if reference == "prior" else 1.0)
    betas = jnp.linspace(0.0, 1.0, num_temperatures + 1) ** power
    per_particle, fixed = memory.item_cost(
        jax.value_and_grad(density.log_posterior), jnp.zeros(density.dim)
    )
    at_once = chunk or memory.chunk_size(num_particles, per_particle, fixed, what="ais particles")
    batch = None if at_once >= num_particles else at_once
    hmc = blackjax.hmc.build_kernel()

    def one_run(key, q):
        key_init, key_walk = jax.random.split(key)
        particles = path.draw(key_init, num_particles, q)
        step_size = jnp.asarray(0.5 * density.dim**-0.25, particles.dtype)

        def rung(carry, item):
            particles, log_weights, step_size = carry
            pair, key = item
            beta_before, beta = pair[0], pair[1]
            increments = jax.lax.map(
                lambda z: path.log_increment(z, q), particles, batch_size=batch
            )
            log_weights = log_weights + (beta - beta_before) * increments
            inverse_mass = jnp.var(particles, axis=0) + 1e-10

            def target(z):
                return path.log_start(z, q) + beta * path.log_increment(z, q)

            def move(item):
                key, z = item
                state = blackjax.hmc.init(z, target)
                accepted = jnp.zeros(())
                for step_key in jax.random.split(key, num_mcmc_steps):
                    state, info = hmc(
                        step_key, state, target, step_size, inverse_mass, num_integration_steps
                    )
                    accepted = accepted + info.acceptance_rate / num_mcmc_steps
                return state.position, accepted

            keys = jax.random.split(key, num_particles)
            particles, acceptance = jax.lax.map(move, (keys, particles), batch_size=batch)
            step_size = step_size * jnp.exp(2.0 * (jnp.mean(acceptance) - 0.75))
            return (particles, log_weights, step_size), jnp.mean(acceptance)

        pairs = jnp.stack([betas[:-1], betas[1:]], axis=1)
        ladder = (pairs, jax.random.split(key_walk, num_temperatures))
        init = (particles, jnp.zeros(num_particles, particles.dtype), step_size)
        (_, log_weights, _), acceptance = jax.lax.scan(rung, init, ladder)
        log_z = jax.nn.logsumexp(log_weights) - jnp.log(num_particles)
        return log_z, ess_fraction(log_weights), jnp.mean(acceptance)

    runs = jax.jit(one_run)
    outcomes = [runs(k, path.reference) for k in jax.random.split(key, num_repeats)]
    log_z, ess, acceptance = (np.array([float(o[i]) for o in outcomes]) for i in range(3))
    estimate, standard_error = log_mean_and_se(log_z)
    gradients = (
        num_repeats
        * num_particles
        * num_temperatures
        * num_mcmc_steps
        * (num_integration_steps + 1)
    )
    return Evidence(
        estimate,
        standard_error,
        "ais",
        False,
        f"spread of {num_repeats} independent runs (delta method on the mean of Z)",
        0.0,
        gradients,
        {
            "log_evidence_per_run": log_z.tolist(),
            "reference": path.label,
            "num_temperatures": num_temperatures,
            "schedule_power": power,
            "final_ess_fraction": ess.tolist(),
            "mean_acceptance": acceptance.tolist(),
            "num_particles": num_particles,
        },
    )
