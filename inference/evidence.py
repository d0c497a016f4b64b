r"""Log evidence :math:`\log p(y) = \log \int p(y \mid \theta) p(\theta)\, d\theta` with its error.

Methods (every result states its method, whether it is an estimate or a bound, how its error was
obtained, and its cost):

``"smc"``
    Adaptive tempered SMC (blackjax) over all free sites on unconstrained space, from the prior
    (:math:`\beta = 0`) to the posterior (:math:`\beta = 1`), the next :math:`\beta` chosen so
    that the effective sample size falls to ``target_ess``; between steps the particles move by
    HMC whose inverse mass matrix is the particle cloud's variance (its full covariance with
    ``dense_mass=True``; on a 100-step latent path the diagonal gave the smaller error, see
    docs/evidence.md) and whose step size follows
    the acceptance rate. :math:`\hat Z = \prod_k \sum_i W_i^{(k-1)} L_i^{\beta_k - \beta_{k-1}}`
    is unbiased for :math:`Z`. The particles are split over the visible devices
    (:func:`probdyn.inference.devices.mesh`; ``num_devices`` caps them): each device moves its
    own particles, XLA gathers them for the weights, the mass matrix and resampling.
    ``num_repeats`` independent runs give the estimate
    :math:`\log \bar Z` and its standard error by the delta method,
    :math:`\mathrm{se} = \mathrm{sd}(\hat Z_r) / (\sqrt{R}\, \bar Z)`.
``"iwae"``
    The importance-weighted bound of an SVI guide,
    :math:`\mathcal{L}_K = \mathbb{E}\log \frac1K \sum_k p(y, \theta_k)/q(\theta_k)
    \le \log p(y)`, averaged over ``num_batches`` independent batches (standard error from
    their spread). A lower bound in expectation, rising to :math:`\log p(y)` as K grows.
``"heldout"``
    Not an evidence: the log likelihood of new trials under a fitted amortised model, per
    trial, an importance-weighted bound over each trial's latents with the weights drawn
    from the guide (:func:`_heldout`). For models whose weights are networks, the score to
    compare them by on trials they never saw.
``"predictive"``
    Not an evidence of the data the fit saw: the log posterior predictive density of trials
    (new ones, for a score on trials the model never saw), per trial and summed,
    :math:`\sum_s \log \frac1D \sum_d p(y_s \mid \theta_d)`, with :math:`\theta_d` drawn
    from any inference result (``posterior``, a :class:`probdyn.capabilities.Posterior`) and
    each trial's likelihood the program's own: exact where the family integrates its path in
    closed form, the particle filter's unbiased estimate under ``marginal="particle"``
    (:func:`_predictive`). One estimator for every family with a Markov latent path, so
    families are compared on one scale.
``"laplace"``
    :math:`\log p(y, \hat z) + \tfrac n2 \log 2\pi - \tfrac12 \log\det H` at the mode
    :math:`\hat z` on unconstrained space; a deterministic approximation, its error unknown.
``"bridge"``
    Bridge sampling (Meng & Wong 1996) from NUTS draws (:func:`~probdyn.inference.nuts`, or a
    given ``mcmc_result``) with a Gaussian bridge density :math:`g` on unconstrained space. For
    each chain, :math:`g` is fitted to the first half of its draws; with the second half
    :math:`z_i \sim \pi` (:math:`N_1`) and :math:`N_2` draws :math:`\tilde z_j \sim g`, the
    optimal bridge is the fixed point
    :math:`\hat Z = \frac{N_2^{-1}\sum_j \ell(\tilde z_j)/(s_1 \ell(\tilde z_j) + s_2 \hat Z)}
    {N_1^{-1}\sum_i 1/(s_1 \ell(z_i) + s_2 \hat Z)}`, :math:`\ell = p(y, z)/g(z)`,
    :math:`s_k = N_k/(N_1+N_2)` (solved as a monotone equation in :math:`\log \hat Z`).
    Models with :math:`L` exchangeable labels
    (:attr:`~probdyn.model.Model.num_labels`, e.g. an HMM's states) have :math:`L!` equivalent
    posterior modes that a chain does not visit; following Frühwirth-Schnatter (2004), :math:`g`
    is then the average of its :math:`L!` relabelled copies and each posterior draw is
    relabelled at random, which is exact however the modes overlap. The symmetry is checked at
    posterior draws first (a prior or fixed value that breaks it turns the averaging off, as
    the diagnostics say). The chains' estimates are independent: their spread gives the
    standard error (delta method, as for SMC). Cost: the NUTS run, then
    :math:`N_1 + N_2` likelihood evaluations; suited to posteriors with a few hundred
    dimensions or fewer that are unimodal up to relabelling (it needs at least four draws per
    chain and dimension, checked before NUTS runs).

Memory: every method that evaluates the model at many points (importance draws, particles,
bridge points, the columns of the Laplace Hessian, the starts of the mode search) does so in
chunks sized by the memory budget of :mod:`probdyn.memory`; ``chunk`` fixes the size instead.
Chunking changes no number beyond the order of floating-point sums. The Laplace method needs the
dense Hessian, whose size is checked against the memory limit before the mode is searched.
``"exact"``
    For models whose latent states are integrated out exactly (LDS with Gaussian emissions,
    HMMs) and at most two free parameter dimensions: the integral over the parameters by
    quadrature on a grid that covers every point within 40 nats of the mode; the error is
    bounded by comparing the grid with one of half the resolution. With no free parameter it is
    the exact log likelihood.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import math
import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import scipy.optimize
import xarray as xr
from blackjax.smc import resampling
from jax import Array
from jax.scipy.special import logsumexp
from numpyro.infer.util import log_density
from probdyn.inference import devices
from probdyn.inference.density import Density, bind
from scipy.special import logsumexp as host_logsumexp
from tqdm.auto import tqdm

from probdyn import memory
from probdyn.capabilities import Posterior, require_deterministic_density
from probdyn.errors import ConfigError, MemoryBudgetError
from probdyn.model import Model


@dataclasses.dataclass(frozen=True)
class Evidence:
    """A log-evidence estimate with its error and cost."""

    log_evidence: float
    standard_error: float
    method: str
    is_bound: bool
    error_source: str
    seconds: float
    likelihood_evaluations: int
    diagnostics: dict = dataclasses.field(default_factory=dict)

    def to_dataset(self) -> xr.Dataset:
        """The estimate as the ``evidence`` group of a saved run (round trip: from_dataset)."""
        return xr.Dataset(
            {
                "log_evidence": self.log_evidence,
                "standard_error": self.standard_error,
                "seconds": self.seconds,
                "likelihood_evaluations": self.likelihood_evaluations,
            },
            attrs={
                "method": self.method,
                "is_bound": int(self.is_bound),
                "error_source": self.error_source,
                "diagnostics": json.dumps(self.diagnostics, default=float),
            },
        )

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> Evidence:
        """Rebuild an estimate saved by :meth:`to_dataset`."""
        missing = sorted({"log_evidence", "standard_error"} - set(ds.data_vars))
        if missing or "method" not in ds.attrs:
            raise ConfigError(
                f"the evidence group lacks {missing or ['its method']}; it was not written by "
                "probdyn"
            )
        return cls(
            log_evidence=float(ds["log_evidence"]),
            standard_error=float(ds["standard_error"]),
            method=str(ds.attrs["method"]),
            is_bound=bool(ds.attrs.get("is_bound", 0)),
            error_source=str(ds.attrs.get("error_source", "")),
            seconds=float(ds.get("seconds", np.nan)),
            likelihood_evaluations=int(ds.get("likelihood_evaluations", 0)),
            diagnostics=json.loads(ds.attrs.get("diagnostics", "{}")),
        )

    def __str__(self) -> str:
        kind = "lower bound" if self.is_bound else "estimate"
        return (
            f"log evidence {self.log_evidence:.3f} +- {self.standard_error:.3f} ({self.method}, "
            f"{kind}; error: {self.error_source}; {self.seconds:.1f} s)"
        )


def log_evidence(model: Model, data, *, method: str = "smc", seed: int, **options) -> Evidence:
    r"""Estimate :math:`\log p(y \mid \text{model})`; see the module docstring for methods.

    Options by method: ``smc``: ``num_particles`` (1000 per repeat), ``num_repeats`` (4),
    ``num_mcmc_steps`` (10), ``num_integration_steps`` (20), ``target_ess`` (0.5),
    ``dense_mass`` (False), ``num_devices`` (all visible), ``chunk`` (particles moved at
    once, over all repeats);
    ``iwae``: ``svi_result`` (or ``svi_steps``, 2000), ``num_importance`` K (1000),
    ``num_batches`` (8), ``chunk`` (importance draws at once); ``heldout`` (new trials under
    a fitted amortised guide, :func:`_heldout`): ``svi_result`` (required),
    ``num_importance`` (200), ``num_batches`` (4), ``chunk``; ``bridge``: ``mcmc_result``
    (or ``num_warmup`` 500, ``num_samples`` 1000, ``num_chains`` 4, ``dense_mass`` False for
    a NUTS run), ``num_proposal`` :math:`N_2` (``num_samples``); ``exact``: ``num_grid``
    (1-D grid points, 2001).
    """
    methods = _methods()
    if method not in methods:
        raise ConfigError(f"method={method!r}; expected one of {sorted(methods)}")
    unknown = sorted(set(options) - set(method_options(method)))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for method={method!r}; expected some of "
            f"{method_options(method)}"
        )
    if method in DETERMINISTIC_METHODS:
        require_deterministic_density(model, f"log_evidence(method={method!r})")
    density = bind(model, model.as_data(data))
    start = time.perf_counter()
    result = methods[method](density, jax.random.key(seed), model=model, **options)
    return dataclasses.replace(result, seconds=time.perf_counter() - start)


#: Methods that need the log density as a deterministic function of the parameters.
DETERMINISTIC_METHODS = ("smc", "bridge", "laplace", "exact")


def _methods() -> dict:
    return {
        "smc": _smc,
        "iwae": _iwae,
        "heldout": _heldout,
        "predictive": _predictive,
        "bridge": _bridge,
        "laplace": _laplace,
        "exact": _exact,
    }


def method_options(method: str) -> list[str]:
    """The options ``log_evidence(..., method=method, **options)`` takes."""
    parameters = inspect.signature(_methods()[method]).parameters
    return [
        name
        for name, parameter in parameters.items()
        if parameter.kind == parameter.KEYWORD_ONLY and name != "model"
    ]


# -- tempered SMC --------------------------------------------------------------------------
def _smc(
    density: Density,
    key,
    *,
    model=None,
    num_particles: int = 1000,
    num_repeats: int = 4,
    num_mcmc_steps: int = 10,
    num_integration_steps: int = 20,
    target_ess: float = 0.5,
    dense_mass: bool = False,
    max_steps: int = 1000,
    num_devices: int | None = None,
    chunk: int | None = None,
) -> Evidence:
    if density.dim == 0:
        return _exact(density, key)
    if num_repeats < 2:
        raise ConfigError("num_repeats must be at least 2 to estimate a standard error")
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
    kernel = blackjax.smc.adaptive_tempered.build_kernel(
        density.log_prior,
        density.log_likelihood,
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

    def one_run(key):
        key_init, key_loop = jax.random.split(key)
        particles = density.sample_prior(key_init, num_particles)
        state = spread(blackjax.smc.adaptive_tempered.init(particles))
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
            accept = jnp.mean(info.update_info.acceptance_rate)
            # Multiplicative step-size control toward 0.75 acceptance.
            step_size = step_size * jnp.exp(2.0 * (accept - 0.75))
            return state, step_size, log_z + info.log_likelihood_increment, accept, key, steps + 1

        init = (state, step_size, jnp.zeros((), particles.dtype), jnp.zeros(()), key_loop, 0)
        state, _, log_z, acceptance, _, steps = jax.lax.while_loop(keep_going, advance, init)
        return log_z, steps, acceptance, state.tempering_param

    # The repeats run in groups of repeats_at_once (one compiled program for every group),
    # each group a progress step.
    keys = jax.random.split(key, num_repeats)
    groups = [keys[i : i + repeats_at_once] for i in range(0, num_repeats, repeats_at_once)]
    groups = [jax.device_put(g, devices.replicated(mesh)) for g in groups]
    runs = jax.jit(jax.vmap(one_run))
    for group in {len(g): g for g in groups}.values():
        runs.lower(group)  # traced now, one per group size: the loop below only runs
    bar = tqdm(total=num_repeats, disable=not memory.settings().progress, desc="smc", unit="run")
    outcomes = []
    with devices.hot_loop():
        for group in groups:
            outcomes.append(devices.to_host(runs(group)))  # waits for the group
            bar.update(len(group))
    bar.close()
    joined = (np.concatenate(values) for values in zip(*outcomes, strict=True))
    log_z, steps, final_acceptance, reached = joined
    if not np.all(reached >= 1.0):
        raise FloatingPointError(
            f"SMC did not reach the posterior within {max_steps} tempering steps"
        )
    estimate, standard_error = _log_mean_and_se(log_z)
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
            "tempering_steps": steps.tolist(),
            "final_acceptance": final_acceptance.tolist(),
            "num_particles": num_particles,
            "num_devices": mesh.size,
            "dense_mass": dense_mass,
            "particles_at_once": min(at_once, num_particles),
        },
    )


def _log_mean_and_se(log_values: np.ndarray) -> tuple[float, float]:
    r""":math:`\log \bar Z` and its delta-method standard error from independent log Z."""
    r = len(log_values)
    top = log_values.max()
    scaled = np.exp(log_values - top)
    mean = scaled.mean()
    return float(top + math.log(mean)), float(scaled.std(ddof=1) / (math.sqrt(r) * mean))


# -- held-out sequences ----------------------------------------------------------------------
def held_out_evidence(log_likelihoods, standard_errors=None, *, seconds: float = 0.0) -> Evidence:
    r"""Evidence of held-out sequences given a fit, :math:`\log p(Y_\text{test} \mid \text{fit})`.

    For models fitted in different ways (a posterior over an HMM's parameters, a point estimate
    of an RNN trained by Sinkhorn divergence) this is one scale for all: the probability each
    gives to sequences it has not seen. ``log_likelihoods`` holds
    :math:`\log p(y_s \mid \theta)` of the S held-out sequences, shape (S,) for one parameter
    value, or :math:`\log p(y_s \mid \theta_d)` for D posterior draws, shape (D, S):

    .. math::
        \log p(Y \mid \text{fit}) = \log \frac1D \sum_d \exp \sum_s \log p(y_s \mid \theta_d),

    the posterior predictive of the whole held-out set (the sequences are independent given
    :math:`\theta`, not after averaging over it). Standard error: the Monte Carlo error of the
    average over draws (delta method; the draws taken as independent, so thin correlated chains
    first) and, for one parameter value, ``standard_errors`` (S,) of estimated per-sequence log
    likelihoods (particle filters), independent across sequences.
    """
    values = np.asarray(log_likelihoods, np.float64)
    if values.ndim not in (1, 2) or values.shape[-1] == 0 or not np.all(np.isfinite(values)):
        raise ConfigError(
            f"log_likelihoods has shape {values.shape}; expected finite (sequences,) or "
            "(draws, sequences)"
        )
    single = values.ndim == 1
    if standard_errors is not None and (not single or np.shape(standard_errors) != values.shape):
        raise ConfigError(
            "standard_errors must have the shape (sequences,) of a single parameter value's "
            f"log likelihoods; got {np.shape(standard_errors)} for {values.shape}"
        )
    if single:
        se = 0.0 if standard_errors is None else float(np.sqrt(np.sum(np.square(standard_errors))))
        estimate, source, draws = float(values.sum()), "per-sequence likelihood estimates", 1
    else:
        draws = values.shape[0]
        if draws < 2:
            raise ConfigError("held-out evidence from posterior draws needs at least 2 draws")
        estimate, se = _log_mean_and_se(values.sum(axis=1))
        source = f"average over {draws} posterior draws (delta method)"
    return Evidence(
        estimate,
        se,
        "held-out",
        False,
        source,
        seconds,
        int(values.size),
        {"num_sequences": values.shape[-1], "num_draws": draws},
    )


# -- importance-weighted bound ---------------------------------------------------------------
def _iwae(
    density: Density,
    key,
    *,
    model=None,
    svi_result=None,
    svi_steps: int = 2000,
    num_importance: int = 1000,
    num_batches: int = 8,
    chunk: int | None = None,
) -> Evidence:
    from probdyn.inference.svi import svi

    key_fit, key_draw = jax.random.split(key)
    if svi_result is None:
        seed = int(jax.random.randint(key_fit, (), 0, 2**31 - 1))
        svi_result = svi(model, density.data, num_steps=svi_steps, seed=seed, progress=False)
    guide, params = svi_result.guide, svi_result.params
    data = density.data

    def log_weight(key):
        seeded = numpyro.handlers.seed(guide, key)
        log_q, guide_trace = log_density(seeded, (data,), {}, params)
        values = {
            name: site["value"]
            for name, site in guide_trace.items()
            if site["type"] == "sample" and not site["is_observed"]
        }
        program = numpyro.handlers.seed(density.program, jax.random.fold_in(key, 1))
        log_p, _ = log_density(program, (data,), {}, values)
        return log_p - log_q

    keys = jax.random.split(key_draw, num_batches * num_importance)
    log_w = memory.map_chunks(
        log_weight, keys, what="iwae importance draws", unit="draw", chunk=chunk
    ).reshape(num_batches, num_importance)
    bounds = np.asarray(logsumexp(log_w, axis=1) - math.log(num_importance))
    return Evidence(
        float(bounds.mean()),
        float(bounds.std(ddof=1) / math.sqrt(num_batches)),
        "iwae",
        True,
        f"spread of {num_batches} independent batches of K={num_importance}",
        0.0,
        num_batches * num_importance,
        {"num_importance": num_importance, "bound_per_batch": bounds.tolist()},
    )


def _trial_terms(trace) -> Array:
    """Sum of the per-trial log densities (trial,) of the sites inside the trial plate."""
    total = 0.0
    for site in trace.values():
        in_trial_plate = any(frame.name == "trial" for frame in site["cond_indep_stack"])
        if site["type"] == "sample" and in_trial_plate:
            total = total + site["fn"].log_prob(site["value"])
    return total


def _heldout(
    density: Density,
    key,
    *,
    model=None,
    svi_result=None,
    num_importance: int = 200,
    num_batches: int = 4,
    chunk: int | None = None,
) -> Evidence:
    r"""The log likelihood of new trials under a fitted model, per trial, with its error.

    For trials :math:`y_m` that the fit never saw and an amortised guide
    :math:`q(\theta)\,q(z_m \mid y_m)`:

    .. math::
        \log \hat p(y_m) = \log \frac1K \sum_{k=1}^K
        \frac{p(y_m, z_{mk} \mid \theta_k)}{q(z_{mk} \mid y_m)},\qquad
        \theta_k \sim q(\theta),\ z_{mk} \sim q(z_m \mid y_m),

    a lower bound (in expectation) on :math:`\log \mathbb{E}_{q(\theta)}\,p(y_m \mid \theta)`,
    the held-out predictive log likelihood under the fitted posterior (the weights' prior does
    not enter: only the trial plate's sites, latents and observations, are weighed). The
    estimate is the sum over trials; its error the spread of ``num_batches`` independent
    batches of K = ``num_importance``; ``diagnostics["per_trial"]`` and
    ``["per_trial_se"]`` hold each trial's estimate and error.
    """
    from probdyn.inference.amortised import AmortisedGuide

    if svi_result is None or not isinstance(svi_result.guide, AmortisedGuide):
        raise ConfigError(
            "method='heldout' needs svi_result=, a fit with an amortised guide (its encoder "
            "infers the new trials)"
        )
    guide, params, data = svi_result.guide, svi_result.params, density.data

    def log_weight(key):
        guide_trace = numpyro.handlers.trace(
            numpyro.handlers.substitute(numpyro.handlers.seed(guide, key), params)
        ).get_trace(data)
        replayed = numpyro.handlers.replay(
            numpyro.handlers.seed(density.program, jax.random.fold_in(key, 1)), guide_trace
        )
        model_trace = numpyro.handlers.trace(replayed).get_trace(data)
        return _trial_terms(model_trace) - _trial_terms(guide_trace)

    keys = jax.random.split(key, num_batches * num_importance)
    log_w = memory.map_chunks(
        log_weight, keys, what="held-out importance draws", unit="draw", chunk=chunk
    ).reshape(num_batches, num_importance, -1)
    per_batch = np.asarray(logsumexp(log_w, axis=1) - math.log(num_importance))  # (batch, trial)
    per_trial = per_batch.mean(axis=0)
    per_trial_se = per_batch.std(axis=0, ddof=1) / math.sqrt(num_batches)
    totals = per_batch.sum(axis=1)
    return Evidence(
        float(totals.mean()),
        float(totals.std(ddof=1) / math.sqrt(num_batches)),
        "heldout",
        True,
        f"spread of {num_batches} independent batches of K={num_importance} per trial",
        0.0,
        num_batches * num_importance,
        {
            "num_importance": num_importance,
            "per_trial": per_trial.tolist(),
            "per_trial_se": per_trial_se.tolist(),
        },
    )


# -- posterior predictive of trials -----------------------------------------------------------
def _predictive(
    density: Density,
    key,
    *,
    model=None,
    posterior=None,
    num_draws: int = 100,
    chunk: int | None = None,
) -> Evidence:
    r"""The log posterior predictive density of each trial, summed over trials.

    :math:`\sum_s \log \frac1D \sum_d \hat p(y_s \mid \theta_d)`, :math:`\theta_d` drawn
    from ``posterior``. On trials the fit never saw this is the held-out expected log predictive
    density (elpd; Vehtari, Gelman & Gabry 2017), the score by which models fitted in any way,
    with any likelihood, are compared on one scale. Each draw's per-trial log likelihoods are
    the trial plate's observed sites run at the draw, with a fresh key per draw (so that
    particle-filter estimates are independent across draws). Error: each trial's Monte Carlo
    error of its average over draws (delta method; the filter's noise included), independent
    across trials. ``diagnostics``: ``per_trial`` (S,), for paired comparisons across models,
    and ``joint``, :math:`\log \frac1D\sum_d \prod_s \hat p(y_s \mid \theta_d)` (the predictive
    of the trials together, :func:`held_out_evidence`) with ``joint_se``: with many trials one
    draw dominates it, as its error then says. A sampled path (``marginal="sample"``) is
    refused: its program weighs a trial with one draw of its path, not with the path integrated
    out.
    """
    if not isinstance(posterior, Posterior):
        raise ConfigError(
            "method='predictive' needs posterior=, an inference result (SVIResult, MCMCResult, "
            f"PointEstimate, WeightPosterior); got {type(posterior).__name__}"
        )
    if getattr(model, "marginal", None) == "sample":
        raise ConfigError(
            f"method='predictive' needs each trial's likelihood with its path integrated out; "
            f"{type(model).__name__}(marginal='sample') samples it: rebuild the model with "
            "marginal='particle' (or a closed form) and pass the same posterior"
        )
    sites = set(model.site_priors(density.data.emission_dim))
    draws = posterior.draws(num_draws, seed=int(jax.random.randint(key, (), 0, 2**31 - 1)))
    draws = {name: jnp.asarray(value) for name, value in draws.items() if name in sites}
    total = len(next(iter(draws.values()))) if draws else 1
    data = density.data

    def trial_log_likelihoods(item):
        draw, key = item
        program = numpyro.handlers.seed(numpyro.handlers.substitute(density.program, draw), key)
        return _trial_terms(numpyro.handlers.trace(program).get_trace(data))

    keys = jax.random.split(jax.random.fold_in(key, 1), total)
    table = np.asarray(
        memory.map_chunks(
            trial_log_likelihoods, (draws, keys), what="predictive draws", unit="draw", chunk=chunk
        ),
        np.float64,
    )
    per_trial = [_log_mean_and_se(column) if total > 1 else (column[0], 0.0) for column in table.T]
    values, errors = np.array(per_trial).T
    joint = held_out_evidence(table if total > 1 else table[0])
    return Evidence(
        float(values.sum()),
        float(np.sqrt(np.sum(errors**2))),
        "predictive",
        False,
        f"average over {total} posterior draws per trial (delta method)",
        0.0,
        int(table.size),
        {
            "num_draws": total,
            "per_trial": values.tolist(),
            "per_trial_se": errors.tolist(),
            "joint": joint.log_evidence,
            "joint_se": joint.standard_error,
        },
    )


# -- bridge sampling -------------------------------------------------------------------------
#: Largest label count whose relabellings bridge sampling averages over (7! = 5040).
MAX_LABELS = 7


def _bridge(
    density: Density,
    key,
    *,
    model,
    mcmc_result=None,
    num_warmup: int = 500,
    num_samples: int = 1000,
    num_chains: int = 4,
    dense_mass: bool = False,
    num_proposal: int | None = None,
) -> Evidence:
    from probdyn.inference.mcmc import nuts

    if density.dim == 0:
        return _exact(density, key)
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
    estimate, standard_error = _log_mean_and_se(per_chain)
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


# -- Laplace and quadrature ------------------------------------------------------------------
def find_mode(density: Density, key, *, num_starts: int = 4, num_steps: int = 1000):
    """Maximise the log posterior on unconstrained space.

    Adam with a decaying learning rate from ``num_starts`` prior draws (vectorised), then damped
    Newton steps from the best of them. Returns the mode and its log posterior.
    """
    starts = density.sample_prior(key, num_starts)

    def loss(z):
        return -density.log_posterior(z)

    adam = optax.adam(optax.exponential_decay(0.1, num_steps, 0.01))

    def descend(z):
        def adam_step(carry, _):
            z, state = carry
            updates, state = adam.update(jax.grad(loss)(z), state)
            return (z + updates, state), None

        (z, _), _ = jax.lax.scan(adam_step, (z, adam.init(z)), None, length=num_steps)
        return z, -loss(z)

    modes, values = memory.map_chunks(descend, starts, what="mode search", unit="start")
    values = np.where(np.isfinite(values), values, -np.inf)
    best = jnp.asarray(modes[int(np.argmax(values))])

    gradient, value = jax.jit(jax.grad(loss)), jax.jit(loss)
    for _ in range(5):
        # In place: at thousands of dimensions each copy of the matrix is gigabytes.
        hessian = hessian_matrix(density.log_posterior, best)
        np.negative(hessian, out=hessian)
        hessian[np.diag_indices_from(hessian)] += 1e-8
        step = np.linalg.solve(hessian, np.asarray(gradient(best), np.float64))
        del hessian
        candidate = best - jnp.asarray(step, best.dtype)
        if value(candidate) < value(best):
            best = candidate
    return best, float(-value(best))


def require_dense_hessian(dim: int) -> None:
    """Raise a MemoryBudgetError unless a dense Hessian fits the limit three times over.

    In float64, with its LU factor; and the columns as computed (float32 where JAX is) with
    their concatenation, as much again.
    """
    needed = 3 * dim * dim * np.dtype(np.float64).itemsize
    free = memory.settings().resolved_limit() - memory.resident_bytes()
    if needed > free:
        raise MemoryBudgetError(
            f"the Hessian of {dim} free dimensions needs {memory.format_size(needed)} (dense, "
            f"with its factorisation) but {memory.format_size(max(free, 0))} of the "
            f"{memory.format_size(memory.settings().resolved_limit())} memory limit is free; "
            "use the iwae or smc evidence for models this large"
        )


def hessian_matrix(fn, z: Array) -> np.ndarray:
    r"""The Hessian of a scalar ``fn`` at ``z``, column by column, in chunks sized by the budget.

    Column :math:`j` is the Hessian-vector product with the unit vector :math:`e_j` (forward
    over reverse); the dense result is checked against the memory limit before any is computed.
    """
    dim = z.shape[0]
    require_dense_hessian(dim)

    def column(j):
        unit = jax.nn.one_hot(j, dim, dtype=z.dtype)
        return jax.jvp(jax.grad(fn), (z,), (unit,))[1]

    columns = memory.map_chunks(column, jnp.arange(dim), what="Hessian columns", unit="column")
    return columns.astype(np.float64).T  # row j is column j: the transpose is a view


def _laplace(density: Density, key, *, model=None, num_starts: int = 4) -> Evidence:
    if density.dim == 0:
        return _exact(density, key)
    require_dense_hessian(density.dim)  # before the search, not after it
    mode, log_joint = find_mode(density, key, num_starts=num_starts)
    hessian = hessian_matrix(density.log_posterior, mode)
    np.negative(hessian, out=hessian)
    sign, log_det = np.linalg.slogdet(hessian)
    if sign <= 0:
        raise FloatingPointError("the Hessian at the mode is not positive definite")
    value = log_joint + 0.5 * density.dim * math.log(2 * math.pi) - 0.5 * log_det
    return Evidence(
        float(value),
        float("nan"),
        "laplace",
        False,
        "not estimated (Gaussian approximation at the mode)",
        0.0,
        0,
        {"mode": {k: np.asarray(v).tolist() for k, v in density.constrain(mode).items()}},
    )


def _exact(density: Density, key, *, model=None, num_grid: int = 2001) -> Evidence:
    if density.dim == 0:
        value = float(density.log_likelihood(jnp.zeros(0)))
        return Evidence(value, 0.0, "exact", False, "none (closed form)", 0.0, 1)
    if density.dim > 2:
        raise ConfigError(
            f"method='exact' integrates at most 2 free dimensions by quadrature; this model has "
            f"{density.dim} (fix parameters with dist.Delta or use method='smc')"
        )
    mode, peak = find_mode(density, key)
    scale = jnp.sqrt(jnp.diag(jnp.linalg.inv(-jax.hessian(density.log_posterior)(mode))))
    log_post = jax.jit(jax.vmap(density.log_posterior))
    width = 10.0
    points = num_grid if density.dim == 1 else int(math.sqrt(num_grid * 20)) | 1
    # Widen the box until its boundary is 40 nats below the peak on every side.
    for _ in range(8):
        axes = [
            jnp.linspace(-width, width, points) * s + m for m, s in zip(mode, scale, strict=True)
        ]
        grid = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)
        values = np.asarray(log_post(grid.reshape(-1, density.dim))).reshape(grid.shape[:-1])
        values = np.where(np.isfinite(values), values, -np.inf)
        edge = max(np.take(values, [0, -1], axis=a).max() for a in range(density.dim))
        if edge < peak - 40.0:
            break
        width *= 2.0
    fine = _trapezoid_log(values, [a[1] - a[0] for a in axes])
    coarse = _trapezoid_log(
        values[(slice(None, None, 2),) * density.dim], [2 * (a[1] - a[0]) for a in axes]
    )
    return Evidence(
        float(fine),
        float(abs(fine - coarse)),
        "exact",
        False,
        "quadrature over the parameters; error bounded by the half-resolution grid",
        0.0,
        int(values.size),
        {"grid_points": int(values.size), "half_width_sd": width},
    )


def _trapezoid_log(log_values, steps) -> float:
    """Log of the trapezoid rule of exp(log_values) on a regular grid."""
    weights = jnp.zeros(log_values.shape)
    for axis, _ in enumerate(steps):
        edge = jnp.ones(log_values.shape[axis]).at[jnp.array([0, -1])].set(0.5)
        shape = [1] * log_values.ndim
        shape[axis] = -1
        weights = weights + jnp.log(edge).reshape(shape)
    return float(logsumexp(log_values + weights) + sum(math.log(s) for s in steps))
