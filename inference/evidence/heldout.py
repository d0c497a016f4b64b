"""Held-out log likelihood of new trials under an amortised fit (``method="heldout"``)."""

from __future__ import annotations

import math

import jax
import numpy as np
import numpyro
from jax import Array
from jax.scipy.special import logsumexp

from probdyn.errors import ConfigError
from probdyn.inference.density import Density
from probdyn.inference.evidence.result import Evidence
from probdyn.runtime import memory
from probdyn.schema import Count


def trial_terms(trace) -> Array:
    """Sum of the per-trial log densities (trial,) of the sites inside the trial plate."""
    total = 0.0
    for site in trace.values():
        in_trial_plate = any(frame.name == "trial" for frame in site["cond_indep_stack"])
        if site["type"] == "sample" and in_trial_plate:
            total = total + site["fn"].log_prob(site["value"])
    return total


def heldout(
    density: Density,
    key,
    *,
    model=None,
    svi_result=None,
    num_importance: Count = 200,
    num_batches: Count = 4,
    chunk: Count | None = None,
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
        return trial_terms(model_trace) - trial_terms(guide_trace)

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
