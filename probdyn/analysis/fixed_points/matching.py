"""Points of different draws matched in observation space, and carried to one latent frame."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import scipy.optimize

from probdyn.analysis.fixed_points.dynamics import static_model
from probdyn.analysis.fixed_points.solver import invert_readout

#: Fewest draws with the modal number of points from which a cluster's own spread is read.
MIN_SPREAD_DRAWS = 5
#: A cluster's gate in units of its members' median distance to their centre.
GATE_SPREADS = 4.0


def _distances(draw_points: np.ndarray, centres) -> np.ndarray:
    """Root-mean-square distance (point, centre); inf where a prediction overflowed."""
    difference = draw_points[:, None].astype(np.float64) - np.asarray(centres)[None]
    with np.errstate(over="ignore", invalid="ignore"):
        cost = np.sqrt(np.mean(difference**2, axis=-1))
    return np.where(np.isfinite(cost), cost, np.inf)


def _assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one assignment of rows to columns minimising the total cost (Hungarian)."""
    return scipy.optimize.linear_sum_assignment(np.where(cost < np.inf, cost, 1e300))


def cluster_gates(
    points: list[np.ndarray], reference: int, match_tol: float
) -> tuple[list[np.ndarray], list[float], list[int]]:
    r"""Each reference point's centre, gate and weight, read from the draws that share it.

    The draws with the reference's number of points are assigned to its points one to one
    (Hungarian algorithm, no gate). For each point with at least :data:`MIN_SPREAD_DRAWS`
    members, the centre is their coordinate-wise median and the gate
    :math:`\max(\text{match\_tol},\ \text{GATE\_SPREADS} \cdot \mathrm{median}_i\, r_i)`,
    :math:`r_i` the root-mean-square distance of member :math:`i` to the centre: a point whose
    posterior spreads far beyond the data's own spread stays one point (on a fitted SDE RNN of
    MC_Maze_Small the largest :math:`r_i` was 3.2 times the median), while a minority of draws
    whose point sits farther than that from the majority's (a second mode) opens a cluster of
    its own. Otherwise the reference's point with gate ``match_tol``. The weight (members, or
    1) is the centre's share in the running mean it then starts.
    """
    modal = len(points[reference])
    members: list[list[np.ndarray]] = [[] for _ in range(modal)]
    for draw_points in points:
        if len(draw_points) != modal or modal == 0:
            continue
        cost = _distances(draw_points, points[reference])
        rows, cols = _assign(cost)
        for r, c in zip(rows, cols, strict=True):
            if np.isfinite(cost[r, c]):
                members[c].append(np.asarray(draw_points[r], np.float64))
    centres, gates, weights = [], [], []
    for k, values in enumerate(members):
        if len(values) < MIN_SPREAD_DRAWS:
            centres.append(np.asarray(points[reference][k], np.float64))
            gates.append(match_tol)
            weights.append(1)
            continue
        stacked = np.asarray(values)
        centre = np.median(stacked, axis=0)
        spread = np.sqrt(np.mean((stacked - centre) ** 2, axis=-1))
        centres.append(centre)
        gates.append(max(match_tol, GATE_SPREADS * float(np.median(spread))))
        weights.append(len(values))
    return centres, gates, weights


def match_points(points: list[np.ndarray], match_tol: float) -> tuple[list[np.ndarray], int]:
    """Cluster index of every point of every draw, and the reference draw.

    The reference is the first draw with the most common number of points; every other draw is
    assigned one to one to the clusters (Hungarian algorithm on the distance to each cluster's
    running mean, started at :func:`cluster_gates`' centre), and a point farther than the
    cluster's gate (``match_tol`` for clusters opened later) opens a cluster of its own.
    """
    counts = np.array([len(p) for p in points])
    values, frequency = np.unique(counts, return_counts=True)
    modal = values[np.argmax(frequency)]
    reference = int(np.flatnonzero(counts == modal)[0])
    centres, gates, sizes = cluster_gates(points, reference, match_tol)
    assignment: list[np.ndarray | None] = [None] * len(points)
    assignment[reference] = np.arange(len(centres))
    for d, draw_points in enumerate(points):
        if d == reference:
            continue
        labels = np.full(len(draw_points), -1)
        if centres and len(draw_points):
            # A point whose predicted observation overflows matches nothing: its own cluster.
            cost = _distances(draw_points, centres)
            rows, cols = _assign(cost)
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] <= gates[c]:
                    labels[r] = c
                    sizes[c] += 1
                    centres[c] = centres[c] + (draw_points[r] - centres[c]) / sizes[c]
        for r in np.flatnonzero(labels < 0):
            labels[r] = len(centres)
            centres.append(draw_points[r])
            gates.append(match_tol)
            sizes.append(1)
        assignment[d] = labels
    return assignment, reference


def align_to_reference(
    model, reference_params, location, emitted, reference, tol, max_steps
) -> np.ndarray:
    """Carry every point into the reference draw's latent coordinates through the readouts."""
    ref_location = location[reference]
    # Start each point from the reference draw's point of the same cluster where it has one.
    start = np.where(np.isnan(ref_location)[None], location, ref_location[None])
    start = np.nan_to_num(start)
    target = np.nan_to_num(emitted)

    flat = invert_readout(
        static_model(model),
        max_steps,
        reference_params,
        jnp.asarray(start.reshape(-1, start.shape[-1])),
        jnp.asarray(target.reshape(-1, target.shape[-1])),
        tol,
    )
    aligned = np.array(flat).reshape(location.shape)
    aligned[reference] = ref_location
    return np.where(np.isnan(location), np.nan, aligned)
