"""Inference for any probdyn model: SVI, NUTS, evidence and model comparison.

- :func:`svi` -> :class:`SVIResult` (guides, minibatches, checkpoints that resume exactly);
- :func:`nuts` -> :class:`MCMCResult` (diagnostics surfaced, :class:`DiagnosticWarning`);
- :func:`log_evidence` -> :class:`Evidence` (``"smc"``, ``"iwae"``, ``"bridge"``, ``"laplace"``,
  ``"exact"``); :func:`held_out_evidence` puts fits of any kind on held-out sequences on the
  same scale;
- :func:`fit_sinkhorn` and :func:`fit_particle_filter` -> :class:`PointEstimate` (weights of
  noise-driven sequence generators: matched by Sinkhorn divergence, as Torre et al. train HMM
  emulators, or by the particle filter's likelihood bound); :func:`fit_particle_filter_posterior`
  -> :class:`WeightPosterior` (a mean-field Gaussian over those weights by the filter's bound);
- :func:`match_sde` -> :class:`PointEstimate` (drift-diffusion matching: a network's latent drift
  and diffusion fitted to a given SDE's at its states);
- :func:`compare` -> a table of log evidence, Bayes factors, model probabilities, elpd_loo
  (:func:`comparison_table` builds it from saved evidence).
"""

from probdyn.inference.compare import MixedEvidenceWarning, compare, comparison_table
from probdyn.inference.density import Density, bind
from probdyn.inference.evidence import Evidence, find_mode, held_out_evidence, log_evidence
from probdyn.inference.filtering import (
    WeightPosterior,
    fit_particle_filter,
    fit_particle_filter_posterior,
)
from probdyn.inference.matching import match_sde
from probdyn.inference.mcmc import DiagnosticWarning, MCMCResult, nuts
from probdyn.inference.point_estimate import FitOptions, PointEstimate
from probdyn.inference.sinkhorn import fit_sinkhorn
from probdyn.inference.svi import SVIResult, svi

__all__ = [
    "Density",
    "DiagnosticWarning",
    "Evidence",
    "FitOptions",
    "MCMCResult",
    "MixedEvidenceWarning",
    "PointEstimate",
    "SVIResult",
    "WeightPosterior",
    "bind",
    "compare",
    "comparison_table",
    "find_mode",
    "fit_particle_filter",
    "fit_particle_filter_posterior",
    "fit_sinkhorn",
    "held_out_evidence",
    "log_evidence",
    "match_sde",
    "nuts",
    "svi",
]
