r"""Statistics of symbol sequences: what an HMM emulator has to reproduce.

For sequences :math:`s_{n,t}` (trial :math:`n`, time :math:`t`) over :math:`S` symbols:

- ``frequency[a]``: share of bins showing symbol :math:`a`;
- ``transition[a, b]``: :math:`P(s_{t+1} = b \mid s_t = a)`, from all consecutive pairs;
- ``volatility``: share of consecutive pairs whose symbol changes, :math:`P(s_{t+1} \ne s_t)`.

Each comes with a standard error from the spread over trials (the trials are independent; the
bins inside a trial are not), so that two sets of sequences can be said to match "within
sampling error".
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from probdyn.errors import DataError


def _trial_values(symbols: np.ndarray, num_symbols: int) -> dict[str, np.ndarray]:
    """Per-trial counts: symbols (trial, S), pairs (trial, S, S)."""
    one_hot = np.eye(num_symbols)[symbols]
    counts = one_hot.sum(axis=1)
    pairs = np.einsum("nta,ntb->nab", one_hot[:, :-1], one_hot[:, 1:])
    return {"counts": counts, "pairs": pairs}


def _ratio_and_se(
    numerators: np.ndarray, denominators: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""Ratio of sums over trials and its delta-method standard error over trials."""
    n = numerators.shape[0]
    total_num, total_den = numerators.sum(0), denominators.sum(0)
    ratio = np.divide(
        total_num, total_den, out=np.full(total_num.shape, np.nan), where=total_den > 0
    )
    residual = numerators - ratio * denominators
    mean_den = np.where(total_den > 0, total_den / n, np.nan)
    se = np.sqrt(n / max(n - 1, 1) * np.sum(residual**2, axis=0)) / (n * mean_den)
    return ratio, se


def symbol_statistics(symbols, num_symbols: int | None = None) -> xr.Dataset:
    """Frequencies, transition matrix and volatility of ``symbols`` (trial, time), with errors.

    Returns a Dataset with ``frequency`` (symbol), ``transition`` (symbol, next_symbol),
    ``volatility`` (), and ``<name>_se`` for each.
    """
    values = np.asarray(symbols)
    if values.ndim != 2 or values.shape[1] < 2:
        raise DataError(f"symbols have shape {values.shape}; expected (trial, time >= 2)")
    if not np.issubdtype(values.dtype, np.integer) or values.min() < 0:
        raise DataError("symbols must be non-negative integers")
    num_symbols = int(values.max()) + 1 if num_symbols is None else num_symbols
    if values.max() >= num_symbols:
        raise DataError(f"symbol {values.max()} out of range for num_symbols={num_symbols}")
    per_trial = _trial_values(values, num_symbols)
    length = np.full(values.shape[0], float(values.shape[1]))
    frequency, frequency_se = _ratio_and_se(per_trial["counts"], length[:, None])
    leaving = per_trial["pairs"].sum(axis=2, keepdims=True)
    transition, transition_se = _ratio_and_se(
        per_trial["pairs"], np.broadcast_to(leaving, per_trial["pairs"].shape)
    )
    changes = per_trial["pairs"].sum(axis=(1, 2)) - np.trace(per_trial["pairs"], axis1=1, axis2=2)
    volatility, volatility_se = _ratio_and_se(changes, length - 1)
    return xr.Dataset(
        {
            "frequency": ("symbol", frequency),
            "frequency_se": ("symbol", frequency_se),
            "transition": (("symbol", "next_symbol"), transition),
            "transition_se": (("symbol", "next_symbol"), transition_se),
            "volatility": ((), volatility),
            "volatility_se": ((), volatility_se),
        },
        coords={"symbol": np.arange(num_symbols), "next_symbol": np.arange(num_symbols)},
    )
