r"""Co-smoothing on Neural Latents Benchmark files (Pei et al. 2021).

The benchmark's co-smoothing task: from the held-in neurons of a trial, predict the rates of its
held-out neurons. A model is trained on the training trials, where both are recorded; evaluation
trials come with held-in spikes only (``eval_spikes_heldin``). Scored by :func:`probdyn.metrics.
co_bps`.

- :func:`fit_node`: a :class:`probdyn.models.NODE` on all neurons of the training trials whose
  encoder reads the held-in neurons only, so evaluation trials are inferred as training trials
  were (their held-out neurons enter as missing bins).
- :func:`predict_rates`: posterior-mean rates per bin of every neuron for any trials.
- :func:`smoothing_baseline`: the benchmark's baseline: held-in spikes smoothed by a Gaussian
  kernel, a Poisson GLM (ridge penalty) from them to each held-out neuron.
- :func:`write_submission`: predicted rates in the benchmark's layout (one h5 group named after
  the data set holding ``{train,eval}_rates_{heldin,heldout}``).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import optax
import xarray as xr

from probdyn.data.loaders import load_nlb
from probdyn.errors import DataError


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


def fit_node(
    train: xr.Dataset,
    *,
    latent_dim: int = 8,
    tau: float = 0.02,
    num_steps: int = 3000,
    learning_rate: float = 5e-3,
    batch_size: int | None = None,
    guide: str = "amortised-delta",
    seed: int = 0,
    progress: bool = True,
):
    """Fit a NODE (amortised initial states) to training trials with held-out neurons.

    ``guide``: ``"amortised-delta"`` (MAP weights) or ``"amortised"`` (a Gaussian posterior over
    the weights, whose predictions average over it). Returns ``(model, result)``. The encoder
    reads the neurons whose ``heldout`` flag is False.
    """
    from probdyn.inference import svi
    from probdyn.models import NODE

    if "heldout" not in train.coords or not bool(train.heldout.any()):
        raise DataError("the training data have no held-out neurons (a 'heldout' coordinate)")
    heldin = tuple(int(i) for i in np.flatnonzero(~train.heldout.values))
    model = NODE(
        latent_dim=latent_dim,
        num_neurons=train.sizes["neuron"],
        encoder_neurons=heldin,
        tau=tau,
    )
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, min(100, num_steps // 10), num_steps, learning_rate * 0.01
    )
    optimizer = optax.chain(optax.clip_by_global_norm(100.0), optax.adam(schedule))
    result = svi(
        model,
        train,
        num_steps=num_steps,
        seed=seed,
        guide=guide,
        optimizer=optimizer,
        batch_size=batch_size,
        progress=progress,
    )
    return model, result


def predict_rates(
    model, result, ds: xr.Dataset, *, num_samples: int = 20, seed: int = 0, refine: int = 0
):
    """Posterior-mean rates per bin (trial, time, neuron) of the trials in ``ds``.

    ``refine``: optimisation steps that carry each trial's initial state from the encoder's
    draw to the Laplace approximation of its own posterior (see ``SVIResult.sample_posterior``).
    """
    draws = result.sample_posterior(num_samples, seed=seed, data=ds, refine=refine)
    sites = model.default_priors(model.num_neurons)
    rates = [
        model.emission_mean({name: draws[name][i] for name in sites}, draws["latents"][i])
        for i in range(num_samples)
    ]
    return np.mean(np.asarray(rates), axis=0)


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
