r"""The Neural Latents Benchmark (Pei et al. 2021): co-smoothing, forward prediction, decoding.

A model is trained on the training trials, where held-in and held-out neurons are recorded (and
the 40 bins after each trial, the forward window); evaluation trials come with held-in spikes
only (``eval_spikes_heldin``). From them it predicts the rates of every neuron over the trial
(scored on the held-out ones: co-smoothing, :func:`probdyn.analysis.metrics.co_bps`) and over the
forward window (fp-bps), and the rates are decoded into hand velocity (velocity :math:`R^2`).

- :class:`Settings`, :func:`fit_ensemble`: a small ensemble of :class:`probdyn.models.SeqVAE`
  (a GRU generator, Poisson spikes) fitted by SVI with coordinated dropout, encoder dropout and
  KL warm-up; the encoder reads the held-in neurons of the trial's bins only, so evaluation
  trials are inferred as training trials were and the generator runs on into the forward
  window. Each member resumes from its checkpoint after a kill.
- :class:`Prediction`: rates per bin (trial, time, neuron) averaged over the posterior draws
  of every member, with a per-trial posterior band.
- :func:`smoothing_baseline`, :func:`psth_forward`: the benchmark's smoothing baseline
  (Gaussian-smoothed held-in spikes, a Poisson GLM to each held-out neuron) and a forward
  prediction by the training trials' mean.
- :func:`velocity_r2`: ridge regression from rates to behaviour.
- :func:`cross_validate`: K folds over the training trials, each scored by all of the above
  for the model and for the baseline.
- :func:`write_submission`: rates in the benchmark's layout.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import jax
import numpy as np
import optax
import xarray as xr

from probdyn.data.loaders import load_nlb
from probdyn.errors import ConfigError, DataError


def load_eval_input(path: str | os.PathLike, num_heldout: int, *, bin_size: float = 0.005):
    """Evaluation trials of an NLB file as a Dataset whose held-out neurons are all missing.

    ``spikes`` holds the held-in counts of ``eval_spikes_heldin`` followed by ``num_heldout``
    NaN columns (the ``heldout`` coordinate marks them), the layout of the training data.
    """
    ds = load_nlb(path, split="eval", bin_size=bin_size)
    if bool(ds.heldout.any()):
        raise DataError(
            f"{Path(path).name} holds eval_spikes_heldout; expected held-in spikes only"
        )
    heldin = ds.spikes.values.astype(float)
    missing = np.full((*heldin.shape[:2], num_heldout), np.nan)
    flags = np.r_[np.zeros(heldin.shape[-1], bool), np.ones(num_heldout, bool)]
    return xr.Dataset(
        {"spikes": (("trial", "time", "neuron"), np.concatenate([heldin, missing], axis=-1))},
        coords={
            "trial": ds.trial.values,
            "time": ds.time.values,
            "heldout": ("neuron", flags),
        },
        attrs=dict(ds.attrs),
    )


log = logging.getLogger("probdyn")


@dataclasses.dataclass(frozen=True)
class Settings:
    r"""The model and its training (defaults measured on MC_Maze_Small, docs/nlb.md).

    ``bin_factor`` bins of the file are summed into one model bin (2: 10 ms for the
    benchmark's 5 ms tensors); predicted rates are spread back evenly. ``members`` SeqVAEs
    (seeds ``seed``, ``seed + 1``, ...) are averaged, each over ``num_samples`` posterior draws
    (``refine`` > 0: each trial's initial condition refined that many steps beyond the
    encoder's proposal, see :func:`rate_draws`).
    """

    bin_factor: int = 2
    generator: int = 64
    factors: int = 40
    inputs: int = 0
    encoder_hidden: int = 64
    initial_scale: float = 0.3
    recurrent_scale: float = 2.5
    num_steps: int = 700
    learning_rate: float = 1e-2
    coordinated_dropout: float = 0.3
    encoder_dropout: float = 0.3
    warmup: int = 300
    members: int = 3
    num_samples: int = 20
    refine: int = 0

    def __post_init__(self):
        positive = ("bin_factor", "generator", "factors", "encoder_hidden", "num_steps")
        minimums = {name: 1 for name in (*positive, "members", "num_samples")}
        for name, minimum in (minimums | {"refine": 0, "warmup": 0}).items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"nlb {name} = {value!r}; expected an integer >= {minimum}")


def _pooled(values: np.ndarray, factor: int) -> np.ndarray:
    """(trial, time, k) as (trial, time / factor, factor, k): each coarse bin's file bins."""
    trials, bins, width = values.shape
    return values.reshape(trials, bins // factor, factor, width)


def coarsen(ds: xr.Dataset, factor: int) -> xr.Dataset:
    """Sum the counts of ``factor`` consecutive bins (trial and forward window); ``dt`` grows.

    ``behavior`` is averaged over the same bins. Both windows must hold a whole number of
    coarse bins.
    """
    if factor == 1:
        return ds
    out = {}
    for name, dim in (("spikes", "time"), ("spikes_forward", "forward_time")):
        if name not in ds:
            continue
        if ds.sizes[dim] % factor:
            raise DataError(
                f"{name} has {ds.sizes[dim]} bins along {dim!r}, not a multiple of bin_factor="
                f"{factor}"
            )
        out[name] = (ds[name].dims, _pooled(ds[name].values.astype(float), factor).sum(axis=2))
    coords = {"trial": ds.trial.values, "time": ds.time.values[::factor]}
    if "heldout" in ds.coords:
        coords["heldout"] = ("neuron", ds.heldout.values)
    if "spikes_forward" in ds:
        coords["forward_time"] = ds.forward_time.values[::factor]
    if "behavior" in ds:
        out["behavior"] = (ds.behavior.dims, _pooled(ds.behavior.values, factor).mean(axis=2))
    attrs = dict(ds.attrs) | {"dt": float(ds.attrs["dt"]) * factor}
    return xr.Dataset(out, coords=coords, attrs=attrs)


def with_forward(ds: xr.Dataset, forward_bins: int) -> xr.Dataset:
    """The trial's bins followed by ``forward_bins`` more, as one ``spikes`` variable.

    The extra bins hold ``spikes_forward`` where the data have it, else NaN (missing); NaN
    entries of ``ds`` (held-out neurons of evaluation trials) stay NaN.
    """
    spikes = ds.spikes.values.astype(float)
    if "spikes_forward" in ds and forward_bins:
        forward = ds.spikes_forward.values.astype(float)[:, :forward_bins]
    else:
        forward = np.full((spikes.shape[0], forward_bins, spikes.shape[2]), np.nan)
    values = np.concatenate([spikes, forward], axis=1)
    dt = float(ds.attrs["dt"])
    return xr.Dataset(
        {"spikes": (("trial", "time", "neuron"), values)},
        coords={
            "trial": ds.trial.values,
            "time": float(ds.time.values[0]) + dt * np.arange(values.shape[1]),
            "heldout": ("neuron", ds.heldout.values),
        },
        attrs={"dt": dt},
    )


def build_model(train: xr.Dataset, settings: Settings, observed_bins: int):
    """The :class:`~probdyn.models.SeqVAE` of ``settings`` for (coarse) training data."""
    from probdyn.models import SeqVAE

    if "heldout" not in train.coords or not bool(train.heldout.any()):
        raise DataError("the training data have no held-out neurons (a 'heldout' coordinate)")
    return SeqVAE(
        num_neurons=train.sizes["neuron"],
        generator=settings.generator,
        factors=settings.factors,
        inputs=settings.inputs,
        encoder_hidden=settings.encoder_hidden,
        initial_scale=settings.initial_scale,
        recurrent_scale=settings.recurrent_scale,
        encoder_neurons=tuple(int(i) for i in np.flatnonzero(~train.heldout.values)),
        encoder_bins=observed_bins,
    )


def fit_member(
    sequences: xr.Dataset,
    settings: Settings,
    observed_bins: int,
    *,
    seed: int,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
):
    """Fit one SeqVAE (MAP weights, amortised posteriors of each trial's latents).

    ``sequences``: coarse training trials with their forward window appended
    (:func:`with_forward`); the encoder reads the first ``observed_bins``. Returns
    ``(model, result)``; a ``checkpoint`` file makes a killed fit resume.
    """
    from probdyn.inference import svi

    model = build_model(sequences, settings, observed_bins)
    counts = np.nanmean(sequences.spikes.values, axis=(0, 1))
    start = model.initial_weights(jax.random.key(seed), counts)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        settings.learning_rate,
        min(100, settings.num_steps // 5),
        settings.num_steps,
        settings.learning_rate * 0.05,
    )
    optimizer = optax.adam(schedule)
    result = svi(
        model,
        sequences,
        num_steps=settings.num_steps,
        seed=seed,
        guide="amortised-delta",
        optimizer=optimizer,
        init=start,
        coordinated_dropout=settings.coordinated_dropout,
        encoder_dropout=settings.encoder_dropout,
        warmup=settings.warmup,
        checkpoint=checkpoint,
        checkpoint_every=100,
        progress=progress,
    )
    return model, result


def rate_draws(
    model, result, sequences: xr.Dataset, *, num_samples: int, seed: int, refine: int = 0
) -> np.ndarray:
    """Rates per (coarse) bin, (draw, trial, time, neuron), from the posterior of each trial.

    ``refine``: optimisation steps from the encoder's draw of each trial's initial condition
    up its own posterior, then a Laplace draw (``SVIResult.sample_posterior``).
    """
    draws = result.sample_posterior(num_samples, seed=seed, data=sequences, refine=refine)
    weights = {name: draws[name] for name in model.default_priors(model.num_neurons)}
    rates = jax.vmap(model.emission_mean)(weights, draws["latents"])
    return np.asarray(rates, dtype=np.float32)


@dataclasses.dataclass
class Prediction:
    """Rates per bin of the file (trial, time, neuron): the posterior mean and a 90% band.

    ``members``: each ensemble member's mean, (member, trial, time, neuron).
    """

    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    members: np.ndarray

    def to_dataset(self, heldout: np.ndarray, dt: float) -> xr.Dataset:
        """The prediction as a Dataset (rates per bin; ``heldout`` neuron flags)."""
        dims = ("trial", "time", "neuron")
        return xr.Dataset(
            {
                "rates": (dims, self.mean),
                "rates_lower": (dims, self.lower),
                "rates_upper": (dims, self.upper),
            },
            coords={"heldout": ("neuron", heldout), "time": dt * np.arange(self.mean.shape[1])},
            attrs={"band": "5% and 95% quantiles of the rate over posterior draws and members"},
        )


def _spread(rates: np.ndarray, factor: int) -> np.ndarray:
    """Coarse rates per bin spread evenly over the ``factor`` file bins they cover."""
    return np.repeat(rates, factor, axis=-2) / factor


@dataclasses.dataclass
class Ensemble:
    """Fitted members, ``(model, SVIResult)`` each, and the predictions of the target sets."""

    members: list
    predictions: dict[str, Prediction]
    settings: Settings

    def fixed_points(self, ds: xr.Dataset, *, num_starts: int = 16, seed: int = 0):
        """The generator's fixed points in every member, matched across members in rate space.

        Starts are each member's generator states on the trials of ``ds`` (file bins, held-out
        neurons may be NaN). The members stand in for posterior draws of the weights (a deep
        ensemble: each a MAP fit from its own seed), so probabilities are shares of members.
        """
        from probdyn.analysis.fixed_points import fixed_points

        sequences = with_forward(coarsen(ds, self.settings.bin_factor), 0)
        draws = []
        for member, (_, result) in enumerate(self.members):
            weights = result.guide.median(result.params)
            path = result.sample_posterior(1, seed=seed + member, data=sequences)["latents"][0]
            draws.append({**{k: np.asarray(v) for k, v in weights.items()}, "latents": path})
        stacked = {k: np.stack([d[k] for d in draws]) for k in draws[0]}
        return fixed_points(self.members[0][0], stacked, num_starts=num_starts, seed=seed)


def fit_ensemble(
    train: xr.Dataset,
    targets: dict[str, xr.Dataset],
    settings: Settings | None = None,
    *,
    seed: int = 0,
    work: str | os.PathLike | None = None,
    progress: bool = True,
) -> Ensemble:
    """Fit the ensemble on ``train`` (file bins) and predict every Dataset of ``targets``.

    Targets hold the trials to predict, held-out neurons NaN where unknown (as
    :func:`load_eval_input` reads them); each is predicted over its bins and the forward window
    the training data have. ``work``: a folder for the members' checkpoints (a rerun with the
    same data and settings resumes there).
    """
    settings = settings or Settings()
    coarse = coarsen(train, settings.bin_factor)
    forward_bins = coarse.sizes.get("forward_time", 0)
    observed = coarse.sizes["time"]
    sequences = with_forward(coarse, forward_bins)
    inputs = {
        name: with_forward(coarsen(ds, settings.bin_factor), forward_bins)
        for name, ds in targets.items()
    }
    folder = None if work is None else Path(work)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    draws = {name: [] for name in targets}
    members = []
    for member in range(settings.members):
        log.info(
            "nlb: fitting member %d of %d (seed %d)", member + 1, settings.members, seed + member
        )
        checkpoint = None if folder is None else folder / f"member-{seed + member}.ckpt"
        model, result = fit_member(
            sequences,
            settings,
            observed,
            seed=seed + member,
            checkpoint=checkpoint,
            progress=progress,
        )
        if result.resumed_from:
            log.info(
                "nlb: member %d resumed at step %d of %d from %s",
                member + 1,
                result.resumed_from,
                settings.num_steps,
                checkpoint,
            )
        members.append((model, result))
        for name, ds in inputs.items():
            draws[name].append(
                rate_draws(
                    model,
                    result,
                    ds,
                    num_samples=settings.num_samples,
                    seed=seed + member,
                    refine=settings.refine,
                )
            )
    predictions = {}
    for name, per_member in draws.items():
        stacked = np.stack(per_member)  # (member, draw, trial, time, neuron)
        pooled = stacked.reshape(-1, *stacked.shape[2:])
        lower, upper = np.quantile(pooled, [0.05, 0.95], axis=0)
        predictions[name] = Prediction(
            mean=_spread(pooled.mean(axis=0), settings.bin_factor),
            lower=_spread(lower, settings.bin_factor),
            upper=_spread(upper, settings.bin_factor),
            members=_spread(stacked.mean(axis=1), settings.bin_factor),
        )
    return Ensemble(members, predictions, settings)


def gaussian_smooth(spikes: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Spikes (trial, time, neuron) convolved along time with a normalised Gaussian kernel.

    The kernel is renormalised near the trial's edges so that a constant rate stays constant.
    """
    half = int(np.ceil(4 * sigma_bins))
    offsets = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (offsets / sigma_bins) ** 2)
    T = spikes.shape[1]
    weights = np.zeros((T, T))
    for t in range(T):
        lo, hi = max(0, t - half), min(T, t + half + 1)
        weights[t, lo:hi] = kernel[lo - t + half : hi - t + half]
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("st,ntk->nsk", weights, spikes)


def poisson_glm(features: np.ndarray, counts: np.ndarray, *, alpha: float, iterations: int = 50):
    r"""Ridge-penalised Poisson regression of each count column on ``features`` by Newton steps.

    Maximises :math:`\sum_i [y_i \eta_i - e^{\eta_i}] - \tfrac{\alpha}{2} n |w|^2` with
    :math:`\eta = X w + b` (the intercept is not penalised), as scikit-learn's
    ``PoissonRegressor(alpha)`` does per sample. Returns (weights (features, outputs),
    intercepts (outputs,)).
    """
    n, k = features.shape
    design = np.concatenate([features, np.ones((n, 1))], axis=1)
    penalty = alpha * n * np.eye(k + 1)
    penalty[-1, -1] = 0.0
    coefs = np.zeros((k + 1, counts.shape[1]))
    coefs[-1] = np.log(np.maximum(counts.mean(axis=0), 1e-6))
    for j in range(counts.shape[1]):
        w = coefs[:, j]
        for _ in range(iterations):
            rate = np.exp(np.clip(design @ w, -30, 30))
            gradient = design.T @ (counts[:, j] - rate) - penalty @ w
            hessian = design.T @ (design * rate[:, None]) + penalty
            step = np.linalg.solve(hessian, gradient)
            w = w + step
            if np.max(np.abs(step)) < 1e-8:
                break
        coefs[:, j] = w
    return coefs[:-1], coefs[-1]


def smoothing_baseline(
    train: xr.Dataset,
    evaluate: xr.Dataset,
    *,
    sigma_bins: float = 12.0,
    alpha: float = 0.1,
    floor: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    r"""The benchmark's smoothing baseline: held-out rates (trial, time, heldout) of both sets.

    Held-in spikes of each set are smoothed (:func:`gaussian_smooth`); a Poisson GLM with ridge
    penalty ``alpha`` fitted on the training trials maps their logarithms,
    :math:`\log(\text{smoothed} + \text{floor})`, to each held-out neuron. The defaults, a 60 ms
    kernel at 5 ms bins and alpha 0.1, are the benchmark's tuned values for MC_Maze_Small.
    """
    heldin, heldout = ~train.heldout.values, train.heldout.values

    def features(ds):
        smoothed = gaussian_smooth(ds.spikes.values[..., heldin].astype(float), sigma_bins)
        return np.log(smoothed + floor)

    x_train, x_eval = features(train), features(evaluate)
    y_train = train.spikes.values[..., heldout].astype(float)
    k = x_train.shape[-1]
    weights, intercepts = poisson_glm(
        x_train.reshape(-1, k), y_train.reshape(-1, y_train.shape[-1]), alpha=alpha
    )
    return np.exp(x_train @ weights + intercepts), np.exp(x_eval @ weights + intercepts)


def psth_forward(train: xr.Dataset, num_trials: int, *, sigma_bins: float = 12.0) -> np.ndarray:
    """Forward-window rates (trial, forward_time, neuron) by the training trials' smoothed mean.

    Each bin's mean count over the training trials, smoothed along the window by the baseline's
    Gaussian kernel (:func:`gaussian_smooth`) and floored at 1e-4 so that it can be scored; the
    same for every trial.
    """
    mean = train.spikes_forward.values.astype(float).mean(axis=0)
    smooth = np.maximum(gaussian_smooth(mean[None], sigma_bins)[0], 1e-4)
    return np.broadcast_to(smooth, (num_trials, *smooth.shape)).copy()


def _standardise(train: np.ndarray, *others: np.ndarray):
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [(x - mean) / std for x in (train, *others)]


def _ridge(features: np.ndarray, targets: np.ndarray, alpha: float):
    """Weights and intercept of ridge regression (intercept unpenalised, features centred)."""
    x_mean, y_mean = features.mean(axis=0), targets.mean(axis=0)
    x = features - x_mean
    gram = x.T @ x + alpha * len(x) * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, x.T @ (targets - y_mean))
    return weights, y_mean - x_mean @ weights


def r2_score(target: np.ndarray, prediction: np.ndarray) -> float:
    """Coefficient of determination per output column (pooled over rows), averaged."""
    from probdyn.analysis.metrics import _r2

    return float(np.mean(_r2(target, prediction)))


def velocity_r2(
    train_rates: np.ndarray,
    train_behavior: np.ndarray,
    eval_rates: np.ndarray,
    eval_behavior: np.ndarray,
    *,
    alphas=(1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0),
    folds: int = 5,
) -> float:
    r"""Decoding :math:`R^2` of behaviour from rates by ridge regression, as the benchmark does.

    Rates (trial, time, neuron) of every bin are the features (standardised by the training
    trials), behaviour (trial, time, dim) the targets; the penalty :math:`\alpha` (per bin, on
    standardised features) is chosen among ``alphas`` by ``folds``-fold cross-validation over
    the training trials; the :math:`R^2` on the evaluation trials is averaged over dims.
    """
    n = train_rates.shape[0]
    flat = [a.reshape(-1, a.shape[-1]) for a in (train_rates, eval_rates)]
    x_train, x_eval = _standardise(*flat)
    y_train = train_behavior.reshape(-1, train_behavior.shape[-1])
    trial = np.repeat(np.arange(n), train_rates.shape[1])
    split = np.arange(n) % min(folds, n)

    def score(alpha):
        total = []
        for k in range(min(folds, n)):
            out = np.isin(trial, np.flatnonzero(split == k))
            w, b = _ridge(x_train[~out], y_train[~out], alpha)
            total.append(r2_score(y_train[out], x_train[out] @ w + b))
        return np.mean(total)

    best = max(alphas, key=score)
    w, b = _ridge(x_train, y_train, best)
    return r2_score(eval_behavior.reshape(-1, eval_behavior.shape[-1]), x_eval @ w + b)


def heldin_only(ds: xr.Dataset) -> xr.Dataset:
    """Trials as an evaluation file gives them: held-out neurons missing, no forward window."""
    spikes = ds.spikes.astype(float).where(~ds.heldout)
    return xr.Dataset({"spikes": spikes}, coords={"heldout": ds.heldout}, attrs=dict(ds.attrs))


@dataclasses.dataclass
class Fold:
    """One fold: its held-out trials (all neurons) and the ensemble fitted without them."""

    test: xr.Dataset
    ensemble: Ensemble


@dataclasses.dataclass
class CrossValidation:
    """Per-fold scores (``rows``, see :func:`cross_validate`) and the folds themselves."""

    rows: list[dict]
    folds: list[Fold]

    def mean(self) -> dict:
        """Each score averaged over the folds."""
        skip = (
            "fold",
            "trials",
            "member_co_bps",
            "heldout_ll_per_trial",
            "heldout_ll_se",
            "chosen",
        )
        return {
            key: float(np.mean([row[key] for row in self.rows]))
            for key in self.rows[0]
            if key not in skip
        }

    def member_spread(self) -> str:
        """Single members' co-bps over every fold: mean, sd, min and max, in one phrase."""
        scores = np.array([row["member_co_bps"] for row in self.rows])
        return (
            f"co-bps {scores.mean():.3f} (sd {scores.std():.3f} over members and folds, "
            f"min {scores.min():.3f}, max {scores.max():.3f})"
        )


def cross_validate(
    ds: xr.Dataset,
    folds: int,
    settings: Settings | None = None,
    *,
    seed: int = 0,
    work: str | os.PathLike | None = None,
    progress: bool = True,
    search: Sequence[Settings] = (),
    extras: bool = True,
) -> CrossValidation:
    """Score the ensemble and the smoothing baseline on ``folds`` folds of ``ds``'s trials.

    Trials are shuffled (``seed``) and split in ``folds`` blocks; each block is predicted from
    its held-in spikes by a model fitted to the others. Per fold: ``co_bps``, ``fp_bps`` (held-
    out neurons, forward window) and ``velocity_r2`` of the ensemble and of the baseline
    (``baseline_*``; its forward prediction is :func:`psth_forward`, its decoded rates the
    smoothed held-in spikes beside its held-out rates), ``member_co_bps`` of each member, and
    the first member's held-out log likelihood per trial (:func:`heldout_log_likelihood`).
    Forward and velocity scores are left out where ``ds`` lacks the forward window or
    behaviour; ``extras=False`` leaves out every score but co-bps and its baseline.

    ``search``: candidate settings; each fold then chooses among them by :func:`search_settings`
    on its own training trials (nested cross-validation: the fold's held-out trials never
    score a candidate) and records its choice (``chosen``).
    """
    from probdyn.analysis.metrics import co_bps, fp_bps

    if not isinstance(folds, int) or not 2 <= folds <= ds.sizes["trial"]:
        raise ConfigError(f"folds = {folds!r}; expected 2..{ds.sizes['trial']} (the trials)")
    order = np.random.default_rng(seed).permutation(ds.sizes["trial"])
    heldout = ds.heldout.values
    T = ds.sizes["time"]
    rows, folds_done = [], []
    for k, held in enumerate(np.array_split(order, folds)):
        log.info("nlb: fold %d of %d (%d trials held out)", k + 1, folds, len(held))
        fit = np.sort(np.setdiff1d(order, held))
        train, test = ds.isel(trial=fit), ds.isel(trial=np.sort(held))
        folder = None if work is None else Path(work) / f"fold-{k}"
        chosen = settings
        if search:
            chosen, _ = search_settings(
                train,
                search,
                seed=seed,
                work=None if folder is None else folder / "search",
                progress=progress,
            )
        ensemble = fit_ensemble(
            train,
            {"train": heldin_only(train), "test": heldin_only(test)},
            chosen,
            seed=seed,
            work=folder,
            progress=progress,
        )
        mine, fitted = ensemble.predictions["test"], ensemble.predictions["train"]
        y = test.spikes.values[..., heldout]
        row = {
            "fold": k,
            "trials": len(held),
            "co_bps": co_bps(y, mine.mean[:, :T, heldout]),
            "member_co_bps": [co_bps(y, m[:, :T, heldout]) for m in mine.members],
        }
        if search:
            row["chosen"] = describe(chosen)
        base_train, base_test = smoothing_baseline(train, test)
        row["baseline_co_bps"] = co_bps(y, base_test)
        if extras:
            row |= heldout_log_likelihood(ensemble, test)
        if extras and "spikes_forward" in ds:
            y_forward = test.spikes_forward.values[..., heldout]
            row["fp_bps"] = fp_bps(y_forward, mine.mean[:, T:, heldout])
            psth = psth_forward(train, len(held))
            row["baseline_fp_bps"] = fp_bps(y_forward, psth[..., heldout])
        if extras and "behavior" in ds:
            row["velocity_r2"] = velocity_r2(
                fitted.mean[:, :T], train.behavior.values, mine.mean[:, :T], test.behavior.values
            )

            def smoothed(part, heldout_rates):
                rates = np.empty(part.spikes.shape)
                rates[..., ~heldout] = gaussian_smooth(
                    part.spikes.values[..., ~heldout].astype(float), 12.0
                )
                rates[..., heldout] = heldout_rates
                return rates

            row["baseline_velocity_r2"] = velocity_r2(
                smoothed(train, base_train),
                train.behavior.values,
                smoothed(test, base_test),
                test.behavior.values,
            )
        log.info("nlb: fold %d: %s", k + 1, format_row(row))
        rows.append(row)
        folds_done.append(Fold(test, ensemble))
    return CrossValidation(rows, folds_done)


def heldout_log_likelihood(ensemble: Ensemble, test: xr.Dataset, *, num_importance: int = 100):
    """The first member's log likelihood of trials it never saw, every neuron and bin.

    ``log_evidence(..., method="heldout")`` on ``test`` (its trial bins and forward window,
    the encoder reading the held-in neurons): ``heldout_ll`` (nats per trial, averaged over
    the trials), its standard error ``heldout_ll_se`` (of the average, from the per-trial
    estimates' own errors) and the same per trial (``heldout_ll_per_trial``).
    """
    from probdyn.inference import log_evidence

    model, result = ensemble.members[0]
    coarse = coarsen(test, ensemble.settings.bin_factor)
    sequences = with_forward(coarse, coarse.sizes.get("forward_time", 0))
    estimate = log_evidence(
        model,
        sequences,
        method="heldout",
        seed=0,
        svi_result=result,
        num_importance=num_importance,
    )
    per_trial = np.asarray(estimate.diagnostics["per_trial"])
    errors = np.asarray(estimate.diagnostics["per_trial_se"])
    return {
        "heldout_ll": float(per_trial.mean()),
        "heldout_ll_se": float(np.sqrt(np.sum(errors**2)) / len(per_trial)),
        "heldout_ll_per_trial": per_trial.tolist(),
    }


def describe(settings: Settings) -> str:
    """The fields of ``settings`` that differ from the defaults, as ``name=value`` pairs."""
    default = Settings()
    changed = [
        f"{f.name}={getattr(settings, f.name)}"
        for f in dataclasses.fields(Settings)
        if getattr(settings, f.name) != getattr(default, f.name)
    ]
    return ", ".join(changed) or "defaults"


def settings_grid(base: Settings, choices: Sequence[str]) -> list[Settings]:
    """Every combination of ``choices`` (``"name=v1,v2"`` each) applied to ``base``.

    Values are read as the field's type (integer or number); a bad name or value is a
    :class:`~probdyn.errors.ConfigError` that names it.
    """
    types = {f.name: f.type for f in dataclasses.fields(Settings)}
    grid = [base]
    for choice in choices:
        name, _, values = choice.partition("=")
        if name not in types or not values:
            raise ConfigError(
                f"--search {choice!r}: expected NAME=V1,V2 with NAME one of {sorted(types)}"
            )
        cast = int if types[name] == "int" else float
        try:
            parsed = [cast(v) for v in values.split(",")]
        except ValueError:
            raise ConfigError(f"--search {choice!r}: {name} takes {types[name]} values") from None
        grid = [dataclasses.replace(s, **{name: v}) for s in grid for v in parsed]
    return grid


def search_settings(
    ds: xr.Dataset,
    candidates: Sequence[Settings],
    *,
    folds: int = 3,
    seed: int = 0,
    work: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[Settings, list[dict]]:
    """Choose among ``candidates`` by co-bps on trials that each candidate never saw.

    Each candidate, fitted as one member, is cross-validated over ``folds`` folds of ``ds``
    (the same folds for all); the highest mean co-bps wins. A grid scored on held-out trials,
    the selection AutoLFADS makes by population-based training on a validation split
    (Keshtkaran et al. 2022) at a cost a CPU affords. Returns the winner (with its own
    ``members``) and one row per candidate (``settings``, ``co_bps``, ``fold_co_bps``).
    """
    table = []
    for i, candidate in enumerate(candidates):
        log.info("nlb: search %d of %d: %s", i + 1, len(candidates), describe(candidate))
        probe = dataclasses.replace(candidate, members=1)
        validation = cross_validate(
            ds,
            folds,
            probe,
            seed=seed,
            work=None if work is None else Path(work) / f"candidate-{i}",
            progress=progress,
            extras=False,
        )
        scores = [row["co_bps"] for row in validation.rows]
        table.append(
            {
                "settings": describe(candidate),
                "co_bps": float(np.mean(scores)),
                "fold_co_bps": scores,
            }
        )
        log.info("nlb: search %d of %d: co-bps %.3f", i + 1, len(candidates), np.mean(scores))
    best = int(np.argmax([row["co_bps"] for row in table]))
    return candidates[best], table


def format_row(row: dict) -> str:
    """One line: the model's scores beside the baseline's."""
    parts = [f"co-bps {row['co_bps']:.3f} (baseline {row['baseline_co_bps']:.3f})"]
    if "chosen" in row:
        parts.append(f"settings {row['chosen']}")
    if "fp_bps" in row:
        parts.append(f"fp-bps {row['fp_bps']:.3f} (baseline {row['baseline_fp_bps']:.3f})")
    if "velocity_r2" in row:
        parts.append(
            f"velocity R2 {row['velocity_r2']:.3f} (baseline {row['baseline_velocity_r2']:.3f})"
        )
    if "heldout_ll" in row:
        error = f" +- {row['heldout_ll_se']:.1f}" if "heldout_ll_se" in row else ""
        parts.append(f"held-out log likelihood {row['heldout_ll']:.1f}{error} nats/trial")
    return ", ".join(parts)


def write_submission(path: str | os.PathLike, dataset: str, rates: dict[str, np.ndarray]) -> Path:
    """Write ``rates`` (keys like ``eval_rates_heldout``) under the h5 group ``dataset``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        group = file.create_group(dataset)
        for key, value in rates.items():
            group.create_dataset(key, data=np.asarray(value, dtype=np.float32))
    return path


def dataset_name(train_path: str | os.PathLike) -> str:
    """``mc_maze_small`` from ``mc_maze_small_train.h5`` (the benchmark's file naming)."""
    stem = Path(train_path).stem
    return stem[: -len("_train")] if stem.endswith("_train") else stem
