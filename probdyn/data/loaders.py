"""Readers and writers for recordings: NWB files, Neural Latents Benchmark tensors, netCDF/zarr.

Every reader returns a Dataset that follows the data convention (see :mod:`.validate`) and
passes :func:`~probdyn.data.validate`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import h5py
import numpy as np
import xarray as xr

from probdyn.data.validate import validate
from probdyn.errors import DataError
from probdyn.schema import Positive


def _require_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"no file at {str(path)!r}")
    return path


def bin_spike_times(
    spike_times: list[np.ndarray], window_starts: np.ndarray, num_bins: int, bin_size: float
) -> np.ndarray:
    """Count spikes in ``num_bins`` half-open bins ``[s + k w, s + (k + 1) w)`` after each start.

    Returns integer counts with shape ``(trial, time, neuron)``. Spike times are sorted per unit
    first, so unsorted input is counted correctly.
    """
    offsets = np.arange(num_bins + 1) * bin_size
    edges = window_starts[:, None] + offsets[None, :]
    counts = np.empty((len(window_starts), num_bins, len(spike_times)), dtype=np.int64)
    for unit, times in enumerate(spike_times):
        positions = np.searchsorted(np.sort(times), edges, side="left")
        counts[:, :, unit] = np.diff(positions, axis=1)
    return counts


def load_nwb(
    path: str | os.PathLike,
    *,
    bin_size: Positive = 0.005,
    align: str | None = None,
    window: tuple[float, float] | None = None,
) -> xr.Dataset:
    """Bin the spike times of an NWB file's units by its trials.

    Parameters
    ----------
    path
        An NWB file with a ``units`` table (spike times) and ``intervals/trials``.
    bin_size
        Bin width in seconds.
    align
        A column of the trials table to align to (e.g. ``"move_onset_time"``); ``None`` aligns
        to ``start_time``.
    window
        ``(before, after)`` in seconds relative to the alignment time. By default the widest
        window that lies inside every trial, ``[max_i(start_i - a_i), min_i(stop_i - a_i))``.

    Returns
    -------
    xarray.Dataset
        ``spikes`` (trial, time, neuron) as integer counts, ``time`` in seconds relative to the
        alignment, ``neuron`` the unit ids and ``trial`` the trial ids of the file (with every
        unit or trial column of single numbers, booleans or strings, e.g. ``heldout`` or
        ``maze_id``, as a coordinate along ``neuron`` or ``trial``),
        ``trial_start``/``alignment_time`` per trial, ``attrs["dt"] = bin_size``.

    """
    from pynwb import NWBHDF5IO

    path = _require_file(path)
    if not bin_size > 0:
        raise DataError(f"bin_size = {bin_size!r}; expected a positive bin width in seconds")
    with NWBHDF5IO(str(path), mode="r", load_namespaces=True) as io:
        nwb = io.read()
        if nwb.units is None or nwb.trials is None:
            raise DataError(f"{path.name} has no units table or no trials table; both are needed")
        units = nwb.units.to_dataframe()
        trials = nwb.trials.to_dataframe()
    if align is not None and align not in trials.columns:
        raise DataError(
            f"align={align!r} is not a column of the trials table (columns: {list(trials.columns)})"
        )
    starts = trials["start_time"].to_numpy(float)
    stops = trials["stop_time"].to_numpy(float)
    anchors = starts if align is None else trials[align].to_numpy(float)
    if window is None:
        window = (float(np.max(starts - anchors)), float(np.min(stops - anchors)))
    before, after = window
    num_bins = int(np.floor((after - before) / bin_size + 1e-9))
    if num_bins < 1:
        raise DataError(f"window {window!r} holds no bin of width {bin_size}")
    spike_times = [np.asarray(t, dtype=float) for t in units["spike_times"]]
    counts = bin_spike_times(spike_times, anchors + before, num_bins, bin_size)
    labels = {
        **{name: ("neuron", values) for name, values in _scalar_columns(units).items()},
        **{name: ("trial", values) for name, values in _scalar_columns(trials).items()},
    }
    ds = xr.Dataset(
        {
            "spikes": (("trial", "time", "neuron"), counts),
            "trial_start": ("trial", starts),
            "alignment_time": ("trial", anchors),
        },
        coords={
            "trial": trials.index.to_numpy(),
            "time": before + np.arange(num_bins) * bin_size,
            "neuron": units.index.to_numpy(),
            **labels,
        },
        attrs={"dt": float(bin_size), "source": str(path.name), "align": align or "start_time"},
    )
    return validate(ds, "poisson")


def _scalar_columns(table) -> dict[str, np.ndarray]:
    """The columns of an NWB table whose entries are single numbers, booleans or strings."""
    columns = {}
    for column in table.columns:
        values = table[column].to_numpy()
        if values.dtype.kind in "biuf":
            columns[str(column)] = values
        elif values.dtype.kind == "O" and all(isinstance(v, str) for v in values):
            columns[str(column)] = values.astype(str)
    return columns


_NLB_KEY = re.compile(r"^(?P<split>[a-z]+)_(?P<what>spikes|behavior)(?P<rest>.*)$")


def load_nlb(path: str | os.PathLike, *, split: str | None = None, bin_size: Positive = 0.005):
    """Read a Neural Latents Benchmark tensor file (``{split}_spikes_heldin`` and friends).

    Held-in and held-out neurons are stacked into one ``spikes`` variable with a boolean
    ``heldout`` neuron coordinate (select the held-in ones with ``ds.sel(neuron=~ds.heldout)``);
    the bins after each trial become ``spikes_forward`` (trial, forward_time, neuron); hand
    velocity becomes ``behavior`` (trial, time, behavior_dim). Counts are checked to be whole
    numbers and stored as integers; ``time`` starts at 0 at the first bin.

    Parameters
    ----------
    path
        The h5 file.
    split
        The prefix of the tensors (``"train"``, ``"eval"``, ...); needed only when the file holds
        more than one.
    bin_size
        Bin width in seconds (the benchmark's tensors use 5 ms).

    """
    path = _require_file(path)
    with h5py.File(path, "r") as file:
        tensors = {
            key: np.asarray(file[key]) for key in file if isinstance(file[key], h5py.Dataset)
        }
    splits = sorted({m["split"] for key in tensors if (m := _NLB_KEY.match(key))})
    if split is None:
        if len(splits) != 1:
            raise DataError(f"{path.name} holds the splits {splits}; pass split= to choose one")
        split = splits[0]
    heldin_key = f"{split}_spikes_heldin"
    if heldin_key not in tensors:
        raise DataError(f"{path.name} has no {heldin_key!r} (it has {sorted(tensors)})")

    def counts(key: str) -> np.ndarray:
        values = tensors[key]
        if (
            not np.isfinite(values).all()
            or (values < 0).any()
            or (values != np.round(values)).any()
        ):
            raise DataError(f"{key} in {path.name} holds values that are not spike counts")
        return values.astype(np.int64)

    heldin = counts(heldin_key)
    blocks, heldout_flags = [heldin], [np.zeros(heldin.shape[-1], bool)]
    if f"{split}_spikes_heldout" in tensors:
        heldout = counts(f"{split}_spikes_heldout")
        blocks.append(heldout)
        heldout_flags.append(np.ones(heldout.shape[-1], bool))
    num_trials, num_timesteps, _ = heldin.shape
    variables = {"spikes": (("trial", "time", "neuron"), np.concatenate(blocks, axis=-1))}
    forward = [f"{split}_spikes_heldin_forward", f"{split}_spikes_heldout_forward"]
    if all(key in tensors for key in forward[: len(blocks)]):
        stacked = np.concatenate([counts(key) for key in forward[: len(blocks)]], axis=-1)
        variables["spikes_forward"] = (("trial", "forward_time", "neuron"), stacked)
    if f"{split}_behavior" in tensors:
        variables["behavior"] = (("trial", "time", "behavior_dim"), tensors[f"{split}_behavior"])
    ds = xr.Dataset(
        variables,
        coords={
            "trial": np.arange(num_trials),
            "time": np.arange(num_timesteps) * bin_size,
            "heldout": ("neuron", np.concatenate(heldout_flags)),
        },
        attrs={"dt": float(bin_size), "source": str(path.name), "split": split},
    )
    if "spikes_forward" in ds:
        forward_bins = ds.sizes["forward_time"]
        ds = ds.assign_coords(forward_time=(num_timesteps + np.arange(forward_bins)) * bin_size)
    return validate(ds, "poisson")


def save(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write a Dataset to netCDF (``.nc``) or zarr (``.zarr``, needs the ``zarr`` package).

    The round trip through :func:`load` returns an identical Dataset (values, dtypes, NaNs,
    coordinates and attrs).
    """
    path = Path(path)
    # netCDF stores text as UTF-8 C strings: a NUL character would silently cut the text short
    # and a lone surrogate (valid in a Python str, not in UTF-8) cannot be written at all.
    for owner, attrs in [("the dataset", ds.attrs)] + [
        (f"variable {n!r}", ds[n].attrs) for n in ds.variables
    ]:
        for key, value in attrs.items():
            if not isinstance(value, str):
                continue
            if "\x00" in value:
                raise DataError(
                    f"attrs[{key!r}] of {owner} holds a NUL character, which netCDF cannot store"
                )
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:
                raise DataError(
                    f"attrs[{key!r}] of {owner} holds {value[err.start]!r} at position "
                    f"{err.start}, a lone surrogate that UTF-8 (and so netCDF) cannot store"
                ) from None
    if path.suffix == ".zarr":
        ds.to_zarr(path, mode="w")
    elif path.suffix in (".nc", ".netcdf", ".h5"):
        ds.to_netcdf(path, engine="netcdf4")
    else:
        raise DataError(f"cannot tell the format of {str(path)!r}; use a .nc or .zarr suffix")
    return path


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a Dataset written by :func:`save` fully into memory (the file is closed after)."""
    path = _require_file(path)
    if path.suffix == ".zarr":
        return xr.open_zarr(path).load()
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()
