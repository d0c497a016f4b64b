r"""How close generated trajectories come to a reference sample of a dynamical system.

Both measures compare distributions, not paths, so they apply to chaotic and noisy systems where
trajectories diverge however good the model (Koppe et al. 2019, PLoS Comput. Biol. 15 e1007263;
Mikhaeil, Monfared & Durstewitz 2022, NeurIPS; Gilpin 2021, NeurIPS Datasets and Benchmarks).

- :func:`state_space_kl`: :math:`D_{KL}(p \,\|\, q)` between the occupation histograms of the
  reference states :math:`p` and the generated states :math:`q` on a common grid.
- :func:`power_spectrum_hellinger`: the Hellinger distance between normalised power spectra,
  per state dimension, averaged.

Each is reported against its floor: the same measure between two independent reference samples.
"""

from __future__ import annotations

import numpy as np

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
