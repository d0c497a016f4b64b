"""Log posterior predictive density of trials from any inference result."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro

from probdyn.capabilities import Posterior
from probdyn.errors import ConfigError
from probdyn.inference.density import Density
from probdyn.inference.evidence.heldout import trial_terms
from probdyn.inference.evidence.result import Evidence, held_out_evidence, log_mean_and_se
from probdyn.runtime import memory
from probdyn.schema import Count


def predictive(
    density: Density,
    key,
    *,
    model=None,
    posterior=None,
    num_draws: Count = 100,
    chunk: Count | None = None,
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
        return trial_terms(numpyro.handlers.trace(program).get_trace(data))

    keys = jax.random.split(jax.random.fold_in(key, 1), total)
    table = np.asarray(
        memory.map_chunks(
            trial_log_likelihoods, (draws, keys), what="predictive draws", unit="draw", chunk=chunk
        ),
        np.float64,
    )
    per_trial = [log_mean_and_se(column) if total > 1 else (column[0], 0.0) for column in table.T]
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
