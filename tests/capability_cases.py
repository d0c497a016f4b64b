"""Families x latent-path handling x inference method: each cell run on a tiny recording.

Shared by tests/test_capabilities.py (every cell works or is refused with its reason, as
EXPECTED says) and tests/benchmarks/capability_table.py (which writes the table in
docs/capabilities.md from the same runs).
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import numpy as np
import xarray as xr

from probdyn import ConfigError, PriorError, fixed_points, prior_predictive
from probdyn.capabilities import require_deterministic_density
from probdyn.inference import DiagnosticWarning, log_evidence, nuts, svi
from probdyn.inference.density import bind
from probdyn.model import MARGINALS
from probdyn.models import HMM, LDS, NODE, SDERNN, FacRNN, RNNEmulator, SeqVAE

#: One small member of each family and observation model (the handling is varied per row).
VARIANTS = {
    "LDS gaussian": LDS(latent_dim=2),
    "LDS poisson": LDS(latent_dim=2, observation="poisson"),
    "SDERNN poisson": SDERNN(num_units=3, rank=2, observation="poisson", substeps=2),
    "SDERNN latent": SDERNN(num_units=2, observation="latent"),
    "FacRNN gaussian": FacRNN(num_neurons=3, num_groups=2, group_rank=1, correlation="block"),
    "FacRNN gaussian relu": FacRNN(
        num_neurons=3, num_groups=2, group_rank=1, decoder="relu", correlation=None
    ),
    "FacRNN poisson": FacRNN(
        num_neurons=3, num_groups=2, group_rank=1, observation="poisson", correlation="prior"
    ),
    "HMM poisson": HMM(num_states=2, observation="poisson"),
    "RNNEmulator": RNNEmulator(hidden=3, noise_dim=2, num_symbols=3, encoder_hidden=4),
    "NODE": NODE(latent_dim=2, num_neurons=3, hidden=4, encoder_hidden=4),
    "SeqVAE": SeqVAE(num_neurons=3, generator=4, factors=2, encoder_hidden=4),
}
METHODS = ("svi", "nuts", "smc evidence", "particle likelihood", "fixed points")

#: What each (variant, handling) row gives per method: "works", or a phrase of the refusal.
FILTERED = "deterministic log density"
NO_FILTER = "cannot use marginal='particle'"
EXPECTED = {
    ("LDS gaussian", "exact"): ("works",) * 5,
    ("LDS gaussian", "sample"): ("works",) * 5,
    ("LDS gaussian", "particle"): ("works", FILTERED, FILTERED, "works", "works"),
    ("LDS poisson", "sample"): ("works",) * 5,
    ("LDS poisson", "particle"): ("works", FILTERED, FILTERED, "works", "works"),
    ("SDERNN poisson", "sample"): ("works",) * 5,
    ("SDERNN poisson", "particle"): ("works", FILTERED, FILTERED, "works", "works"),
    ("SDERNN latent", "observed"): ("works", "works", "works", NO_FILTER, "works"),
    ("FacRNN gaussian", "exact"): ("works", "works", "works", NO_FILTER, "works"),
    ("FacRNN gaussian relu", "sample"): ("works", "works", "works", NO_FILTER, "works"),
    ("FacRNN poisson", "sample"): ("works",) * 5,
    ("FacRNN poisson", "particle"): ("works", FILTERED, FILTERED, "works", "works"),
    ("HMM poisson", "forward"): ("works", "works", "works", NO_FILTER, "no vector field"),
    ("RNNEmulator", "sample"): ("works",) * 5,
    ("RNNEmulator", "particle"): ("works", FILTERED, FILTERED, "works", "works"),
    ("NODE", "sample"): ("works", "works", "works", NO_FILTER, "works"),
    ("SeqVAE", "sample"): ("works", "works", "works", NO_FILTER, "works"),
}


def rows():
    """(variant name, handling, model or None, refusal reason or None) for every handling."""
    for name, model in VARIANTS.items():
        for marginal, reason in model.marginals().items():
            built = dataclasses.replace(model, marginal=marginal) if reason is None else None
            yield name, marginal, built, reason


def recording(model) -> xr.Dataset:
    """Three trials of six bins of modest values (symbols, counts or values): the cells test
    that each method runs through each handling, not what it finds."""
    rng = np.random.default_rng(0)
    shape = (3, 6, _emission_dim(model))
    if model.observation == "categorical":
        symbols = rng.integers(0, model.num_symbols, shape[:2])
        ds = xr.Dataset({"symbols": (("trial", "time"), symbols)}, attrs={"dt": 0.1})
        return ds.assign_coords(symbol=np.arange(model.num_symbols))
    if model.observation == "poisson":
        return xr.Dataset(
            {"spikes": (("trial", "time", "neuron"), rng.poisson(1.0, shape))}, attrs={"dt": 0.1}
        )
    return xr.Dataset(
        {"y": (("trial", "time", "neuron"), rng.normal(0.0, 1.0, shape))}, attrs={"dt": 0.1}
    )


def _emission_dim(model) -> int:
    if isinstance(model, RNNEmulator):
        return model.num_symbols
    if isinstance(model, SDERNN) and model.observation == "latent":
        return model.latent_dim
    return getattr(model, "num_neurons", None) or 3


class PriorDraws:
    """Two prior draws as a posterior (the fixed-point and filter cells need parameters)."""

    def __init__(self, model, ds):
        prior = dataclasses.replace(model, marginal="sample") if model.marginal == "particle" else model
        sites = set(model.default_priors(_emission_dim(model)))
        draws = prior_predictive(prior, seed=1, num_samples=2, data=ds)
        self._draws = {k: v for k, v in draws.items() if k in sites}

    def draws(self, num_draws=None, *, seed=0):
        return self._draws

    def to_arviz(self):
        raise NotImplementedError


def run(model, method: str, ds: xr.Dataset, *, full_smc: bool = True) -> str:
    """Run one cell: "works", or the refusal's message (a ConfigError or PriorError).

    ``full_smc=False`` checks, for the SMC column, what tempered SMC reads of a model (the
    refusal of a filtered path, prior draws of every free site, the tempered log density and
    its gradient at every particle) instead of compiling the whole sampler (tens of seconds
    per family on 2 cores); the sampler itself runs end to end in tests/test_evidence.py.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DiagnosticWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            if method == "smc evidence" and not full_smc:
                _smc_contract(model, ds)
            else:
                _run(model, method, ds)
    except (ConfigError, PriorError) as refusal:
        return str(refusal)
    return "works"


def _smc_contract(model, ds: xr.Dataset) -> None:
    require_deterministic_density(model, "log_evidence(method='smc')")
    density = bind(model, model.as_data(ds))
    particles = density.sample_prior(jax.random.key(0), 8)
    prior, likelihood = jax.vmap(density.log_prior_and_likelihood)(particles)
    def tempered_log_density(z):
        log_prior, log_likelihood = density.log_prior_and_likelihood(z)
        return log_prior + 0.5 * log_likelihood

    tempered = jax.vmap(jax.grad(tempered_log_density))
    assert np.all(np.isfinite(prior)) and np.all(np.isfinite(likelihood))
    assert np.all(np.isfinite(tempered(particles)))


def _run(model, method: str, ds: xr.Dataset) -> None:
    if method == "svi":
        fit = svi(model, ds, num_steps=3, seed=0, progress=False)
        assert np.all(np.isfinite(fit.losses))
    elif method == "nuts":
        result = nuts(model, ds, num_warmup=3, num_samples=3, num_chains=1, seed=0, progress=False)
        assert all(np.all(np.isfinite(v)) for v in result.parameters().values())
    elif method == "smc evidence":
        evidence = log_evidence(
            model,
            ds,
            method="smc",
            seed=0,
            num_particles=16,
            num_repeats=2,
            num_mcmc_steps=1,
            num_integration_steps=2,
        )
        assert np.isfinite(evidence.log_evidence)
    elif method == "particle likelihood":
        if not hasattr(model, "particle_log_likelihood"):
            raise ConfigError(
                f"{type(model).__name__} cannot use marginal='particle': "
                f"{model.marginals()['particle']}"
            )
        draw = {k: v[0] for k, v in PriorDraws(model, ds).draws().items()}
        estimate, _ = model.particle_log_likelihood(draw, ds, num_particles=8, num_repeats=2)
        assert estimate.shape == (ds.sizes["trial"],) and not np.any(np.isnan(estimate))
    elif method == "fixed points":
        found = fixed_points(model, PriorDraws(model, ds), num_starts=2, max_steps=20)
        assert found.dataset.sizes["draw"] == 2
    else:
        raise ValueError(method)


def table() -> list[tuple[str, str, list[str]]]:
    """Every row with each method's outcome (the refusal's reason spans a refused handling)."""
    out = []
    for name, marginal, model, reason in rows():
        if model is None:
            out.append((name, marginal, [f"refused: {reason}"] * len(METHODS)))
            continue
        ds = recording(model)
        jax.clear_caches()
        out.append((name, marginal, [run(model, method, ds) for method in METHODS]))
    return out


__all__ = ["EXPECTED", "MARGINALS", "METHODS", "VARIANTS", "recording", "rows", "run", "table"]
