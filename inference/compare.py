r"""Model comparison by evidence: a table of models with Bayes factors and model probabilities.

For models :math:`M_i` with log evidence :math:`\log Z_i` and prior probabilities
:math:`\pi_i` (uniform by default):

.. math::
    \Delta_i = \log Z_i - \max_j \log Z_j,\quad
    \mathrm{BF}_i = e^{\Delta_i}\ (\text{against the best}),\quad
    P(M_i \mid y) = \frac{\pi_i Z_i}{\sum_j \pi_j Z_j},

with the standard error of :math:`\Delta_i` from the two estimates' errors (independent runs).
Where rows mix estimates (SMC, exact, Laplace) with lower bounds (IWAE), the differences are not
Bayes factors but bounds on them: every affected row says so in ``note`` and a
:class:`MixedEvidenceWarning` is raised. PSIS-LOO (``elpd_loo``, from ArviZ) is added for models
whose posterior draws with pointwise log-likelihood are given.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from probdyn.errors import ConfigError
from probdyn.inference.evidence import Evidence, log_evidence
from probdyn.model import Model


class MixedEvidenceWarning(UserWarning):
    """A comparison table mixes evidence estimates with lower bounds."""


def _model_priors(prior_probabilities, names) -> Mapping[str, float]:
    """Prior model probabilities (uniform when None), checked against the model names."""
    priors = prior_probabilities or dict.fromkeys(names, 1.0)
    if set(priors) != set(names) or any(p <= 0 for p in priors.values()):
        raise ConfigError("prior_probabilities must give a positive value for every model")
    return priors


def compare(
    models: Mapping[str, Model],
    data,
    *,
    seed: int,
    method: str | Mapping[str, str] = "smc",
    prior_probabilities: Mapping[str, float] | None = None,
    posteriors: Mapping[str, object] | None = None,
    evidences: Mapping[str, Evidence] | None = None,
    **evidence_options,
) -> pd.DataFrame:
    """Compare ``models`` on ``data`` by their evidence; one row per model, best first.

    Parameters
    ----------
    method
        Evidence method for every model, or a mapping model name -> method.
    prior_probabilities
        Prior model probabilities (normalised here); uniform when None.
    posteriors
        Optional SVI/NUTS results per model; their ``to_arviz()`` gives ``elpd_loo``.
    evidences
        Already computed :class:`Evidence` per model (not recomputed).
    evidence_options
        Passed to :func:`~probdyn.inference.log_evidence`.

    """
    if not models:
        raise ConfigError("compare needs at least one model")
    names = list(models)
    priors = _model_priors(prior_probabilities, names)
    results = dict(evidences or {})
    for i, name in enumerate(names):
        if name not in results:
            chosen = method[name] if isinstance(method, Mapping) else method
            results[name] = log_evidence(
                models[name], data, method=chosen, seed=seed + i, **evidence_options
            )
    trees = {name: result.to_arviz() for name, result in (posteriors or {}).items()}
    return comparison_table(
        {name: results[name] for name in names}, prior_probabilities=priors, trees=trees
    )


def comparison_table(
    evidences: Mapping[str, Evidence],
    *,
    prior_probabilities: Mapping[str, float] | None = None,
    trees: Mapping[str, xr.DataTree] | None = None,
) -> pd.DataFrame:
    """The table of :func:`compare` from evidence already computed (e.g. read from saved runs).

    ``trees`` (ArviZ DataTrees with a ``log_likelihood`` group) add ``elpd_loo`` for their rows.
    """
    if not evidences:
        raise ConfigError("a comparison needs at least one model")
    names = list(evidences)
    results = evidences
    priors = _model_priors(prior_probabilities, names)
    log_z = np.array([results[n].log_evidence for n in names])
    se = np.array([results[n].standard_error for n in names])
    log_prior = np.log([priors[n] for n in names]) - math.log(sum(priors.values()))
    best = int(np.argmax(log_z))
    delta = log_z - log_z[best]
    # The best row's difference is zero by definition; the others carry both estimates' errors.
    delta_se = np.where(np.arange(len(names)) == best, 0.0, np.sqrt(se**2 + se[best] ** 2))
    unnormalised = log_prior + log_z
    probability = np.exp(unnormalised - np.logaddexp.reduce(unnormalised))
    bound = np.array([results[n].is_bound for n in names])
    mixed = bound.any() and not bound.all()
    table = pd.DataFrame(
        {
            "model": names,
            "method": [results[n].method for n in names],
            "log_evidence": log_z,
            "standard_error": se,
            "delta": delta,
            "delta_se": delta_se,
            "bayes_factor": np.exp(delta),
            "posterior_probability": probability,
            "is_bound": bound,
            "seconds": [results[n].seconds for n in names],
        }
    )
    table["note"] = [
        "lower bound: its difference to an estimate bounds the Bayes factor, it is not one"
        if (mixed and b)
        else ""
        for b in bound
    ]
    if mixed:
        warnings.warn(
            "the table mixes evidence estimates with lower bounds (IWAE); differences involving "
            "a bound are bounds on Bayes factors, not Bayes factors",
            MixedEvidenceWarning,
            stacklevel=2,
        )
    if trees:
        import arviz as az  # here, not at the top: a process that only fits need not load it

        elpd, elpd_se = [], []
        for row, name in enumerate(names):
            if name in trees:
                # ArviZ warns when Pareto k is high; the table says so in the row's note.
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    loo = az.loo(trees[name], pointwise=True, var_name=_trial_variable(trees[name]))
                elpd.append(float(loo.elpd))
                elpd_se.append(float(loo.se))
                k_max = float(np.nanmax(np.asarray(loo.pareto_k)))
                if caught or k_max > 0.7:
                    unreliable = f"PSIS-LOO unreliable (max Pareto k {k_max:.2f})"
                    note = table.loc[row, "note"]
                    table.loc[row, "note"] = f"{note}; {unreliable}" if note else unreliable
            else:
                elpd.append(np.nan)
                elpd_se.append(np.nan)
        table["elpd_loo"], table["elpd_loo_se"] = elpd, elpd_se
    table = table.sort_values("log_evidence", ascending=False, ignore_index=True)
    table.attrs["evidence"] = {n: results[n] for n in names}
    return table


def _trial_variable(tree: xr.DataTree) -> str:
    """The per-trial log likelihood of a run (runs written before 2026-12-05 hold only it)."""
    names = list(tree["log_likelihood"].data_vars)
    return next((n for n in names if n.endswith("_trial")), names[0])
