r"""Stochastic variational inference for any probdyn model.

Maximises the ELBO :math:`\mathbb{E}_q[\log p(y, \theta) - \log q(\theta)]` with an optax
optimiser. Trials can be subsampled (``batch_size``): the model's trial plate then scales the
likelihood by :math:`N/B`, which keeps the ELBO estimate unbiased. Steps run in jit-compiled
chunks of ``checkpoint_every`` steps; after each chunk the state can be written to a checkpoint
file, and a run started again with the same arguments resumes from it and ends with exactly the
parameters of an uninterrupted run (the chunks are the same computations either way).

The ELBO is :class:`OrderedTraceELBO`: NumPyro's ``Trace_ELBO`` estimator with the site terms
summed in the order the program runs them, so that the compiled step is the same program in
every process (see its docstring).
"""

from __future__ import annotations

import dataclasses
import functools
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
from numpyro.infer import SVI, autoguide
from numpyro.infer.elbo import ELBO
from numpyro.infer.util import log_density
from numpyro.util import check_model_guide_match
from tqdm.auto import tqdm

from probdyn.errors import ConfigError, MemoryBudgetError
from probdyn.inference.amortised import (
    AMORTISED_GUIDES,
    AmortisedGuide,
    amortised_guide,
    refine_local,
)
from probdyn.inference.arviz import to_datatree
from probdyn.inference.density import Density, bind, fingerprint
from probdyn.model import Model, ModelData
from probdyn.runtime import devices, memory
from probdyn.runtime.checkpoint import read_checkpoint, write_checkpoint
from probdyn.runtime.compilation import run_once

GUIDES = {
    "normal": autoguide.AutoNormal,
    "mvn": autoguide.AutoMultivariateNormal,
    "delta": autoguide.AutoDelta,
    "laplace": autoguide.AutoLaplaceApproximation,
}
#: "auto" picks a full-covariance Gaussian up to this many free dimensions, AutoNormal above.
MVN_MAX_DIM = 400


class OrderedTraceELBO(ELBO):
    r"""The ELBO :math:`\frac1S\sum_s \log p(y, \theta_s) - \log q(\theta_s)`, summed in order.

    The same estimator as NumPyro's ``Trace_ELBO`` (``num_particles`` draws
    :math:`\theta_s \sim q`, the model replayed against each). NumPyro 0.22 collects the site
    terms through a Python ``set``, whose order follows string hashing and so changes from one
    process to the next; the compiled step then differs between processes in the order of its
    additions, which defeats the persistent compilation cache and changes the last bits of the
    result. Here the model's and the guide's log densities are each summed in trace order.
    Guides with mutable state (``numpyro.mutable``) are not supported.
    """

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        """``{"loss": -ELBO, "mutable_state": None}``."""
        return self._estimate(rng_key, param_map, model, guide, args, args, kwargs)

    def _estimate(self, rng_key, param_map, model, guide, model_args, guide_args, kwargs):
        """The estimator with the model and the guide each run on its own arguments."""

        def elbo(key):
            model_key, guide_key = jax.random.split(key)
            seeded_guide = numpyro.handlers.seed(guide, guide_key)
            guide_density, guide_trace = log_density(seeded_guide, guide_args, kwargs, param_map)
            if any(site["type"] == "mutable" for site in guide_trace.values()):
                raise ConfigError("the guide has mutable state, which svi does not carry")
            replayed = numpyro.handlers.replay(numpyro.handlers.seed(model, model_key), guide_trace)
            model_density, model_trace = log_density(replayed, model_args, kwargs, param_map)
            check_model_guide_match(model_trace, guide_trace)
            return model_density - guide_density

        if self.num_particles == 1:
            return {"loss": -elbo(rng_key), "mutable_state": None}
        keys = jax.random.split(rng_key, self.num_particles)
        return {"loss": -jnp.mean(self.vectorize_particles_fn(elbo, keys)), "mutable_state": None}


class _ScaleLatent(numpyro.primitives.Messenger):
    """Multiply the log density of every unobserved sample site by ``factor``."""

    def __init__(self, fn, factor):
        self.factor = factor
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.factor if msg["scale"] is None else msg["scale"] * self.factor


class AutoencoderELBO(OrderedTraceELBO):
    r"""The ELBO under the training regularisers of sequential autoencoders.

    For a model fitted with an amortised guide (its encoder reads the neurons
    ``model.encoder_neurons`` of the bins ``model.encoder_bins``, by default all), at each step:

    - *coordinated dropout* (``coordinated_dropout`` = :math:`p`; Keshtkaran & Pandarinath
      2019): every observed bin (trial, time, neuron) the encoder could read is hidden from it
      with probability :math:`p`, and the likelihood counts only those hidden bins, each with
      weight :math:`1/p` (an unbiased estimate of the full likelihood), and every bin the
      encoder never reads (other neurons, later bins) with weight 1. A network cannot then
      lower its loss by passing a spike from the encoder's input to the same bin's rate: it
      must predict each bin from the others, the co-smoothing task itself. The weights reach
      programs that emit through :func:`probdyn.model.observe`;
    - *encoder dropout* (``encoder_dropout`` = :math:`q`): a further fraction :math:`q` of the
      bins the encoder would read is hidden from it but kept in the likelihood;
    - *warm-up* (``warmup`` = :math:`W` steps): the log densities of every latent and parameter
      site, in the model (prior) and in the guide, are scaled by
      :math:`\beta_i = \min(1, (i + 1)/W)` at step :math:`i`: the KL terms and the weights'
      priors (the L2 penalties) come in gradually, as LFADS schedules them.

    After the warm-up and with both dropouts at 0 this is :class:`OrderedTraceELBO`. The loss
    trace of a run records the objective as trained (with :math:`\beta_i` and the hidden bins).
    """

    def __init__(
        self,
        model: Model,
        *,
        coordinated_dropout: float = 0.0,
        encoder_dropout: float = 0.0,
        warmup: int = 0,
        num_particles: int = 1,
    ):
        for name, value in (
            ("coordinated_dropout", coordinated_dropout),
            ("encoder_dropout", encoder_dropout),
        ):
            if not (isinstance(value, int | float) and 0 <= value < 1):
                raise ConfigError(f"{name} = {value!r}; expected a fraction in [0, 1)")
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise ConfigError(f"warmup = {warmup!r}; expected a number of steps >= 0")
        super().__init__(num_particles)
        self.model = model
        self.coordinated_dropout = float(coordinated_dropout)
        self.encoder_dropout = float(encoder_dropout)
        self.warmup = warmup

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        """The estimate at step ``kwargs["step"]``, the model and guide seeing their own bins."""
        step = kwargs.pop("step")
        rng_key, key_hide, key_drop = jax.random.split(rng_key, 3)
        data, *rest = args
        observed = jnp.ones(data.observations.shape, bool) if data.mask is None else data.mask
        readable = self._readable(data)
        hidden = readable & jax.random.bernoulli(key_hide, self.coordinated_dropout, readable.shape)
        dropped = readable & jax.random.bernoulli(key_drop, self.encoder_dropout, readable.shape)
        guide_data = dataclasses.replace(data, mask=observed & ~hidden & ~dropped)
        if self.coordinated_dropout:
            # Each readable bin is counted with probability p and weight 1/p: in expectation
            # the full log likelihood, so the objective stays an unbiased ELBO estimate.
            weights = jnp.where(readable, hidden / self.coordinated_dropout, 1.0)
            model_data = dataclasses.replace(
                data, mask=observed & (hidden | ~readable), weights=weights
            )
        else:
            model_data = data
        if self.warmup:
            beta = jnp.minimum(1.0, (step + 1.0) / self.warmup)
            model, guide = _ScaleLatent(model, beta), _ScaleLatent(guide, beta)
        return self._estimate(
            rng_key, param_map, model, guide, (model_data, *rest), (guide_data, *rest), kwargs
        )

    def _readable(self, data: ModelData) -> Array:
        """Boolean (trial, time, neuron): the bins the model's encoder reads."""
        shape = data.observations.shape
        readable = np.zeros(shape[1:], bool)
        neurons = getattr(self.model, "encoder_neurons", None)
        bins = getattr(self.model, "encoder_bins", None)
        readable[slice(bins), list(neurons) if neurons is not None else slice(None)] = True
        return jnp.broadcast_to(jnp.asarray(readable), shape)


def make_guide(
    guide,
    model: Model,
    density: Density,
    *,
    subsampled: bool = False,
    init_values: Mapping[str, Array] | None = None,
    init_scale: float | None = None,
):
    """An autoguide by name on the bound program, or the user's guide callable unchanged.

    Names: ``"auto"`` (``"mvn"`` up to :data:`MVN_MAX_DIM` free dimensions without
    subsampling, else ``"normal"``), ``"normal"``, ``"mvn"``, ``"delta"``, ``"laplace"``. The
    guide's trial plate is the model's, so minibatches subsample both alike.
    """
    if callable(guide) and not isinstance(guide, str):
        return guide
    if guide == "auto":
        guide = "mvn" if density.dim <= MVN_MAX_DIM and not subsampled else "normal"
    if guide not in GUIDES and guide not in AMORTISED_GUIDES:
        raise ConfigError(
            f"guide={guide!r}; expected 'auto', one of {sorted(GUIDES | AMORTISED_GUIDES)} or a "
            "callable"
        )
    values = dict(init_values) if init_values else _prior_medians(density)
    options = {"init_loc_fn": functools.partial(_start_at, values=values)}
    if init_scale is not None and guide in ("normal", "mvn", "amortised"):
        options["init_scale"] = init_scale
    if guide in AMORTISED_GUIDES:
        return amortised_guide(guide, model, density.program, **options)
    if guide in ("normal", "delta"):
        options["create_plates"] = model.trial_plate
    elif subsampled:
        raise ConfigError(f"guide={guide!r} cannot subsample trials; use 'normal' or 'delta'")
    return GUIDES[guide](density.program, **options)


def _prior_medians(density: Density, num_samples: int = 15) -> dict[str, Array]:
    """Per-site medians of joint prior draws: where the guides start by default.

    Like NumPyro's ``init_to_median``, but the draws come from one compiled, vectorised run of
    the program instead of eager per-site sampling, which took seconds per model.
    """
    unobserved = dataclasses.replace(density.data, observations=None, mask=None)
    predictive = numpyro.infer.Predictive(
        density.program, num_samples=num_samples, return_sites=list(density.shapes)
    )
    draws = jax.jit(predictive)(jax.random.key(0), unobserved)
    return {name: jnp.median(value, axis=0) for name, value in draws.items()}


def _start_at(site=None, values: Mapping[str, Array] | None = None):
    """An init strategy: the given value where its shape fits the site, else the site's median.

    Under trial subsampling a local site has the batch's shape, not the full data's, and falls
    back to NumPyro's ``init_to_median``. Used as ``functools.partial(_start_at, values=...)``.
    """
    if site is None:
        return functools.partial(_start_at, values=values)
    value = (values or {}).get(site["name"])
    if (
        site["type"] == "sample"
        and not site["is_observed"]
        and value is not None
        and jnp.shape(value) == tuple(site["fn"].shape())
    ):
        return value
    return numpyro.infer.init_to_median(site, num_samples=15)


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


def _curriculum(data: ModelData, curriculum):
    """``step -> data`` with only the bins the curriculum shows at that step observed."""
    if curriculum is None:
        return lambda step: data
    pair = tuple(curriculum) if isinstance(curriculum, tuple | list) else ()
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair
    ):
        raise ConfigError(
            f"curriculum = {curriculum!r}; expected (bins, every), two positive integers"
        )
    bins, every = pair
    observed = data.observations
    # Each stage's mask is made on the host and placed like the data, once per stage.
    mask = np.ones(observed.shape, bool) if data.mask is None else devices.to_host(data.mask)
    shape = (1, data.num_timesteps) + (1,) * (observed.ndim - 2)
    time = np.arange(data.num_timesteps).reshape(shape)

    @functools.cache
    def stage(visible: int) -> ModelData:
        placed = devices.place(mask & (time < visible), observed.sharding)
        return dataclasses.replace(data, mask=placed)

    return lambda step: stage(min(data.num_timesteps, bins * (1 + step // every)))


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
    local = _curriculum(prepared, curriculum)
    staged = _curriculum(devices.shard(prepared, mesh), curriculum) if sharded else local
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
    saved = read_checkpoint(path, signature)
    if saved is not None:
        state = saved["state"]
        step, losses, resumed_from = saved["step"], list(saved["losses"]), saved["step"]
    if sharded:
        state = devices.shard_batch(devices.to_host(state), mesh, prepared.num_trials)
    else:
        state = jax.device_put(state)
    lengths = _chunk_lengths(step, num_steps, checkpoint_every, curriculum)
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


def _chunk_lengths(start: int, num_steps: int, every: int, curriculum) -> list[int]:
    """Steps per compiled chunk from ``start``: at most ``every``, cut at curriculum stages."""
    lengths, step = [], start
    while step < num_steps:
        length = min(every, num_steps - step)
        if curriculum is not None:
            length = min(length, curriculum[1] - step % curriculum[1])
        lengths.append(length)
        step += length
    return lengths


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
