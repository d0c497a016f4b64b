"""The Laplace approximation at the posterior mode (``method="laplace"``)."""

from __future__ import annotations

import math

import numpy as np

from probdyn.inference.density import Density
from probdyn.inference.evidence.result import Evidence, without_free_parameters
from probdyn.inference.mode import find_mode, require_dense_hessian
from probdyn.schema import Count


def laplace(density: Density, key, *, model=None, num_starts: Count = 4) -> Evidence:
    """``method="laplace"``: the Gaussian approximation at the mode."""
    if density.dim == 0:
        return without_free_parameters(density)
    require_dense_hessian(density.dim)  # before the search, not after it
    mode, log_joint, hessian = find_mode(density, key, num_starts=num_starts, with_hessian=True)
    np.negative(hessian, out=hessian)
    sign, log_det = np.linalg.slogdet(hessian)
    if sign <= 0:
        raise FloatingPointError("the Hessian at the mode is not positive definite")
    value = log_joint + 0.5 * density.dim * math.log(2 * math.pi) - 0.5 * log_det
    return Evidence(
        float(value),
        float("nan"),
        "laplace",
        False,
        "not estimated (Gaussian approximation at the mode)",
        0.0,
        0,
        {"mode": {k: np.asarray(v).tolist() for k, v in density.constrain(mode).items()}},
    )
