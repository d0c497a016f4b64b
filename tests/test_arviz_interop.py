"""Runs written by `probdyn fit` are ArviZ's own: its functions and plots read them as they are."""

import textwrap

import matplotlib
import numpy as np
import pytest
import xarray as xr

matplotlib.use("Agg")

from probdyn.app.cli import main

TRIAL_IDS = np.array([101, 103, 104, 110, 111, 115, 120, 121])
UNIT_IDS = np.array([1011, 1022, 1031])


def _recording(path):
    """A rotating 2-D latent read by 3 channels, with the labels a real recording has."""
    rng = np.random.default_rng(0)
    T, angle = 40, 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    x = np.zeros((len(TRIAL_IDS), T, 2))
    x[:, 0] = rng.normal(size=(len(TRIAL_IDS), 2))
    for t in range(1, T):
        x[:, t] = 0.97 * x[:, t - 1] @ rotation.T + 0.1 * rng.normal(size=(len(TRIAL_IDS), 2))
    y = x @ rng.normal(size=(2, 3)) + 0.2 * rng.normal(size=(len(TRIAL_IDS), T, 3))
    xr.Dataset(
        {"y": (("trial", "time", "neuron"), y)},
        coords={
            "trial": TRIAL_IDS,
            "time": -0.2 + 0.01 * np.arange(T),
            "neuron": UNIT_IDS,
            "area": ("neuron", np.array(["M1", "PMd", "M1"])),
            "condition": ("trial", np.arange(len(TRIAL_IDS)) % 3),
        },
        attrs={"dt": 0.01},
    ).to_netcdf(path)


def _fit(tmp_path, method):
    recording = tmp_path / "recording.nc"
    _recording(recording)
    settings = (
        "num_warmup = 150\nnum_samples = 100\nnum_chains = 2"
        if method == "nuts"
        else "num_steps = 400\nnum_draws = 200"
    )
    config = tmp_path / f"{method}.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            seed = 1
            out = "{tmp_path / method}"
            [data]
            source = "netcdf"
            path = "{recording}"
            [model]
            family = "LDS"
            [model.hyperparameters]
            latent_dim = 2
            [inference]
            method = "{method}"
            evidence = "none"
            """
        ).replace(f'method = "{method}"', f'method = "{method}"\n{settings}')
    )
    assert main(["fit", str(config), "--no-progress"]) == 0
    return xr.open_datatree(tmp_path / method / "run.nc").load()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")  # ArviZ's own warnings (Pareto k, few draws) are not ours
@pytest.mark.parametrize("method", ["nuts", "svi"])
def test_arviz_reads_a_fit_run_as_its_own(tmp_path, method):
    import arviz as az

    tree = _fit(tmp_path, method)
    # The recording's labels: trial and unit ids, times, unit and trial columns.
    observed = tree["observed_data"]
    np.testing.assert_array_equal(observed["trial"], TRIAL_IDS)
    np.testing.assert_array_equal(observed["neuron"], UNIT_IDS)
    np.testing.assert_allclose(observed["time"][:2], [-0.2, -0.19])
    assert list(observed["area"].values) == ["M1", "PMd", "M1"]
    np.testing.assert_array_equal(tree["posterior"]["C"]["neuron"], UNIT_IDS)
    np.testing.assert_array_equal(tree["log_likelihood"]["y_trial"]["trial"], TRIAL_IDS)
    # Pointwise terms sum to the per-trial log likelihood that model comparison uses.
    pointwise = tree["log_likelihood"]["y"].sum(("time", "neuron"))
    np.testing.assert_allclose(pointwise, tree["log_likelihood"]["y_trial"], rtol=1e-4)

    assert "mean" in az.summary(tree).columns
    loo = az.loo(tree, var_name="y_trial")
    assert np.isfinite(float(loo.elpd))
    pit = az.loo_pit(tree)["y"]
    assert pit.shape == observed["y"].shape
    assert 0.0 <= float(pit.min()) and float(pit.max()) <= 1.0 + 1e-12  # ArviZ's own rounding
    for group in ("prior", "prior_predictive"):
        assert group in tree.children
    az.plot_ppc_dist(tree)
    az.plot_loo_pit(tree)
    az.plot_prior_posterior(tree, var_names=["A"])
    if method == "nuts":
        stats = tree["sample_stats"]
        for name in ("lp", "energy", "acceptance_rate", "step_size", "tree_depth", "diverging"):
            assert name in stats, name
        assert np.all(az.bfmi(tree)["energy"].values > 0)
        az.plot_energy(tree)
