import numpy as np
import pytest
import xarray as xr

from probdyn import DataError
from probdyn.data import validate


def spikes_dataset(values, dt=0.01, **extra):
    values = np.asarray(values)
    ds = xr.Dataset(
        {"spikes": (("trial", "time", "neuron"), values), **extra},
        coords={"time": np.arange(values.shape[1]) * dt},
        attrs={"dt": dt},
    )
    return ds


def good_counts():
    return np.random.default_rng(0).poisson(2.0, size=(3, 5, 4))


def test_valid_data_is_returned_unchanged():
    ds = spikes_dataset(good_counts())
    copy = ds.copy(deep=True)
    assert validate(ds, "poisson") is ds
    xr.testing.assert_identical(ds, copy)


def test_negative_count_names_variable_and_index():
    counts = good_counts()
    counts[1, 3, 2] = -1
    with pytest.raises(
        DataError, match=r"spikes\[trial=1, time=3, neuron=2\] = .*-1.*non-negative"
    ):
        validate(spikes_dataset(counts), "poisson")


def test_fractional_count():
    counts = good_counts().astype(float)
    counts[2, 0, 1] = 1.5
    with pytest.raises(
        DataError, match=r"spikes\[trial=2, time=0, neuron=1\] = .*1\.5.*whole numbers"
    ):
        validate(spikes_dataset(counts), "poisson")


def test_infinite_value():
    y = np.zeros((2, 4, 3))
    y[0, 1, 2] = np.inf
    ds = xr.Dataset({"y": (("trial", "time", "neuron"), y)}, attrs={"dt": 1.0})
    with pytest.raises(DataError, match=r"y\[trial=0, time=1, neuron=2\] = .*inf.*finite"):
        validate(ds, "gaussian")


def test_wrong_dims():
    ds = xr.Dataset({"spikes": (("trial", "neuron", "time"), good_counts())}, attrs={"dt": 0.01})
    with pytest.raises(
        DataError,
        match=r"spikes has dims \('trial', 'neuron', 'time'\); expected \('trial', 'time', 'neuron'\)",
    ):
        validate(ds, "poisson")


def test_missing_observation_variable():
    ds = spikes_dataset(good_counts())
    with pytest.raises(DataError, match="reads the variable 'y'.*has \\['spikes'\\]"):
        validate(ds, "gaussian")


def test_empty_dimension():
    ds = spikes_dataset(np.zeros((0, 5, 4), dtype=int))
    with pytest.raises(DataError, match="spikes has an empty 'trial' dimension"):
        validate(ds, "poisson")


def test_empty_trial_all_missing():
    y = np.random.default_rng(0).normal(size=(3, 4, 2))
    y[1] = np.nan
    ds = xr.Dataset({"y": (("trial", "time", "neuron"), y)}, attrs={"dt": 1.0})
    with pytest.raises(DataError, match=r"y\[trial=1\] is missing in every bin"):
        validate(ds, "gaussian")


def test_nan_where_missing_not_allowed():
    y = np.random.default_rng(0).normal(size=(3, 4, 2))
    y[2, 3, 0] = np.nan
    ds = xr.Dataset({"y": (("trial", "time", "neuron"), y)}, attrs={"dt": 1.0})
    validate(ds, "gaussian")  # NaN = missing, allowed by default
    with pytest.raises(DataError, match=r"y\[trial=2, time=3, neuron=0\] = nan: missing values"):
        validate(ds, "gaussian", allow_missing=False)


def test_inconsistent_dt():
    ds = spikes_dataset(good_counts(), dt=0.01)
    ds.attrs["dt"] = 0.02
    with pytest.raises(DataError, match=r"time\[1\] - time\[0\] = 0\.01 but attrs\['dt'\] = 0\.02"):
        validate(ds, "poisson")


@pytest.mark.parametrize("dt", [None, -0.01, float("nan")])
def test_missing_or_bad_dt(dt):
    ds = spikes_dataset(good_counts())
    if dt is None:
        del ds.attrs["dt"]
        match = "no attrs\\['dt'\\]"
    else:
        ds.attrs["dt"] = dt
        match = "expected a positive, finite bin width"
    with pytest.raises(DataError, match=match):
        validate(ds, "poisson")


def test_negative_symbol_and_non_integer_symbols():
    symbols = np.zeros((2, 6), dtype=int)
    symbols[1, 4] = -2
    ds = xr.Dataset({"symbols": (("trial", "time"), symbols)}, attrs={"dt": 1.0})
    with pytest.raises(DataError, match=r"symbols\[trial=1, time=4\] = .*-2"):
        validate(ds, "categorical")
    ds = xr.Dataset({"symbols": (("trial", "time"), symbols.astype(float))}, attrs={"dt": 1.0})
    with pytest.raises(DataError, match="expected integer symbol indices"):
        validate(ds, "categorical")


def test_bad_inputs_and_unknown_observation():
    inputs = np.zeros((3, 5, 1))
    inputs[0, 2, 0] = np.nan
    ds = spikes_dataset(good_counts(), inputs=(("trial", "time", "input"), inputs))
    with pytest.raises(
        DataError, match=r"inputs\[trial=0, time=2, input=0\] = nan: inputs must be finite"
    ):
        validate(ds, "poisson")
    with pytest.raises(DataError, match="unknown observation model 'gamma'"):
        validate(spikes_dataset(good_counts()), "gamma")
    with pytest.raises(DataError, match="expected an xarray.Dataset, got ndarray"):
        validate(good_counts(), "poisson")
