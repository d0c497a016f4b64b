r"""Reverse-engineering a noise-driven network: its orbit and the residency of its output.

Torre et al. (2025) describe HMM-emulating RNNs by where their hidden states go under noise
(a closed orbit in the leading principal components) and by how long the output stays put:
each time step is labelled by the length :math:`r` of the run of identical symbols it belongs to,

- ``"transition"``: :math:`r < 2` (the output is changing),
- ``"kick zone"``: :math:`2 \le r \le 8`,
- ``"cluster"``: :math:`r > 8` (slow, noise-driven dwelling).

These are our reading of the paper's groups (<2, 2-8, >8 steps); the thresholds are arguments.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from probdyn.errors import DataError

GROUPS = ("transition", "kick zone", "cluster")


def run_lengths(symbols) -> np.ndarray:
    """For every step of ``symbols`` (trial, time), the length of its run of equal symbols."""
    values = np.asarray(symbols)
    if values.ndim != 2:
        raise DataError(f"symbols have shape {values.shape}; expected (trial, time)")
    lengths = np.empty(values.shape, dtype=int)
    for n, row in enumerate(values):
        starts = np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]]))
        sizes = np.diff(np.concatenate([starts, [row.size]]))
        lengths[n] = np.repeat(sizes, sizes)
    return lengths


def residency_groups(symbols, *, short: int = 2, long: int = 8) -> np.ndarray:
    """Group index per step: 0 transition (run < ``short``), 1 kick zone, 2 cluster (> ``long``)."""
    lengths = run_lengths(symbols)
    return np.where(lengths < short, 0, np.where(lengths <= long, 1, 2))


def orbit_pca(hidden, num_components: int = 3) -> xr.Dataset:
    r"""Principal components of hidden states (..., hidden): where the noise-driven orbit lies.

    Returns ``components`` (component, unit), ``explained_variance_ratio`` (component), the
    ``mean`` state and the ``projection`` (..., component) of every state.
    """
    states = np.asarray(hidden, dtype=np.float64)
    flat = states.reshape(-1, states.shape[-1])
    if flat.shape[0] < 2 or num_components > min(flat.shape):
        raise DataError(
            f"{flat.shape[0]} states of {flat.shape[1]} units cannot give {num_components} "
            "principal components"
        )
    mean = flat.mean(axis=0)
    _, singular, vt = np.linalg.svd(flat - mean, full_matrices=False)
    variance = singular**2
    projection = (states - mean) @ vt[:num_components].T
    dims = [f"axis_{i}" for i in range(states.ndim - 1)]
    return xr.Dataset(
        {
            "components": (("component", "unit"), vt[:num_components]),
            "explained_variance_ratio": ("component", variance[:num_components] / variance.sum()),
            "mean": ("unit", mean),
            "projection": ((*dims, "component"), projection),
        }
    )
