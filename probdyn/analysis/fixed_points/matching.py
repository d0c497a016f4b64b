"""Points of different draws matched in observation space, and carried to one latent frame."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import scipy.optimize

from probdyn.analysis.fixed_points.dynamics import static_model
from probdyn.analysis.fixed_points.solver import invert_readout


def match_points(points: list[np.ndarray], match_tol: float) -> tuple[list[np.ndarray], int]:
    """Cluster index of every point of every draw, and the reference draw."""
    counts = np.array([len(p) for p in points])
    values, frequency = np.unique(counts, return_counts=True)
    modal = values[np.argmax(frequency)]
    reference = int(np.flatnonzero(counts == modal)[0])
    centres = [c for c in points[reference]]
    sizes = [1] * len(centres)
    assignment: list[np.ndarray | None] = [None] * len(points)
    assignment[reference] = np.arange(len(centres))
    for d, draw_points in enumerate(points):
        if d == reference:
            continue
        labels = np.full(len(draw_points), -1)
        if centres and len(draw_points):
            difference = draw_points[:, None].astype(np.float64) - np.asarray(centres)[None]
            with np.errstate(over="ignore", invalid="ignore"):
                cost = np.sqrt(np.mean(difference**2, axis=-1))
            # A point whose predicted observation overflows matches nothing: its own cluster.
            cost = np.where(np.isfinite(cost), cost, np.inf)
            rows, cols = scipy.optimize.linear_sum_assignment(np.where(cost < np.inf, cost, 1e300))
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] <= match_tol:
                    labels[r] = c
                    sizes[c] += 1
                    centres[c] = centres[c] + (draw_points[r] - centres[c]) / sizes[c]
        for r in np.flatnonzero(labels < 0):
            labels[r] = len(centres)
            centres.append(draw_points[r])
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
