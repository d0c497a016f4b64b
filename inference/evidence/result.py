"""The result of every evidence estimator; evidence of held-out sequences from likelihoods."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from probdyn.errors import ConfigError
from probdyn.inference.density import Density


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


def ess_fraction(log_weights):
    r"""Effective sample size of importance weights over their number (traceable).

    :math:`(\sum_i w_i)^2 / (N \sum_i w_i^2)`, from :math:`\log w_i` (..., N).
    """
    n = log_weights.shape[-1]
    doubled = 2 * jax.nn.logsumexp(log_weights, axis=-1)
    return jnp.exp(doubled - jax.nn.logsumexp(2 * log_weights, axis=-1)) / n


def log_mean_and_se(log_values: np.ndarray) -> tuple[float, float]:
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
        estimate, se = log_mean_and_se(values.sum(axis=1))
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


def without_free_parameters(density: Density) -> Evidence:
    """Every method's answer when nothing is free: the exact log likelihood itself."""
    value = float(density.log_likelihood(jnp.zeros(0)))
    return Evidence(value, 0.0, "exact", False, "none (closed form)", 0.0, 1)
