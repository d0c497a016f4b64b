r"""Scores of a fitted dynamics model against ground truth or held-out data.

**Distributions of generated states** (chaotic and noisy systems, where trajectories diverge
however good the model; Koppe et al. 2019, PLoS Comput. Biol. 15 e1007263; Mikhaeil, Monfared &
Durstewitz 2022, NeurIPS; Gilpin 2021, NeurIPS Datasets and Benchmarks):

- :func:`state_space_kl`: :math:`D_{KL}(p \,\|\, q)` between the occupation histograms of the
  reference states :math:`p` and the generated states :math:`q` on a common grid.
- :func:`power_spectrum_hellinger`: the Hellinger distance between normalised power spectra,
  per state dimension, averaged.

Each is reported against its floor: the same measure between two independent reference samples.

**Recovery of known latents and rates** (Sedler, Versteeg & Pandarinath 2023):

- :func:`rate_r2`: :math:`R^2` of inferred against true rates, no fitting, averaged over neurons.
- :func:`state_r2`: :math:`R^2` of an affine regression from true to inferred latents, per
  inferred dimension, clamped at -10, averaged (:func:`affine_map` gives the map itself).

**Groups of latents and connectivity** (FacRNN, Li et al. 2025; the partial and total
correlation of an aggregated posterior are in :mod:`probdyn.algorithms.independence`):

- :func:`group_latent_r2`: each true group of latents regressed (affine) on each inferred
  group, groups matched one to one by the Hungarian algorithm on :math:`R^2`.
- :func:`component_latent_r2`: the same for single dimensions.
- :func:`connectivity_similarity`: correlation and relative error of a connectivity matrix.

**Held-out prediction** (Pei et al. 2021, Neural Latents Benchmark):

- :func:`co_bps`: co-smoothing bits per spike of predicted rates for held-out neurons.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize

from probdyn.errors import DataError


def _states(name: str, values) -> np.ndarray:
    """(points, dim) from (..., dim), checked finite."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim < 2:
        raise DataError(f"{name} has shape {array.shape}; expected (..., dim) with dim last")
    if not np.isfinite(array).all():
        raise DataError(f"{name} has non-finite values (a diverged simulation?)")
    return array.reshape(-1, array.shape[-1])


def state_space_kl(
    reference, sample, *, num_bins: int = 20, padding: float = 0.1, pseudocount: float = 1.0
) -> float:
    r"""Kullback-Leibler divergence :math:`\sum_k p_k \log(p_k / q_k)` of binned state occupancy.

    The grid has ``num_bins`` bins per dimension over the reference's range widened by
    ``padding`` of its width on each side; generated states outside it fall in the edge bins.
    Both histograms get ``pseudocount`` added to every bin before normalising (Laplace
    smoothing), so :math:`q_k > 0` wherever :math:`p_k > 0`; with ``pseudocount=0`` the value is
    infinite when the sample misses a bin the reference occupies.

    Args:
        reference: states (..., dim) of the target system.
        sample: states (..., dim) of the model.

    """
    p_states, q_states = _states("reference", reference), _states("sample", sample)
    if p_states.shape[1] != q_states.shape[1]:
        raise DataError(
            f"reference has {p_states.shape[1]} dims and sample {q_states.shape[1]}; expected equal"
        )
    if num_bins < 1 or pseudocount < 0:
        raise DataError(f"num_bins={num_bins}, pseudocount={pseudocount}; expected >= 1 and >= 0")
    low, high = p_states.min(axis=0), p_states.max(axis=0)
    width = np.where(high > low, high - low, 1.0)
    edges = [
        np.linspace(lo - padding * w, hi + padding * w, num_bins + 1)
        for lo, hi, w in zip(low, high, width, strict=True)
    ]
    clipped = np.clip(q_states, [e[0] for e in edges], [e[-1] for e in edges])
    p = np.histogramdd(p_states, bins=edges)[0].ravel() + pseudocount
    q = np.histogramdd(clipped, bins=edges)[0].ravel() + pseudocount
    p, q = p / p.sum(), q / q.sum()
    support = p > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[support] * (np.log(p[support]) - np.log(q[support]))))


def _spectra(paths: np.ndarray, smoothing: float) -> np.ndarray:
    """Normalised power spectra (dim, frequency) of (trials, time, dim), trial-averaged."""
    centred = paths - paths.mean(axis=1, keepdims=True)
    power = np.abs(np.fft.rfft(centred, axis=1)) ** 2
    spectrum = power.mean(axis=0).T[:, 1:]  # drop the zero frequency (the mean)
    if smoothing > 0:
        offsets = np.arange(-int(4 * smoothing), int(4 * smoothing) + 1)
        kernel = np.exp(-0.5 * (offsets / smoothing) ** 2)
        spectrum = np.stack([np.convolve(s, kernel / kernel.sum(), mode="same") for s in spectrum])
    return spectrum / spectrum.sum(axis=1, keepdims=True)


def power_spectrum_hellinger(reference, sample, *, smoothing: float = 2.0) -> float:
    r"""Mean over dimensions of :math:`H = \sqrt{1 - \sum_f \sqrt{p_f q_f}}` between spectra.

    :math:`p` and :math:`q` are the power spectra of each dimension (trial-averaged
    periodograms, zero frequency dropped, smoothed by a Gaussian of ``smoothing`` frequency bins,
    normalised to sum to one). :math:`H \in [0, 1]`: 0 for equal spectra, 1 for disjoint ones.

    Args:
        reference, sample: paths (trials, time, dim) sampled at the same bin width and length.

    """
    p_paths, q_paths = (np.asarray(a, dtype=np.float64) for a in (reference, sample))
    if p_paths.ndim != 3 or p_paths.shape[1:] != q_paths.shape[1:]:
        raise DataError(
            f"reference {p_paths.shape} and sample {q_paths.shape}: expected paths "
            "(trials, time, dim) with the same time and dim"
        )
    if not (np.isfinite(p_paths).all() and np.isfinite(q_paths).all()):
        raise DataError("paths have non-finite values (a diverged simulation?)")
    p, q = _spectra(p_paths, smoothing), _spectra(q_paths, smoothing)
    overlap = np.sum(np.sqrt(p * q), axis=1)
    return float(np.mean(np.sqrt(np.clip(1.0 - overlap, 0.0, 1.0))))


def _paired(name_a: str, a, name_b: str, b) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays flattened to (points, dim), checked finite and of matching points."""
    a, b = _states(name_a, a), _states(name_b, b)
    if a.shape[0] != b.shape[0]:
        raise DataError(
            f"{name_a} has {a.shape[0]} points and {name_b} {b.shape[0]}; they must be paired "
            "(same trials and bins)"
        )
    return a, b


def _r2(target: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column, :math:`1 - SS_{res}/SS_{tot}`."""
    residual = np.sum((target - prediction) ** 2, axis=0)
    total = np.sum((target - target.mean(axis=0)) ** 2, axis=0)
    return 1.0 - residual / total


def rate_r2(rates_true, rates) -> float:
    r"""Mean over neurons of :math:`R^2` of inferred ``rates`` against ``rates_true``.

    Both (..., neuron), in the same unit (per bin); no regression is fitted, so a wrong scale or
    offset counts against the model.
    """
    truth, inferred = _paired("rates_true", rates_true, "rates", rates)
    if truth.shape[1] != inferred.shape[1]:
        raise DataError(f"rates_true has {truth.shape[1]} neurons and rates {inferred.shape[1]}")
    return float(np.mean(_r2(truth, inferred)))


def affine_map(source, target) -> tuple[np.ndarray, np.ndarray]:
    r"""Least-squares :math:`(A, b)` with :math:`\text{target} \approx \text{source}\,A + b`.

    ``source`` (..., d_s), ``target`` (..., d_t) paired point by point; returns A (d_s, d_t) and
    b (d_t,).
    """
    x, y = _paired("source", source, "target", target)
    design = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    return solution[:-1], solution[-1]


def state_r2(latents_true, latents, *, fit_on=None, floor: float = -10.0) -> float:
    r"""How well the true latents explain the inferred ones.

    An affine map from ``latents_true`` (..., d) to ``latents`` (..., D) is fitted by least
    squares, on these same points or on ``fit_on = (latents_true, latents)`` of other trials
    (fit on training trials, score on validation trials); the :math:`R^2` of each inferred
    dimension, clamped below at ``floor``, is averaged. Inferred dimensions that the true
    system does not explain (extra or spurious dynamics) score low, which is what distinguishes
    this from regressing the other way. Scored out of sample, :math:`R^2` can be very negative,
    hence the clamp.
    """
    fit = fit_on or (latents_true, latents)
    return _affine_r2(("latents_true", latents_true), ("latents", latents), fit, floor)


def _affine_r2(source, target, fit, floor: float) -> float:
    """Mean over target columns of the clamped :math:`R^2` of an affine map source -> target.

    ``source`` and ``target`` are (name, values) pairs (the names for errors); ``fit`` is
    (source values, target values) the map is fitted on.
    """
    A, b = affine_map(*fit)
    x, y = _paired(*source, *target)
    return float(np.mean(np.maximum(_r2(y, x @ A + b), floor)))


def recovery_r2(latents_true, latents, *, fit_on=None, floor: float = -10.0) -> float:
    r"""How well the inferred latents explain the true ones: :func:`state_r2` the other way.

    An affine map from ``latents`` (..., D) to ``latents_true`` (..., d), fitted on these
    points or on ``fit_on = (latents_true, latents)`` of other trials; the :math:`R^2` of each
    true dimension (clamped below at ``floor``) is averaged. Extra inferred dimensions cost
    nothing here (the regression ignores them), so the pair tells two failures apart: a model
    that misses part of the system scores low here, one that invents dynamics the system does
    not have scores low in :func:`state_r2` (Sedler, Versteeg & Pandarinath 2023 report both).
    """
    latents_fit, inferred_fit = fit_on or (latents_true, latents)
    return _affine_r2(
        ("latents", latents), ("latents_true", latents_true), (inferred_fit, latents_fit), floor
    )


def _pooled_r2(target: np.ndarray, source: np.ndarray) -> float:
    """:math:`R^2` of an affine fit from ``source`` to ``target``, pooled over target columns."""
    A, b = affine_map(source, target)
    residual = np.sum((target - source @ A - b) ** 2)
    return float(1.0 - residual / np.sum((target - target.mean(axis=0)) ** 2))


def _matched(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the column the Hungarian algorithm gives it (-1: none) and its score."""
    rows, cols = scipy.optimize.linear_sum_assignment(-table)
    match = np.full(table.shape[0], -1)
    match[rows] = cols
    scores = np.where(match >= 0, table[np.arange(table.shape[0]), np.maximum(match, 0)], 0.0)
    return match, scores


def group_latent_r2(latents_true, latents, groups_true, groups) -> dict:
    r"""How well each true group of latents is carried by one inferred group.

    ``latents_true`` (..., d) and ``latents`` (..., K) are paired point by point; ``groups_true``
    (d,) and ``groups`` (K,) label their dimensions. ``table[g, h]`` is the :math:`R^2` of the
    affine regression of true group g on inferred group h (pooled over g's dimensions); groups
    are matched one to one maximising the total :math:`R^2`, and ``r2[g]`` is true group g's
    score under that matching (0 where more true than inferred groups leave it unmatched).
    Returns ``{"r2", "mean", "match", "table"}``.
    """
    x, y = _paired("latents_true", latents_true, "latents", latents)
    labels_true, labels = np.asarray(groups_true), np.asarray(groups)
    if labels_true.shape != (x.shape[1],) or labels.shape != (y.shape[1],):
        raise DataError(
            f"groups_true has shape {labels_true.shape} and groups {labels.shape}; expected one "
            f"label per dimension: ({x.shape[1]},) and ({y.shape[1]},)"
        )
    true_ids, ids = np.unique(labels_true), np.unique(labels)
    table = np.array(
        [[_pooled_r2(x[:, labels_true == g], y[:, labels == h]) for h in ids] for g in true_ids]
    )
    match, scores = _matched(table)
    return {"r2": scores, "mean": float(scores.mean()), "match": match, "table": table}


def component_latent_r2(latents_true, latents) -> dict:
    """:func:`group_latent_r2` with every dimension its own group (1-D affine fits)."""
    x, y = _paired("latents_true", latents_true, "latents", latents)
    return group_latent_r2(x, y, np.arange(x.shape[1]), np.arange(y.shape[1]))


def connectivity_similarity(connectivity_true, connectivity) -> dict:
    r"""Entry-wise correlation and relative error :math:`\|J - J^*\|_F / \|J^*\|_F`."""
    truth, estimate = np.asarray(connectivity_true, float), np.asarray(connectivity, float)
    if truth.shape != estimate.shape:
        raise DataError(
            f"connectivity_true has shape {truth.shape} and connectivity {estimate.shape}; "
            "they must match"
        )
    correlation = np.corrcoef(truth.ravel(), estimate.ravel())[0, 1]
    error = np.linalg.norm(estimate - truth) / np.linalg.norm(truth)
    return {"correlation": float(correlation), "relative_error": float(error)}


#: The floor the benchmark puts under zero predicted rates (nlb_tools' ``neg_log_likelihood``).
ZERO_RATE_FLOOR = 1e-9


def bits_per_spike(spikes, rates) -> float:
    r"""Bits per spike of predicted ``rates`` (per bin) for ``spikes``, as the benchmark scores it.

    .. math::
        \text{bps} = \frac{\log L(y \mid r) - \log L(y \mid \bar r)}{\ln 2 \sum y},
        \qquad \log L(y \mid r) = \sum y \log r - r,

    summed over trials, bins and neurons, with :math:`\bar r` each neuron's mean count per bin
    over the evaluated data (the :math:`\log y!` terms cancel). As in the Neural Latents
    Benchmark's ``bits_per_spike`` (Pei et al. 2021): bins where the spikes are NaN (missing)
    are left out of every sum; a rate of exactly 0 (a prediction, or the null rate of a neuron
    silent in the evaluated bins) is floored to :data:`ZERO_RATE_FLOOR`; negative or non-finite
    rates where spikes are observed are refused.
    """
    y, r = _paired_counts(spikes, rates)
    observed = np.isfinite(y)
    if (r[observed] < 0).any() or not np.isfinite(r[observed]).all():
        raise DataError("rates must be non-negative and finite wherever spikes are observed")
    counts = np.where(observed, y, 0.0)
    total = counts.sum()
    if total <= 0:
        raise DataError("the evaluated spikes contain no spike; bits per spike is undefined")
    # A neuron with no observed bin adds nothing; its null rate is never read.
    null = counts.sum(axis=0) / np.maximum(observed.sum(axis=0), 1)
    null = np.broadcast_to(null, counts.shape)

    def log_likelihood(rate):
        rate = np.where(observed, np.where(rate == 0, ZERO_RATE_FLOOR, rate), 1.0)
        return np.sum(np.where(observed, counts * np.log(rate) - rate, 0.0))

    return float((log_likelihood(r) - log_likelihood(null)) / (np.log(2) * total))


#: Co-smoothing bits per spike: :func:`bits_per_spike` of the held-out neurons' rates.
co_bps = bits_per_spike
#: Forward-prediction bits per spike: :func:`bits_per_spike` of the held-out neurons' rates in
#: the bins after each trial.
fp_bps = bits_per_spike


def _paired_counts(spikes, rates) -> tuple[np.ndarray, np.ndarray]:
    """Spikes and rates as (points, neuron) float arrays of the same shape (NaN spikes kept)."""
    y = np.asarray(spikes, dtype=np.float64)
    r = np.asarray(rates, dtype=np.float64)
    if y.shape != r.shape or y.ndim < 2:
        raise DataError(
            f"spikes have shape {y.shape} and rates {r.shape}; expected the same (..., neuron)"
        )
    if (y[np.isfinite(y)] < 0).any():
        raise DataError("spikes must be non-negative counts")
    return y.reshape(-1, y.shape[-1]), r.reshape(-1, r.shape[-1])
