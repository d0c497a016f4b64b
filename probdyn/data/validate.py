"""Check a recording against probdyn's data convention.

The convention (docs/data.md): one ``xarray.Dataset`` per recording, observations ``spikes``
(counts) or ``y`` (real values) with dims ``("trial", "time", "neuron")``, or ``symbols`` with dims
``("trial", "time")``; a ``time`` coordinate in seconds and the bin width in ``attrs["dt"]``;
optional ``inputs`` ``("trial", "time", "input")``, ``behavior`` ``("trial", "time",
"behavior_dim")`` and ``condition`` ``("trial",)``. NaN in a float observation marks a missing bin;
an optional boolean ``fit_bins`` (dims ``("time",)`` or ``("trial", "time")``) keeps the bins
where it is False out of the likelihood without removing their values (bin-wise
cross-validation; a model that reads past observations as inputs still reads them).

:func:`validate` never changes the data: it returns it unchanged or raises
:class:`probdyn.DataError` naming the variable, the first offending index and what was expected.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from probdyn.errors import DataError

#: Observation model -> the variable it reads. ``"latent"`` (a latent path observed directly, as
#: in drift-diffusion matching) reads real values like ``"gaussian"``.
OBSERVATION_VARIABLES = {
    "poisson": "spikes",
    "gaussian": "y",
    "categorical": "symbols",
    "latent": "y",
}
EXPECTED_DIMS = {
    "spikes": ("trial", "time", "neuron"),
    "y": ("trial", "time", "neuron"),
    "symbols": ("trial", "time"),
    "inputs": ("trial", "time", "input"),
    "behavior": ("trial", "time", "behavior_dim"),
    "condition": ("trial",),
}


def _where(da: xr.DataArray, bad: np.ndarray) -> str:
    """Name the first index at which ``bad`` is true, as ``name[trial=0, time=3]``."""
    index = np.argwhere(bad)[0]
    inside = ", ".join(f"{dim}={int(i)}" for dim, i in zip(da.dims, index, strict=True))
    return f"{da.name}[{inside}] = {np.asarray(da.values)[tuple(index)].item()!r}"


def observation_variable(ds: xr.Dataset, observation: str | None = None) -> str:
    """Return the name of the observed variable for an observation model.

    ``observation`` is ``"poisson"`` (``spikes``), ``"gaussian"`` (``y``), ``"categorical"``
    (``symbols``) or ``None`` (the one observed variable the dataset holds).
    """
    if observation is not None:
        if observation not in OBSERVATION_VARIABLES:
            raise DataError(
                f"unknown observation model {observation!r}; expected one of "
                f"{sorted(OBSERVATION_VARIABLES)}"
            )
        name = OBSERVATION_VARIABLES[observation]
        if name not in ds.data_vars:
            raise DataError(
                f"a {observation} observation model reads the variable {name!r}, which the "
                f"dataset does not have (it has {sorted(map(str, ds.data_vars))})"
            )
        return name
    present = [name for name in ("spikes", "y", "symbols") if name in ds.data_vars]
    if len(present) != 1:
        raise DataError(
            "expected exactly one observed variable among 'spikes', 'y' and 'symbols'; the "
            f"dataset has {present or 'none'} (variables: {sorted(map(str, ds.data_vars))})"
        )
    return present[0]


def _check_dims(da: xr.DataArray) -> None:
    expected = EXPECTED_DIMS[str(da.name)]
    if da.dims != expected:
        raise DataError(f"{da.name} has dims {da.dims}; expected {expected}")
    for dim, size in da.sizes.items():
        if size == 0:
            raise DataError(f"{da.name} has an empty {dim!r} dimension; expected at least one")


def _check_observation(da: xr.DataArray, allow_missing: bool) -> None:
    values = np.asarray(da.values)
    name = str(da.name)
    if name == "symbols":
        if not np.issubdtype(values.dtype, np.integer):
            raise DataError(f"symbols has dtype {values.dtype}; expected integer symbol indices")
        if (values < 0).any():
            raise DataError(f"{_where(da, values < 0)}: symbols must be non-negative integers")
        return
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(
        values.dtype, np.complexfloating
    ):
        raise DataError(f"{name} has dtype {values.dtype}; expected real numbers")
    if np.issubdtype(values.dtype, np.floating):
        infinite = np.isinf(values)
        if infinite.any():
            raise DataError(f"{_where(da, infinite)}: {name} must be finite (NaN marks missing)")
        missing = np.isnan(values)
        if missing.any() and not allow_missing:
            raise DataError(
                f"{_where(da, missing)}: missing values (NaN) are not allowed here; drop or "
                "impute them, or pass allow_missing=True"
            )
        empty = missing.all(axis=tuple(range(1, values.ndim)))
        if empty.any():
            trial = int(np.argmax(empty))
            raise DataError(f"{name}[trial={trial}] is missing in every bin (an empty trial)")
    if name == "spikes":
        observed = np.nan_to_num(values, nan=0.0)
        negative = observed < 0
        if negative.any():
            raise DataError(
                f"{_where(da, negative)}: spike counts must be non-negative integers for a "
                "Poisson observation model"
            )
        fractional = observed != np.round(observed)
        if fractional.any():
            raise DataError(
                f"{_where(da, fractional)}: spike counts must be whole numbers for a Poisson "
                "observation model"
            )


def _check_fit_bins(da: xr.DataArray) -> None:
    if da.dims not in (("time",), ("trial", "time")):
        raise DataError(f"fit_bins has dims {da.dims}; expected ('time',) or ('trial', 'time')")
    if da.dtype != bool:
        raise DataError(f"fit_bins has dtype {da.dtype}; expected bool (True: a fitted bin)")
    if not bool(da.any()):
        raise DataError("fit_bins is False everywhere: no bin is left to fit")


def _check_time(ds: xr.Dataset) -> None:
    if "dt" not in ds.attrs:
        raise DataError("the dataset has no attrs['dt']; expected the bin width in seconds")
    dt = ds.attrs["dt"]
    if not np.isscalar(dt) or not np.isfinite(dt) or dt <= 0:
        raise DataError(f"attrs['dt'] = {dt!r}; expected a positive, finite bin width in seconds")
    if "time" in ds.coords and ds.sizes.get("time", 0) > 1:
        steps = np.diff(np.asarray(ds["time"].values, dtype=float))
        mismatched = ~np.isclose(steps, dt, rtol=1e-6, atol=1e-12)
        if mismatched.any():
            index = int(np.argmax(mismatched))
            raise DataError(
                f"time[{index + 1}] - time[{index}] = {steps[index].item()!r} but "
                f"attrs['dt'] = {dt!r}; expected evenly spaced bins of width dt"
            )


def validate(
    ds: xr.Dataset, observation: str | None = None, *, allow_missing: bool = True
) -> xr.Dataset:
    """Check ``ds`` against the data convention and return it unchanged.

    Parameters
    ----------
    ds
        The recording.
    observation
        ``"poisson"``, ``"gaussian"``, ``"categorical"`` or ``None`` (infer from the variables).
    allow_missing
        Whether NaN (missing bins) may appear in float observations.

    Raises
    ------
    probdyn.DataError
        Naming the variable, the first offending index and the expectation: negative or
        fractional counts, infinite values, NaN where missing values are not allowed, wrong or
        missing dims, empty dimensions or trials, a bad or inconsistent ``dt``, non-finite inputs.
        (Sizes of shared dims agree by construction of an xarray.Dataset.)

    """
    if not isinstance(ds, xr.Dataset):
        raise DataError(f"expected an xarray.Dataset, got {type(ds).__name__}")
    name = observation_variable(ds, observation)
    _check_dims(ds[name])
    _check_observation(ds[name], allow_missing)
    _check_time(ds)
    if "fit_bins" in ds.data_vars:
        _check_fit_bins(ds["fit_bins"])
    for extra in ("inputs", "behavior", "condition"):
        if extra in ds.data_vars:
            _check_dims(ds[extra])
            if extra == "inputs":
                values = np.asarray(ds[extra].values, dtype=float)
                if not np.isfinite(values).all():
                    raise DataError(
                        f"{_where(ds[extra], ~np.isfinite(values))}: inputs must be finite"
                    )
    return ds
