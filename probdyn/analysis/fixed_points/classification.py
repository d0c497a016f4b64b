"""Stability classes of fixed points from their eigenvalues."""

from __future__ import annotations

import numpy as np

#: Stability classes, in the order of their integer codes in the dataset (-1: no point).
CLASSES = (
    "stable node",
    "stable spiral",
    "unstable node",
    "unstable spiral",
    "saddle",
    "marginal",
)


def classify(eigenvalues: np.ndarray, kind: str, marginal_tol: float) -> np.ndarray:
    """Integer class codes (index into :data:`CLASSES`) from eigenvalues (..., eigen)."""
    eigenvalues = np.asarray(eigenvalues)
    with np.errstate(divide="ignore"):
        growth = eigenvalues.real if kind == "flow" else np.log(np.abs(eigenvalues))
    rotating = np.any(np.abs(eigenvalues.imag) > marginal_tol, axis=-1)
    marginal = np.any(np.abs(growth) <= marginal_tol, axis=-1)
    stable = np.all(growth < 0, axis=-1)
    unstable = np.all(growth > 0, axis=-1)
    code = np.full(growth.shape[:-1], CLASSES.index("saddle"))
    code = np.where(stable & ~rotating, CLASSES.index("stable node"), code)
    code = np.where(stable & rotating, CLASSES.index("stable spiral"), code)
    code = np.where(unstable & ~rotating, CLASSES.index("unstable node"), code)
    code = np.where(unstable & rotating, CLASSES.index("unstable spiral"), code)
    return np.where(marginal, CLASSES.index("marginal"), code)
