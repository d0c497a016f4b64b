r"""Stochastic variational inference for any probdyn model.

Maximises the ELBO :math:`\mathbb{E}_q[\log p(y, \theta) - \log q(\theta)]` with an optax
optimiser. Trials can be subsampled (``batch_size``): the model's trial plate then scales the
likelihood by :math:`N/B`, which keeps the ELBO estimate unbiased. Steps run in jit-compiled
chunks of ``checkpoint_every`` steps; after each chunk the state can be written to a checkpoint
file, and a run started again with the same arguments resumes from it and ends with exactly the
parameters of an uninterrupted run (the chunks are the same computations either way).

The ELBO is :class:`~probdyn.inference.objectives.OrderedTraceELBO`: NumPyro's ``Trace_ELBO``
estimator with the site terms summed in the order the program runs them, so that the compiled step
is the same program in every process (see its docstring).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import xarray as xr
from jax import Array
from numpyro.infer import SVI
from tqdm.auto import tqdm

from probdyn.errors import ConfigError, MemoryBudgetError
from probdyn.inference.amortised import (
    AmortisedGuide,
    refine_local,
)
from probdyn.inference.arviz import to_datatree
from probdyn.inference.curriculum import chunk_lengths, curriculum_schedule
from probdyn.inference.density import Density, bind, fingerprint
from probdyn.inference.guides import make_guide
from probdyn.inference.objectives import AutoencoderELBO, OrderedTraceELBO
from probdyn.model import Model, ModelData
from probdyn.runtime import devices, memory
from probdyn.runtime.checkpoint import read_checkpoint, write_checkpoint
from probdyn.runtime.compilation import run_once


@dataclasses.dataclass
class SVIResult:
    """Outcome of :func:`svi`: guide, its parameters, the loss trace and posterior draws."""

    model: Model
    density: Density
    guide: object
    params: dict
    losses: np.ndarray
    resumed_from: int = 0
    #: (steps, wall seconds) of each compiled chunk this call ran; the first includes compiling.
    chunk_timings: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2)))

    def draws(self, num_draws: int | None = None, *, seed: int = 0) -> dict[str, np.ndarray]:
        """``num_draws`` (default 200) draws from the guide (:class:`probdyn.Posterior`)."""
        return self.sample_posterior(num_draws or 200, seed=seed)

    def sample_posterior(
        self, num_samples: int, *, seed: int, data=None, refine: int = 0
    ) -> dict[str, np.ndarray]:
        """Draws of every parameter (free and fixed) and deterministic site from the guide.

        The Laplace guide draws from its Gaussian at the MAP point (run as a program it would
        give the point itself); every other guide is run as a program. ``data`` (a Dataset or
        ModelData; default: the fitted data) may hold new trials (held-out or evaluation sets)
        when the guide is amortised: its encoder infers their per-trial sites, and ``refine``
        (a number of optimisation steps; 0: none) moves each from the encoder's draw to a
        draw from the Laplace approximation of the trial's own posterior
        (:func:`probdyn.inference.amortised.refine_local`).
        """
        amortised = isinstance(self.guide, AmortisedGuide)
        if refine and not amortised:
            raise ConfigError("refine needs an amortised guide (it refines the encoder's draws)")
        if data is None:
            data = self.density.data
        elif not amortised:
            raise ConfigError(
                "new trials need an amortised guide (guide='amortised' or 'amortised-delta'); "
                "other guides hold per-trial parameters only for the trials they were fitted to"
            )
        else:
            data = self.model.as_data(data)
        key_guide, key_sites = jax.random.split(jax.random.key(seed))
        sites = [*self.density.shapes, *self.density.deterministic]
        site_keys = jax.random.split(key_sites, num_samples)
        if isinstance(self.guide, numpyro.infer.autoguide.AutoLaplaceApproximation):
            latent = self.guide.sample_posterior(
                key_guide, self.params, data, sample_shape=(num_samples,)
            )
            draws = {**_replay(self.density.program, latent, site_keys, sites, data), **latent}
        else:

            def from_guide(key):
                predictive = numpyro.infer.Predictive(
                    self.density.program,
                    guide=self.guide,
                    params=self.params,
                    num_samples=1,
                    return_sites=sites,
                )
                return {name: value[0] for name, value in predictive(key, data).items()}

            draws = memory.map_chunks(
                from_guide,
                jax.random.split(key_guide, num_samples),
                what="posterior draws from the guide",
                unit="draw",
            )
        if refine:
            site = self.model.local_site
            weights = {name: draws[name] for name in self.density.shapes if name != site}
            local = refine_local(
                self.density.program,
                site,
                weights,
                draws[site],
                data,
                num_steps=refine,
                key=jax.random.fold_in(key_sites, 1),
            )
            refined = {**weights, site: local}
            draws = {**_replay(self.density.program, refined, site_keys, sites, data), **refined}
        draws = {name: value for name, value in draws.items() if name in sites}
        for name, value in self.density.fixed.items():
            draws[name] = np.broadcast_to(value, (num_samples, *np.shape(value)))
        return self.model.identify({k: np.asarray(v) for k, v in draws.items()})

    def encode(self, data=None) -> tuple[np.ndarray, np.ndarray]:
        """The amortised guide's Gaussian over each trial's local site: (loc, scale) arrays.

        ``data`` (default: the fitted data) may hold new trials.
        """
        if not isinstance(self.guide, AmortisedGuide):
            raise ConfigError(
                "encode needs an amortised guide (guide='amortised' or 'amortised-delta')"
            )
        data = self.density.data if data is None else self.model.as_data(data)
        guide = numpyro.handlers.substitute(numpyro.handlers.seed(self.guide, 0), self.params)
        fn = numpyro.handlers.trace(guide).get_trace(data)[self.model.local_site]["fn"]
        while isinstance(fn, numpyro.distributions.Independent):
            fn = fn.base_dist
        return np.asarray(fn.loc), np.asarray(fn.scale)

    def to_arviz(
        self, *, num_samples: int = 500, seed: int = 0, predictive: bool = True
    ) -> xr.DataTree:
        """ArviZ DataTree of guide draws (one chain); its ``optimization`` group: the loss trace.

        ``predictive=False`` leaves out the log likelihood and the posterior predictive
        (:func:`~probdyn.inference.arviz.predictive_groups` adds them later).
        """
        draws = self.sample_posterior(num_samples, seed=seed)
        samples = {k: v[None] for k, v in draws.items()}
        tree = to_datatree(
            self.model,
            self.density,
            samples,
            seed=seed + 1,
            attrs={"inference": "svi", "final_loss": float(self.losses[-1])},
            predictive=predictive,
        )
        tree["optimization"] = xr.DataTree(xr.Dataset({"loss": ("step", self.losses)}))
        return tree


def _replay(program, samples: dict, keys, sites: list[str], data) -> dict[str, np.ndarray]:
    """``sites`` of ``program`` run at each draw of ``samples`` (chunked by the memory budget)."""

    def one(item):
        draw, key = item
        predictive = numpyro.infer.Predictive(
            program, posterior_samples=draw, return_sites=sites, batch_ndims=0
        )
        return predictive(key, data)

    return memory.map_chunks(one, (samples, keys), what="posterior draws", unit="draw")


def _run_signature(model, data: ModelData, **settings) -> str:
    return fingerprint({"model": model, "data": data, **settings})


def svi(
    model: Model,
    data,
    *,
    num_steps: int,
    seed: int,
    guide="auto",
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-2,
    batch_size: int | None = None,
    num_particles: int = 1,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 200,
    init: SVIResult | Mapping[str, Array] | None = None,
    init_scale: float | None = None,
    curriculum: tuple[int, int] | None = None,
    coordinated_dropout: float = 0.0,
    encoder_dropout: float = 0.0,
    warmup: int = 0,
    num_devices: int | None = None,
    progress: bool = True,
) -> SVIResult:
    """Fit a guide to the posterior of ``model`` given ``data`` (a Dataset or ModelData).

    Parameters
    ----------
    guide
        ``"auto"`` (full-covariance Gaussian up to 400 free dims, else mean-field), ``"normal"``,
        ``"mvn"``, ``"delta"`` (MAP), ``"laplace"``, ``"amortised"`` / ``"amortised-delta"``
        (Gaussian / MAP weights and the model's encoder over its per-trial site, see
        :mod:`probdyn.inference.amortised`), or a NumPyro guide callable taking the same
        arguments as the model.
    optimizer
        An optax transformation; default Adam with ``learning_rate``.
    batch_size
        Trials per step (subsampled by the trial plate, likelihood scaled by N/B); None: all.
    checkpoint
        File to write the state to every ``checkpoint_every`` steps and to resume from.
    init
        Where the guide starts: an earlier :class:`SVIResult` (its guide's median, e.g. a MAP
        fit with ``guide="delta"``) or a mapping from site to value. Networks fit best as MAP
        first, then a Gaussian guide started there with a small ``init_scale``.
    init_scale
        Initial standard deviation of the ``"normal"``/``"mvn"`` guides (NumPyro's default 0.1).
    curriculum
        ``(bins, every)``: during steps :math:`[k E, (k + 1) E)` only the first
        :math:`(k + 1) P` time bins are observed (the rest are masked as missing), so long
        rollouts of chaotic dynamics are learnt from short ones up (Sedler et al. 2023 use
        P = 5 bins, E = 150 epochs for the NODE). None: every bin from the start.
    coordinated_dropout, encoder_dropout, warmup
        Training regularisers of amortised guides (see :class:`AutoencoderELBO`): the fraction
        of the encoder's input bins hidden from it and scored alone, a further fraction hidden
        but scored, and the steps over which the KL terms and weight priors ramp up to their
        full weight. All 0 (default): the plain ELBO.
    num_devices
        Devices to split the trials over (data parallel: each device holds a block of trials,
        the guide's parameters are replicated and their gradients summed across devices by
        XLA). Default: every visible device, in every process joined by
        :func:`probdyn.runtime.distributed.initialize`; the count actually used is the largest
        that divides the number of trials. One device: no sharding.

    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ConfigError(f"num_steps = {num_steps!r}; expected a positive integer")
    prepared = model.as_data(data)
    if batch_size is not None and not 0 < batch_size <= prepared.num_trials:
        raise ConfigError(f"batch_size = {batch_size!r}; expected 1..{prepared.num_trials} trials")
    mesh = devices.mesh(prepared.num_trials, num_devices)
    sharded = mesh.size > 1 or jax.process_count() > 1
    local = curriculum_schedule(prepared, curriculum)
    staged = curriculum_schedule(devices.shard(prepared, mesh), curriculum) if sharded else local
    # Setting up runs each program once (the model op by op, the guide's initial check):
    # compiled unoptimised. The loop below is compiled with full optimisation.
    with run_once():
        density = bind(model, prepared)
        if isinstance(init, SVIResult):
            init = init.guide.median(init.params)
        init = {name: jnp.asarray(value) for name, value in (init or {}).items()}
        unknown = sorted(set(init) - set(density.shapes))
        if unknown:
            raise ConfigError(
                f"init has unknown sites {unknown}; free sites: {sorted(density.shapes)}"
            )
        guide_fn = make_guide(
            guide,
            model,
            density,
            subsampled=batch_size is not None,
            init_values=init,
            init_scale=init_scale,
        )
        optimizer = optimizer or optax.adam(learning_rate)
        regularised = bool(coordinated_dropout or encoder_dropout or warmup)
        if regularised and not isinstance(guide_fn, AmortisedGuide):
            raise ConfigError(
                "coordinated_dropout, encoder_dropout and warmup train an encoder: use "
                "guide='amortised' or 'amortised-delta'"
            )
        elbo = (
            AutoencoderELBO(
                model,
                coordinated_dropout=coordinated_dropout,
                encoder_dropout=encoder_dropout,
                warmup=warmup,
                num_particles=num_particles,
            )
            if regularised
            else OrderedTraceELBO(num_particles)
        )
        engine = SVI(density.program, guide_fn, optimizer, elbo)
        # Initialised on this process's own copy of the data: NumPyro's init runs op by op,
        # and on arrays split across processes each op would be a collective program.
        state = engine.init(jax.random.PRNGKey(seed), local(0), batch_size=batch_size)
    run_chunk = jax.jit(_scan_steps(engine, batch_size, regularised), static_argnums=2)

    signature = _run_signature(
        model,
        prepared,
        num_steps=num_steps,
        seed=seed,
        guide=guide if isinstance(guide, str) else type(guide).__qualname__,
        # Structure of the optimiser state (its class names and shapes): stable across processes.
        optimizer=str(jax.tree_util.tree_structure(state.optim_state)),
        learning_rate=learning_rate,
        batch_size=batch_size,
        num_particles=num_particles,
        checkpoint_every=checkpoint_every,
        curriculum=curriculum,
        regularisers=(coordinated_dropout, encoder_dropout, warmup),
        init=init,
        init_scale=init_scale,
    )
    step, losses, resumed_from = 0, [], 0
    path = Path(checkpoint) if checkpoint is not None else None
    saved = read_checkpoint(path, signature, template=state)
    if saved is not None:
        state = saved["state"]
        step, losses, resumed_from = saved["step"], list(saved["losses"]), saved["step"]
    if sharded:
        state = devices.shard_batch(devices.to_host(state), mesh, prepared.num_trials)
    else:
        state = jax.device_put(state)
    lengths = chunk_lengths(step, num_steps, checkpoint_every, curriculum)
    # Compiled now: the loop only runs, and XLA's size of a step is checked against the budget.
    compiled = {
        length: run_chunk.lower(state, staged(step), length).compile()
        for length in sorted(set(lengths))
    }
    if compiled:
        _require_step_memory(compiled[max(compiled)], prepared.num_trials, batch_size)
    bar = tqdm(total=num_steps, initial=step, disable=not progress, desc="svi", unit="step")
    timings = []
    with devices.hot_loop():
        for length in lengths:
            start = time.perf_counter()
            state, chunk_losses = compiled[length](state, staged(step))
            losses.extend(devices.to_host(chunk_losses).tolist())  # waits for the chunk
            timings.append((length, time.perf_counter() - start))
            step += length
            bar.update(length)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
            if path is not None:
                write_checkpoint(path, signature, step, losses, devices.to_host(state))
    bar.close()
    losses = np.asarray(losses)
    if not np.isfinite(losses[-1]):
        raise FloatingPointError(
            "the ELBO became non-finite; lower the learning rate or check the priors and data"
        )
    params = jax.tree_util.tree_map(jnp.asarray, devices.to_host(engine.get_params(state)))
    timings = np.asarray(timings, float).reshape(-1, 2)
    return SVIResult(model, density, guide_fn, params, losses, resumed_from, timings)


def _require_step_memory(compiled, num_trials: int, batch_size: int | None) -> None:
    """Refuse, before the first step, a step whose buffers (XLA's count) pass the memory limit.

    An SVI step holds the whole data set (or a minibatch of ``batch_size`` trials) at once; the
    way to a smaller step is a smaller minibatch, which the message suggests.
    """
    analysis = compiled.memory_analysis()
    if analysis is None:  # not every backend reports it
        return
    need = (
        analysis.temp_size_in_bytes
        + analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        - analysis.alias_size_in_bytes
    )
    free = memory.settings().resolved_limit() - memory.resident_bytes()
    if need > free:
        trials = batch_size or num_trials
        fits = max(1, int(trials * free / need))
        raise MemoryBudgetError(
            f"svi: one step over {trials} trials needs {memory.format_size(need)} (XLA's count) "
            f"but {memory.format_size(max(free, 0))} is free under the "
            f"{memory.format_size(memory.settings().resolved_limit())} memory limit; use "
            f"batch_size = {fits} or fewer trials, or raise --memory-limit"
        )


def _scan_steps(engine: SVI, batch_size: int | None, pass_step: bool = False):
    """``(state, data, length) -> (state, losses)``: ``length`` SVI steps in one ``lax.scan``.

    ``pass_step``: the loss reads the step number (``step=``, :class:`AutoencoderELBO`).
    """

    def run(state, data, length):
        def step(state, _):
            extra = {"step": state.optim_state[0]} if pass_step else {}
            return engine.update(state, data, batch_size=batch_size, **extra)

        return jax.lax.scan(step, state, None, length=length)

    return run
