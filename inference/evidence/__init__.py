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
    (:func:`probdyn.runtime.devices.mesh`; ``num_devices`` caps them): each device moves its
    own particles, XLA gathers them for the weights, the mass matrix and resampling.
    ``num_repeats`` independent runs give the estimate
    :math:`\log \bar Z` and its standard error by the delta method,
    :math:`\mathrm{se} = \mathrm{sd}(\hat Z_r) / (\sqrt{R}\, \bar Z)`.
    ``reference="laplace"`` (or ``"guide"`` with ``svi_result``) tempers from a Gaussian fitted
    to the posterior instead (:mod:`probdyn.inference.reference`): :math:`\pi_\beta \propto
    q\,\ell^\beta` with :math:`q\,\ell = \pi_0 L`, unbiased in the same way and a few steps
    long where :math:`q` is close; the diagnostics report each run's tempering steps and the
    effective sample size of :math:`\ell` at the start.
``"ais"``
    Annealed importance sampling (:func:`~probdyn.inference.evidence.ais.ais`): the same path
    on a fixed ladder of ``num_temperatures`` steps without resampling, from the Laplace
    reference by default (``reference="prior"`` for the classic start); the final weights'
    effective sample size is reported.
``"iwae"``
    The importance-weighted bound of an SVI guide,
    :math:`\mathcal{L}_K = \mathbb{E}\log \frac1K \sum_k p(y, \theta_k)/q(\theta_k)
    \le \log p(y)`, averaged over ``num_batches`` independent batches (standard error from
    their spread). A lower bound in expectation, rising to :math:`\log p(y)` as K grows.
``"heldout"``
    Not an evidence: the log likelihood of new trials under a fitted amortised model, per trial, an
    importance-weighted bound over each trial's latents with the weights drawn from the guide
    (:func:`~probdyn.inference.evidence.heldout.heldout`). For models whose weights are networks,
    the score to compare them by on trials they never saw.
``"predictive"``
    Not an evidence of the data the fit saw: the log posterior predictive density of trials
    (new ones, for a score on trials the model never saw), per trial and summed,
    :math:`\sum_s \log \frac1D \sum_d p(y_s \mid \theta_d)`, with :math:`\theta_d` drawn
    from any inference result (``posterior``, a :class:`probdyn.capabilities.Posterior`) and each
    trial's likelihood the program's own: exact where the family integrates its path in closed form,
    the particle filter's unbiased estimate under ``marginal="particle"``
    (:func:`~probdyn.inference.evidence.predictive.predictive`). One estimator for every family with
    a Markov latent path, so families are compared on one scale.
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

Memory: every method that evaluates the model at many points (importance draws, particles, bridge
points, the columns of the Laplace Hessian, the starts of the mode search) does so in chunks sized
by the memory budget of :mod:`probdyn.runtime.memory`; ``chunk`` fixes the size instead. Chunking
changes no number beyond the order of floating-point sums. The Laplace method needs the dense
Hessian, whose size is checked against the memory limit before the mode is searched. ``"exact"``
    For models whose latent states are integrated out exactly (LDS with Gaussian emissions,
    HMMs) and at most two free parameter dimensions: the integral over the parameters by
    quadrature on a grid that covers every point within 40 nats of the mode; the error is
    bounded by comparing the grid with one of half the resolution. With no free parameter it is
    the exact log likelihood.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import jax

from probdyn.capabilities import require_deterministic_density
from probdyn.errors import ConfigError
from probdyn.inference.density import bind
from probdyn.inference.evidence.ais import ais
from probdyn.inference.evidence.bridge import bridge
from probdyn.inference.evidence.exact import exact
from probdyn.inference.evidence.heldout import heldout
from probdyn.inference.evidence.iwae import iwae
from probdyn.inference.evidence.laplace import laplace
from probdyn.inference.evidence.predictive import predictive
from probdyn.inference.evidence.result import Evidence, held_out_evidence
from probdyn.inference.evidence.smc import smc
from probdyn.inference.mode import find_mode, hessian_matrix, require_dense_hessian
from probdyn.model import Model
from probdyn.schema import check_options

__all__ = [
    "DETERMINISTIC_METHODS",
    "Evidence",
    "check_method_options",
    "find_mode",
    "held_out_evidence",
    "hessian_matrix",
    "log_evidence",
    "require_dense_hessian",
]


def log_evidence(model: Model, data, *, method: str = "smc", seed: int, **options) -> Evidence:
    r"""Estimate :math:`\log p(y \mid \text{model})`; see the module docstring for methods.

    Options by method: ``smc``: ``num_particles`` (1000 per repeat), ``num_repeats`` (4),
    ``num_mcmc_steps`` (10), ``num_integration_steps`` (20), ``target_ess`` (0.5),
    ``dense_mass`` (False), ``num_devices`` (all visible), ``chunk`` (particles moved at
    once, over all repeats), ``reference`` ("prior"; "laplace", "guide" with ``svi_result``),
    ``reference_scale`` (1.0); ``ais``: ``reference`` ("laplace"), ``svi_result``,
    ``reference_scale``, ``num_particles`` (500), ``num_repeats`` (4), ``num_temperatures``
    (100), ``schedule_power`` (1 from a reference, 4 from the prior), ``num_mcmc_steps`` (2),
    ``num_integration_steps`` (10), ``chunk``;
    ``iwae``: ``svi_result`` (or ``svi_steps``, 2000), ``num_importance`` K (1000),
    ``num_batches`` (8), ``chunk`` (importance draws at once); ``heldout`` (new trials under
    a fitted amortised guide, :func:`heldout`): ``svi_result`` (required),
    ``num_importance`` (200), ``num_batches`` (4), ``chunk``; ``bridge``: ``mcmc_result``
    (or ``num_warmup`` 500, ``num_samples`` 1000, ``num_chains`` 4, ``dense_mass`` False for
    a NUTS run), ``num_proposal`` :math:`N_2` (``num_samples``); ``exact``: ``num_grid``
    (1-D grid points, 2001).
    """
    check_method_options(method, options, where=f"log_evidence(method={method!r})")
    if method in DETERMINISTIC_METHODS:
        require_deterministic_density(model, f"log_evidence(method={method!r})")
    density = bind(model, model.as_data(data))
    start = time.perf_counter()
    result = _methods()[method](density, jax.random.key(seed), model=model, **options)
    return dataclasses.replace(result, seconds=time.perf_counter() - start)


#: Methods that need the log density as a deterministic function of the parameters.
DETERMINISTIC_METHODS = ("smc", "ais", "bridge", "laplace", "exact")


def _methods() -> dict:
    return {
        "smc": smc,
        "ais": ais,
        "iwae": iwae,
        "heldout": heldout,
        "predictive": predictive,
        "bridge": bridge,
        "laplace": laplace,
        "exact": exact,
    }


def check_method_options(
    method: str, options: Mapping[str, Any], *, where: str, filled: tuple[str, ...] = ()
) -> None:
    """Refuse an unknown method, unknown options and values of the wrong type or range.

    Each option is checked against the method's annotation (:mod:`probdyn.schema`); ``filled``
    names options the caller supplies itself (refused when given). One-line
    :class:`~probdyn.errors.ConfigError` naming ``where`` and the option.
    """
    methods = _methods()
    if method not in methods:
        raise ConfigError(f"{where}: method={method!r}; expected one of {sorted(methods)}")
    wrong = check_options(
        methods[method], options, where, skip=("density", "key", "model", *filled)
    )
    if wrong:
        raise ConfigError(wrong)
