r"""Transitions between attractors along paths: switching rate, sequence order, irreversibility.

A noisy multistable system spends long times near its attractors and jumps between them. Each
state is labelled by core sets (milestoning; Schütte et al. 2011, J. Chem. Phys. 134 204105):
a path belongs to attractor :math:`k` from the moment it comes within ``radius`` of centre
:math:`k` until it comes within ``radius`` of another, so a path that grazes the boundary
between two basins and returns is not counted as switching. From the label sequences:

- the switching rate: transitions per unit time (its standard error across trials);
- with a cyclic ``order`` of the attractors, the forward fraction: the share of transitions that
  go one step forward in the cycle (1/2 for a reversible system with symmetric rates; its
  binomial standard error);
- the coarse-grained entropy production
  :math:`\hat\Phi_{cg} = \sum_{i<j}(k_{ij} - k_{ji})\ln(k_{ij}/k_{ji})` with :math:`k_{ij}` the
  rate of jumps :math:`i \to j` (counts + 1/2 over the observed time), a lower bound on the
  system's entropy production when the jumps are Markov (coarse-graining cannot create
  irreversibility; Roldán & Parrondo 2010, PRL 105 150607) and zero in detailed balance.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from probdyn.errors import ConfigError


def _radius(centres: np.ndarray, radius: float | None) -> float:
    """The core radius: given, or a third of the smallest gap; checked not to overlap."""
    if len(centres) < 2:
        raise ConfigError("transitions need at least two centres")
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    smallest = np.min(gaps[~np.eye(len(centres), dtype=bool)])
    radius = smallest / 3 if radius is None else float(radius)
    if not 0 < radius < smallest / 2:
        raise ConfigError(
            f"radius={radius}; expected between 0 and half the smallest gap between centres "
            f"({smallest / 2:.3g}), so that cores do not overlap"
        )
    return radius


def _checked(paths, centres) -> tuple[np.ndarray, np.ndarray]:
    paths, centres = np.asarray(paths, dtype=float), np.asarray(centres, dtype=float)
    if paths.ndim == 2:
        paths = paths[None]
    if paths.ndim != 3 or centres.ndim != 2 or centres.shape[1] != paths.shape[-1]:
        raise ConfigError(
            f"paths {paths.shape} and centres {centres.shape}: expected (trial, time, dim) and "
            "(centre, dim) with one dim"
        )
    if not np.isfinite(paths).all():
        raise ConfigError("paths have non-finite values (a diverged simulation?)")
    return paths, centres


def _core_sets(paths, centres, radius: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Core-set labels (trial, time) and whether each state lies inside a core."""
    paths, centres = _checked(paths, centres)
    radius = _radius(centres, radius)
    distance = np.linalg.norm(paths[:, :, None] - centres, axis=-1)  # (trial, time, centre)
    in_core = distance.min(-1) < radius
    inside = np.where(in_core, distance.argmin(-1), -1)
    labels = np.empty_like(inside)
    current = np.full(paths.shape[0], -1)
    for t in range(paths.shape[1]):
        current = np.where(inside[:, t] >= 0, inside[:, t], current)
        labels[:, t] = current
    return labels, in_core


def core_labels(paths, centres, *, radius: float | None = None) -> np.ndarray:
    """Core-set labels (trial, time): the last centre the path came within ``radius`` of.

    -1 before a path first enters a core. ``radius`` defaults to a third of the smallest
    distance between centres (cores never overlap).
    """
    return _core_sets(paths, centres, radius)[0]


def attractor_transitions(
    paths, centres, dt: float, *, radius: float | None = None, order=None
) -> xr.Dataset:
    """Switching between attractors along paths (trial, time, dim) sampled ``dt`` apart.

    ``centres`` (centre, dim) are the attractors (e.g. the stable fixed points); ``order``
    (a permutation of the centres' indices) the cycle in which a sequential memory visits them.
    Returns ``counts`` (from, to), ``switching_rate`` and ``switching_rate_se`` (per unit time,
    across trials), ``coarse_entropy_production`` and, with ``order``, ``forward_fraction`` and
    ``forward_fraction_se``; ``observed_time`` is the time spent after first entering a core
    and ``occupancy`` the share of states inside a core. The switching rate's standard error is
    the spread of the per-trial rates (NaN for one trial); paths that never enter a core (an
    ablation that destroyed the attractors) give NaN statistics and zero occupancy.
    """
    if not dt > 0:
        raise ConfigError(f"dt = {dt!r}; expected a positive time step")
    if order is not None:
        order = np.asarray(order)
        if sorted(order.tolist()) != list(range(len(np.asarray(centres)))):
            raise ConfigError(f"order={order.tolist()}; expected a permutation of the centres")
    labels, in_core = _core_sets(paths, centres, radius)
    num_centres = len(np.asarray(centres))
    before, after = labels[:, :-1], labels[:, 1:]
    jumps = (before >= 0) & (after != before)
    counts = np.zeros((num_centres, num_centres))
    np.add.at(counts, (before[jumps], after[jumps]), 1)
    per_trial_time = (before >= 0).sum(1) * dt
    observed_time = per_trial_time.sum()
    seen = per_trial_time > 0
    per_trial_rate = jumps.sum(1)[seen] / per_trial_time[seen]
    rates = (counts + 0.5) / observed_time if observed_time else np.full_like(counts, np.nan)
    visited = (counts + counts.T) > 0
    flux = np.where(visited, (rates - rates.T) * np.log(rates / rates.T), 0.0)
    total = counts.sum()
    result = xr.Dataset(
        {
            "counts": (("from", "to"), counts),
            "switching_rate": total / observed_time if observed_time else np.nan,
            "switching_rate_se": (
                per_trial_rate.std(ddof=1) / np.sqrt(seen.sum()) if seen.sum() > 1 else np.nan
            ),
            "coarse_entropy_production": flux.sum() / 2 if observed_time else np.nan,
            "observed_time": observed_time,
            "occupancy": np.mean(in_core),
        },
        coords={"from": np.arange(num_centres), "to": np.arange(num_centres)},
    )
    if order is not None:
        forward = sum(counts[a, b] for a, b in zip(order, np.roll(order, -1), strict=True))
        fraction = forward / total if total else np.nan
        result["forward_fraction"] = fraction
        result["forward_fraction_se"] = (
            np.sqrt(fraction * (1 - fraction) / total) if total else np.nan
        )
    return result
