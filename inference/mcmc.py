"""NUTS over any probdyn model, with its diagnostics surfaced.

Chains run vectorised on one device (``chain_method="vectorized"``), one after another
(``"sequential"``), or split over every visible device (``"parallel"``: a block of chains per
device, each block vectorised, through ``shard_map`` on :func:`probdyn.runtime.devices.mesh`;
no per-step progress bar then). The compiled sampler is kept for the next call with the same
model, fixed values, data shapes and settings (up to :data:`CACHED_SAMPLERS` of them), so
sampling many recordings of one design compiles once; draws are the same as from a fresh
sampler. Divergences, R-hat and bulk ESS are computed for every free parameter and
reported by :meth:`MCMCResult.summary`; when they are bad (any divergence, R-hat > 1.01, or bulk
ESS below 100 per chain) a :class:`DiagnosticWarning` names them.
"""

from __future__ import annotations

import dataclasses
import warnings

import arviz_base
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr
from numpyro.infer import MCMC, NUTS

from probdyn.capabilities import require_deterministic_density
from probdyn.errors import ConfigError
from probdyn.inference.arviz import to_datatree
from probdyn.inference.density import Density, bind, fingerprint
from probdyn.inference.reference import guide_reference
from probdyn.model import Model
from probdyn.runtime import devices

RHAT_LIMIT = 1.01
ESS_PER_CHAIN = 100
#: Compiled samplers kept for reuse (least recently used dropped first).
CACHED_SAMPLERS = 4
_samplers: dict[str, MCMC] = {}


class DiagnosticWarning(UserWarning):
    """Sampler diagnostics say the draws may not represent the posterior."""


@dataclasses.dataclass
class MCMCResult:
    """Outcome of :func:`nuts`: draws with (chain, draw) axes and their diagnostics."""

    model: Model
    density: Density
    samples: dict[str, np.ndarray]
    divergences: np.ndarray
    sample_stats: dict[str, np.ndarray]
    seed: int

    @property
    def num_chains(self) -> int:
        """Number of chains."""
        return self.divergences.shape[0]

    def parameters(self) -> dict[str, np.ndarray]:
        """Draws of every parameter and deterministic site, chains concatenated."""
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.samples.items()}

    def draws(self, num_draws: int | None = None, *, seed: int = 0) -> dict[str, np.ndarray]:
        """Every draw (None), or ``num_draws`` evenly spaced over the chains' draws.

        The :class:`probdyn.Posterior` protocol; thinning is deterministic, so ``seed`` is
        not used.
        """
        draws = self.parameters()
        total = self.divergences.size
        if num_draws is None or num_draws >= total:
            return draws
        keep = np.linspace(0, total - 1, num_draws).round().astype(int)
        return {name: value[keep] for name, value in draws.items()}

    def summary(self) -> pd.DataFrame:
        """ArviZ summary (mean, sd, HDI, R-hat, ESS) of the free parameters."""
        import arviz as az  # here, not at the top: a process that only fits need not load it

        free = {name: self.samples[name] for name in self.density.shapes}
        return az.summary(arviz_base.from_dict({"posterior": free}, dims=self.model.site_dims))

    def diagnostics(self) -> dict[str, float]:
        """Number of divergences, worst R-hat and smallest bulk ESS over free parameters."""
        table = self.summary()
        # Entries fixed by a parameterisation (the zeros above a triangular factor's diagonal)
        # have no R-hat or ESS; some pandas versions hand those back as text. Left out.
        rhat, ess = (pd.to_numeric(table[c], errors="coerce") for c in ("r_hat", "ess_bulk"))
        return {
            "divergences": int(self.divergences.sum()),
            "max_rhat": float(rhat.max()) if self.num_chains > 1 else float("nan"),
            "min_ess_bulk": float(ess.min()),
        }

    def to_arviz(self, *, predictive: bool = True) -> xr.DataTree:
        """ArviZ DataTree: posterior, sample_stats, log_likelihood, predictive, observed data.

        ``predictive=False`` leaves out the log likelihood and the posterior predictive
        (:func:`~probdyn.inference.arviz.predictive_groups` adds them later).
        """
        return to_datatree(
            self.model,
            self.density,
            self.samples,
            seed=self.seed + 1,
            sample_stats=self.sample_stats,
            attrs={"inference": "nuts"},
            predictive=predictive,
        )

    @classmethod
    def from_datatree(cls, model: Model, data, tree: xr.DataTree, *, seed: int) -> MCMCResult:
        """The result saved in a run's posterior and sample_stats groups (to resume a run)."""
        density = bind(model, model.as_data(data))
        posterior = tree["posterior"].to_dataset()
        samples = {name: posterior[name].values for name in posterior.data_vars}
        stats = tree["sample_stats"].to_dataset()
        sample_stats = {name: stats[name].values for name in stats.data_vars}
        return cls(model, density, samples, sample_stats["diverging"], sample_stats, seed)


def _initial_positions(init, density: Density, num_chains: int, seed: int):
    """Unconstrained starting points, one per chain, drawn from an SVI result's guide."""
    draws = init.sample_posterior(num_chains, seed=seed)
    return jax.vmap(density.unconstrain)({k: draws[k] for k in density.shapes})


def nuts(
    model: Model,
    data,
    *,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 4,
    seed: int,
    init=None,
    chain_method: str = "vectorized",
    dense_mass: bool = False,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    given: dict | None = None,
    adapt_mass_matrix: bool | None = None,
    progress: bool = True,
) -> MCMCResult:
    """Sample the posterior of ``model`` given ``data`` with the No-U-Turn sampler.

    ``init`` may be an :class:`~probdyn.inference.svi.SVIResult`: a warm start. Each chain
    starts from a draw of its guide and the inverse mass matrix is the guide's covariance
    (:func:`~probdyn.inference.reference.guide_reference`; dense with ``dense_mass``), so
    the warm-up only tunes the step size (``adapt_mass_matrix=None`` means False with
    ``init``, True without) and can be short: the chains run side by side, so the step size
    adapted by each costs what one chain's costs. ``given`` conditions on values of other
    sites too, e.g. NUTS over a NODE's weights with its initial states fixed at an amortised
    fit's encoder means (``given={"initial": svi_result.encode()[0]}``): their values travel
    with the draws. A :class:`DiagnosticWarning` is raised when divergences, R-hat or ESS are
    bad; the numbers are in :meth:`MCMCResult.diagnostics` either way.
    """
    if chain_method not in ("vectorized", "parallel", "sequential"):
        raise ConfigError(
            f"chain_method={chain_method!r}; expected 'vectorized', 'parallel' or 'sequential'"
        )
    require_deterministic_density(model, "NUTS")
    prepared = model.as_data(data)
    density = bind(model, prepared, given=given)
    if adapt_mass_matrix is None:
        adapt_mass_matrix = init is None
    inverse_mass = None
    if init is not None:
        reference = guide_reference(init, density, seed=seed + 1, dense=dense_mass)
        covariance = reference.covariance
        inverse_mass = covariance if dense_mass else jnp.diagonal(covariance)
    engine = _sampler(
        model,
        density,
        prepared,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        dense_mass=dense_mass,
        target_accept_prob=target_accept_prob,
        max_tree_depth=max_tree_depth,
        inverse_mass_matrix=inverse_mass,
        adapt_mass_matrix=adapt_mass_matrix,
        progress=progress,
    )
    init_params = None
    if init is not None:
        flat = _initial_positions(init, density, num_chains, seed)
        init_params = jax.vmap(density.unravel)(flat)
        if num_chains == 1:
            init_params = jax.tree_util.tree_map(lambda x: x[0], init_params)
    engine.run(
        jax.random.PRNGKey(seed),
        prepared,
        init_params=init_params,
        extra_fields=tuple(SAMPLE_STATS.values()),
    )
    samples = devices.to_host(engine.get_samples(group_by_chain=True))
    for name, value in density.fixed.items():
        samples[name] = np.broadcast_to(
            np.asarray(value), (num_chains, num_samples, *np.shape(value))
        )
    samples = model.identify(samples)
    extra = devices.to_host(engine.get_extra_fields(group_by_chain=True))
    stats = {name: np.asarray(extra[field]) for name, field in SAMPLE_STATS.items()}
    stats["lp"] = -stats["lp"]  # NumPyro's potential energy is minus the log density
    # The tree depth as ArviZ's NumPyro converter reads it from the leapfrog steps.
    stats["tree_depth"] = np.log2(np.maximum(stats["n_steps"], 1)).astype(int) + 1
    result = MCMCResult(model, density, samples, stats["diverging"], stats, seed)
    _warn_if_bad(result)
    return result


#: sample_stats under ArviZ's names, from NumPyro's extra fields (lp: minus the potential).
SAMPLE_STATS = {
    "lp": "potential_energy",
    "energy": "energy",
    "acceptance_rate": "accept_prob",
    "step_size": "adapt_state.step_size",
    "diverging": "diverging",
    "n_steps": "num_steps",
}


def _sampler(
    model: Model, density: Density, data, *, chain_method: str, progress: bool, **settings
) -> MCMC:
    """A NumPyro sampler for ``density.program``: from the cache, or built and cached.

    The key holds everything the compiled program depends on: the model, the values conditioned
    on, the data's structure and shapes (not its values: they are arguments), the settings and
    the devices. A warm start's inverse mass matrix enters by its shape only: NumPyro reads it
    when a run starts and carries it in the sampler's state, so the next warm start (another
    data set, another guide) sets it on the cached sampler and recompiles nothing.
    """
    num_chains = settings["num_chains"]
    mesh = devices.mesh(num_chains) if chain_method == "parallel" else None
    shapes = jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), data)
    inverse_mass = settings["inverse_mass_matrix"]
    key = fingerprint(
        {
            "model": model,
            "fixed": density.fixed,
            "data": (str(jax.tree_util.tree_structure(data)), jax.tree_util.tree_leaves(shapes)),
            "chain_method": chain_method,
            "devices": None if mesh is None else mesh.devices.tolist(),
            "progress": progress,
            **settings,
            "inverse_mass_matrix": None if inverse_mass is None else jnp.shape(inverse_mass),
        }
    )
    if key in _samplers:
        _samplers[key] = _samplers.pop(key)  # most recently used last
        _samplers[key].sampler._inverse_mass_matrix = inverse_mass  # read by the next init
        return _samplers[key]
    kernel = NUTS(
        density.program,
        dense_mass=settings["dense_mass"],
        target_accept_prob=settings["target_accept_prob"],
        max_tree_depth=settings["max_tree_depth"],
        inverse_mass_matrix=settings["inverse_mass_matrix"],
        adapt_mass_matrix=settings["adapt_mass_matrix"],
    )
    engine = MCMC(
        kernel,
        num_warmup=settings["num_warmup"],
        num_samples=settings["num_samples"],
        num_chains=num_chains,
        chain_method=(lambda fn: devices.map_over_mesh(fn, mesh)) if mesh else chain_method,
        progress_bar=progress and mesh is None,
        jit_model_args=True,
    )
    _samplers[key] = engine
    while len(_samplers) > CACHED_SAMPLERS:
        _samplers.pop(next(iter(_samplers)))
    return engine


def _warn_if_bad(result: MCMCResult) -> None:
    d = result.diagnostics()
    problems = []
    if d["divergences"]:
        problems.append(f"{d['divergences']} divergent transitions")
    if d["max_rhat"] > RHAT_LIMIT:
        problems.append(f"R-hat up to {d['max_rhat']:.3f} (> {RHAT_LIMIT})")
    if d["min_ess_bulk"] < ESS_PER_CHAIN * result.num_chains:
        problems.append(f"bulk ESS down to {d['min_ess_bulk']:.0f} (< {ESS_PER_CHAIN} per chain)")
    if problems:
        warnings.warn("NUTS diagnostics: " + "; ".join(problems), DiagnosticWarning, stacklevel=3)
