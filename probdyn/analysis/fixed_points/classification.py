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


def growth_rates(eigenvalues, kind: str, xp=np):
    r"""Growth rates :math:`\sigma = \mathrm{Re}\,\lambda` (flows) or :math:`\log|\lambda|` (maps).

    ``xp`` is the array module (``numpy``, or ``jax.numpy`` inside a traced function); a map's
    zero eigenvalue grows at :math:`-\infty`.
    """
    if kind == "flow":
        return eigenvalues.real
    with np.errstate(divide="ignore"):
        return xp.log(xp.abs(eigenvalues))


def class_codes(stable, unstable, rotating, marginal) -> np.ndarray:
    """Integer codes (index into :data:`CLASSES`) from the four properties of each point.

    Neither stable nor unstable is a saddle; stable and unstable points rotating are spirals,
    else nodes; marginal overrides the rest.
    """
    code = np.full(np.shape(stable), CLASSES.index("saddle"))
    code = np.where(stable & ~rotating, CLASSES.index("stable node"), code)
    code = np.where(stable & rotating, CLASSES.index("stable spiral"), code)
    code = np.where(unstable & ~rotating, CLASSES.index("unstable node"), code)
    code = np.where(unstable & rotating, CLASSES.index("unstable spiral"), code)
    return np.where(marginal, CLASSES.index("marginal"), code)


def classify(eigenvalues: np.ndarray, kind: str, marginal_tol: float) -> np.ndarray:
    """Integer class codes (index into :data:`CLASSES`) from eigenvalues (..., eigen)."""
    eigenvalues = np.asarray(eigenvalues)
    growth = growth_rates(eigenvalues, kind)
    return class_codes(
        stable=np.all(growth < 0, axis=-1),
        unstable=np.all(growth > 0, axis=-1),
        rotating=np.any(np.abs(eigenvalues.imag) > marginal_tol, axis=-1),
        marginal=np.any(np.abs(growth) <= marginal_tol, axis=-1),
    )
