import h5py
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from probdyn import DataError
from probdyn.data import bin_spike_times, load, load_nlb, load_nwb, save, validate

NWB = "mc_maze_small/sub-Jenkins_ses-small_desc-test_ecephys.nwb"
NLB = "mc_maze_small/mc_maze_small_train.h5"


@pytest.mark.data
def test_load_nwb_shapes_and_counts_against_raw_h5(shared_file):
    path = shared_file(NWB)
    ds = load_nwb(path, bin_size=0.005)
    assert ds["spikes"].dims == ("trial", "time", "neuron")
    assert ds.sizes["trial"] == 100 and ds.sizes["neuron"] == 107
    assert ds.sizes["time"] == 140 and ds.attrs["dt"] == 0.005
    # Independent count with h5py: spikes inside each trial's window [start, start + 140 bins).
    with h5py.File(path, "r") as f:
        times = f["units/spike_times"][:]
        ends = f["units/spike_times_index"][:]
        starts = f["intervals/trials/start_time"][:]
    per_unit = np.split(times, ends[:-1])
    expected = sum(int(((t >= s) & (t < s + 140 * 0.005)).sum()) for t in per_unit for s in starts)
    assert int(ds["spikes"].sum()) == expected
    assert expected > 10_000


@pytest.mark.data
def test_load_nwb_aligned_to_movement(shared_file):
    ds = load_nwb(shared_file(NWB), bin_size=0.01, align="move_onset_time", window=(-0.25, 0.45))
    assert ds.sizes["time"] == 70
    assert np.isclose(ds["time"].values[0], -0.25)
    with pytest.raises(DataError, match="align='go_cue' is not a column"):
        load_nwb(shared_file(NWB), align="go_cue")


def test_load_missing_file():
    with pytest.raises(DataError, match="no file at 'nowhere.nwb'"):
        load_nwb("nowhere.nwb")


@pytest.mark.data
def test_load_nlb(shared_file):
    ds = load_nlb(shared_file(NLB))
    assert ds.sizes == {
        "trial": 75,
        "time": 140,
        "neuron": 142,
        "forward_time": 40,
        "behavior_dim": 2,
    }
    assert int(ds["heldout"].sum()) == 35
    assert ds["spikes"].dtype == np.int64 and ds.attrs["dt"] == 0.005
    heldin = ds["spikes"].sel(neuron=~ds["heldout"])
    with h5py.File(shared_file(NLB), "r") as f:
        np.testing.assert_array_equal(heldin.values, f["train_spikes_heldin"][:])
        np.testing.assert_array_equal(
            ds["spikes_forward"].values[..., 107:], f["train_spikes_heldout_forward"][:]
        )
        np.testing.assert_array_equal(ds["behavior"].values, f["train_behavior"][:])


def test_shipped_recording_is_the_benchmark_file_rebinned():
    from probdyn.data import mc_maze_small, mc_maze_small_path

    with h5py.File(mc_maze_small_path(), "r") as f:
        raw = f["train_spikes_heldin"][:]  # (75, 140, 107) at 5 ms
    ds = mc_maze_small(bin_size=0.02)
    assert ds.sizes == {"trial": 75, "time": 35, "neuron": 107} and ds.attrs["dt"] == 0.02
    # Each 20 ms bin is the sum of its four 5 ms bins, counted by hand.
    np.testing.assert_array_equal(ds["spikes"].values, raw.reshape(75, 35, 4, 107).sum(axis=2))
    np.testing.assert_allclose(ds["time"].values, np.arange(35) * 0.02)
    validate(ds, "poisson")
    every = mc_maze_small(bin_size=0.005, held_in_only=False)
    assert every.sizes["neuron"] == 142 and int(every["heldout"].sum()) == 35
    for bad in (0.0, 0.012, -0.005):
        with pytest.raises(DataError, match="whole multiple of 0.005"):
            mc_maze_small(bin_size=bad)


def test_bin_spike_times_brute_force():
    rng = np.random.default_rng(0)
    spikes = [rng.uniform(0, 10, size=n) for n in (50, 0, 13)]
    starts = np.array([0.5, 3.0, 7.25])
    counts = bin_spike_times(spikes, starts, 8, 0.25)
    for i, s in enumerate(starts):
        for k in range(8):
            for u, t in enumerate(spikes):
                lo, hi = s + k * 0.25, s + (k + 1) * 0.25
                assert counts[i, k, u] == np.sum((t >= lo) & (t < hi))


def datasets():
    shapes = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 3))

    def build(shape, data):
        counts = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 50)))
        y = data.draw(
            hnp.arrays(np.float64, shape, elements=st.floats(-1e6, 1e6) | st.just(np.nan))
        )
        dt = data.draw(st.floats(1e-4, 1.0))
        return xr.Dataset(
            {
                "spikes": (("trial", "time", "neuron"), counts),
                "y_extra": (("trial", "time", "neuron"), y),
                "condition": ("trial", data.draw(hnp.arrays(np.int32, shape[0]))),
            },
            coords={"time": np.arange(shape[1]) * dt, "neuron": [f"u{i}" for i in range(shape[2])]},
            attrs={
                "dt": dt,
                "system": data.draw(
                    st.text(
                        st.characters(exclude_characters="\x00", exclude_categories=["Cs"]),
                        max_size=8,
                    )
                ),
                "seed": 3,
            },
        )

    return st.builds(build, shapes, st.data())


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(datasets())
def test_netcdf_round_trip_is_lossless(tmp_path, ds):
    validate(ds, "poisson")
    path = save(ds, tmp_path / "recording.nc")
    xr.testing.assert_identical(load(path), ds)
    for name in ds.variables:
        assert load(path)[name].dtype == ds[name].dtype


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="use a .nc or .zarr suffix"):
        save(xr.Dataset(attrs={"dt": 1.0}), tmp_path / "x.csv")


def test_save_refuses_text_netcdf_would_cut(tmp_path):
    with pytest.raises(DataError, match="attrs\\['note'\\] of the dataset holds a NUL"):
        save(xr.Dataset(attrs={"dt": 1.0, "note": "a\x00b"}), tmp_path / "x.nc")
    with pytest.raises(DataError, match="attrs\\['system'\\] of the dataset holds '\\\\ud800'"):
        save(xr.Dataset(attrs={"dt": 1.0, "system": "ab\ud800"}), tmp_path / "x.nc")
    assert not (tmp_path / "x.nc").exists()
