"""Bridge sampling from NUTS draws, relabellings averaged (``method="bridge"``)."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import scipy.optimize
from jax import Array
from jax.scipy.special import logsumexp
from scipy.special import logsumexp as host_logsumexp

from probdyn.errors import ConfigError
from probdyn.inference.density import Density
from probdyn.inference.evidence.result import Evidence, log_mean_and_se, without_free_parameters
from probdyn.runtime import memory
from probdyn.schema import Count

#: Largest label count whose relabellings bridge sampling averages over (7! = 5040).
MAX_LABELS = 7


def bridge(
    density: Density,
    key,
    *,
    model,
    mcmc_result=None,
    num_warmup: Count = 500,
    num_samples: Count = 1000,
    num_chains: Count = 4,
    dense_mass: bool = False,
    num_proposal: Count | None = None,
) -> Evidence:
    """``method="bridge"``: bridge sampling from NUTS draws (:mod:`probdyn.inference.evidence`)."""
    from probdyn.inference.mcmc import nuts

    if density.dim == 0:
        return without_free_parameters(density)
    key_nuts, key_check, key_chains = jax.random.split(key, 3)
    if mcmc_result is None:
        _require_bridge_draws(num_chains, num_samples, density.dim)
        seed = int(jax.random.randint(key_nuts, (), 0, 2**31 - 1))
        mcmc_result = nuts(
            model,
            density.data,
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            dense_mass=dense_mass,
            seed=seed,
            progress=False,
        )
    if mcmc_result.density.shapes != density.shapes:
        raise ConfigError(
            f"mcmc_result samples sites {mcmc_result.density.shapes}; this model's free sites "
            f"are {density.shapes}"
        )
    draws = {name: mcmc_result.samples[name] for name in density.shapes}
    z = jax.vmap(jax.vmap(density.unconstrain))(draws)
    num_chains, num_draws = z.shape[:2]
    _require_bridge_draws(num_chains, num_draws, density.dim)
    orders = _label_symmetries(model, density, z.reshape(-1, density.dim), key_check)
    relabel = _flat_relabel(model, density)
    half = num_draws // 2
    num_proposal = num_proposal or num_draws

    def log_bridge_density(z, mean, chol):
        """Log density of g: the Gaussian averaged over the relabellings (Jacobians included)."""

        def one(order):
            moved, log_det = relabel(z, order)
            return dist.MultivariateNormal(mean, scale_tril=chol).log_prob(moved) + log_det

        return logsumexp(jax.vmap(one)(orders)) - math.log(len(orders))

    # The bridge density of each chain, fitted on the host in float64 to its first half of
    # draws; a chain that did not move (singular covariance) cannot carry one.
    fits = np.asarray(z[:, :half], np.float64)
    covariances = np.stack([np.atleast_2d(np.cov(chain.T)) for chain in fits])
    for chain, covariance in enumerate(covariances):
        spread = np.linalg.eigvalsh(covariance)
        if spread[0] <= 1e-12 * spread[-1]:
            raise FloatingPointError(
                f"chain {chain}: the bridge density fitted to its first {half} draws is "
                "degenerate (their covariance is singular: a stuck chain?); check the NUTS "
                "diagnostics and run more warmup or draws"
            )
    means = jnp.asarray(fits.mean(1), z.dtype)
    chols = jnp.asarray(np.linalg.cholesky(covariances + 1e-9 * np.eye(density.dim)), z.dtype)

    def points(kept, mean, chol, key):
        """The chain's second half and draws from g, each relabelled at random."""
        key_kept, key_draw, key_moved = jax.random.split(key, 3)
        proposal = mean + jax.random.normal(key_draw, (num_proposal, density.dim)) @ chol.T

        def scramble(key, points):
            picks = jax.random.randint(key, (len(points),), 0, len(orders))
            return jax.vmap(relabel)(points, orders[picks])[0]

        return scramble(key_kept, kept), scramble(key_moved, proposal)

    def log_ratios(at):
        """Log ratios log p(y, z) - log g(z), (chain, point); the posterior in chunks."""
        flat = jnp.asarray(at).reshape(-1, density.dim)
        log_post = memory.map_chunks(
            density.log_posterior, flat, what="bridge sampling", unit="point"
        )
        log_g = jax.vmap(jax.vmap(log_bridge_density, in_axes=(0, None, None)))
        return log_post.reshape(at.shape[:2]) - np.asarray(jax.jit(log_g)(at, means, chols))

    keys = jax.random.split(key_chains, num_chains)
    kept, proposal = jax.jit(jax.vmap(points))(z[:, half:], means, chols, keys)
    from_posterior, from_proposal = log_ratios(kept), log_ratios(proposal)
    per_chain = []
    for chain, (a, b) in enumerate(zip(from_posterior, from_proposal, strict=True)):
        if np.isnan(a).any() or np.isnan(b).any():
            raise FloatingPointError(
                f"chain {chain}: the log density ratios to its bridge density are NaN; check "
                "the model's log density at the chain's draws"
            )
        per_chain.append(_solve_bridge(np.asarray(a, np.float64), np.asarray(b, np.float64)))
    per_chain = np.array(per_chain)
    estimate, standard_error = log_mean_and_se(per_chain)
    nuts_gradients = int(mcmc_result.sample_stats["n_steps"].sum())
    return Evidence(
        estimate,
        standard_error,
        "bridge",
        False,
        f"spread of {num_chains} chains' independent bridge estimates (delta method)",
        0.0,
        nuts_gradients + num_chains * (num_draws - half + num_proposal),
        {
            "log_evidence_per_chain": per_chain.tolist(),
            "label_permutations": len(orders),
            "num_posterior_draws": num_draws - half,
            "num_proposal_draws": num_proposal,
        },
    )


def _require_bridge_draws(num_chains: int, num_draws: int, dim: int) -> None:
    """Bridge sampling fits a Gaussian per chain to half its draws: enough draws, 2+ chains."""
    if num_chains < 2 or num_draws < 4 * dim:
        raise ConfigError(
            f"bridge sampling needs at least 2 chains of at least {4 * dim} draws (half "
            f"fit the bridge density in {dim} dimensions); got {num_chains} x {num_draws}"
        )


def _flat_relabel(model, density: Density):
    r"""The relabelling ``order`` as a map :math:`T` of the flat unconstrained vector.

    Returns :math:`(T z, \log|T'(z)|)`; a permutation of constrained values keeps their volume,
    so the Jacobian is that of the unconstrained maps, :math:`\log J(z) - \log J(T z)`.
    """

    def relabel(z, order):
        moved = density.unconstrain(model.relabel(density.constrain(z), order))
        return moved, density.log_jacobian(z) - density.log_jacobian(moved)

    return relabel


def _label_symmetries(model, density: Density, z, key, num_checked: int = 8) -> Array:
    r"""The label orders (rows) under which the posterior is invariant: all L! or the identity.

    Checked at ``num_checked`` draws: :math:`\log \pi(T z) + \log|T'(z)| = \log \pi(z)` for
    a random non-trivial order each (float32 rounding allowed for).
    """
    labels = model.num_labels
    identity = jnp.arange(labels)[None]
    if labels == 1:
        return identity
    if labels > MAX_LABELS:
        raise ConfigError(
            f"bridge sampling averages over {labels}! relabellings; at most {MAX_LABELS} labels "
            "are supported (use method='smc')"
        )
    orders = jnp.array(list(itertools.permutations(range(labels))))
    relabel = _flat_relabel(model, density)
    key_draws, key_orders = jax.random.split(key)
    points = z[jax.random.choice(key_draws, len(z), (num_checked,))]
    picks = orders[jax.random.randint(key_orders, (num_checked,), 1, len(orders))]

    def mismatch(z, order):
        moved, log_det = relabel(z, order)
        log_density = density.log_posterior(z)
        return jnp.abs(density.log_posterior(moved) + log_det - log_density), jnp.abs(log_density)

    gap, scale = jax.jit(jax.vmap(mismatch))(points, picks)
    tolerance = 1e-6 + 10 * jnp.finfo(z.dtype).eps * (1.0 + scale)
    return orders if bool(jnp.all(gap <= tolerance)) else identity


def _solve_bridge(log_l1, log_l2) -> float:
    r"""Meng & Wong's optimal bridge equation for :math:`x = \log \hat Z`, solved by bracketing.

    The fixed point of the module docstring is the root of
    :math:`h(x) = \log N_1^{-1}\sum_i e^{x}/(s_1 \ell_i + s_2 e^{x})
    - \log N_2^{-1}\sum_j \tilde\ell_j/(s_1 \tilde\ell_j + s_2 e^{x})`, which increases
    from :math:`-\infty` to :math:`+\infty` in :math:`x`: one root, bracketed and found by
    Brent's method, so the answer comes with a guarantee rather than an iteration count.
    """
    n1, n2 = len(log_l1), len(log_l2)
    log_s1, log_s2 = math.log(n1 / (n1 + n2)), math.log(n2 / (n1 + n2))

    def h(x):
        posterior = host_logsumexp(-np.logaddexp(log_s1 + log_l1 - x, log_s2)) - math.log(n1)
        proposal = host_logsumexp(log_l2 - np.logaddexp(log_s1 + log_l2, log_s2 + x))
        return posterior - (proposal - math.log(n2))

    start = float(host_logsumexp(log_l2) - math.log(n2))  # importance sampling from g
    if not math.isfinite(start):
        raise FloatingPointError("no draw from the bridge density has a finite posterior density")
    low, high, width = start - 1.0, start + 1.0, 1.0
    while h(low) > 0:
        width *= 2
        low = start - width
    while h(high) < 0:
        width *= 2
        high = start + width
    return float(scipy.optimize.brentq(h, low, high, xtol=1e-12, rtol=1e-14))
