"""Sharded runs against single-device runs; run on 4 CPU devices by tests/test_devices.py.

Not collected by the main suite (the name does not start with ``test_``): JAX fixes the number
of host devices when it starts, so these need a process of their own with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

import os
import socket
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from lds_cases import ou_dataset, ou_exact, ou_model
from test_svi_nuts import small_dataset

from probdyn.app.cli import main
from probdyn.inference import DiagnosticWarning, log_evidence, nuts, svi
from probdyn.models import LDS
from probdyn.runtime import devices

pytestmark = pytest.mark.skipif(jax.device_count() != 4, reason="needs 4 (host) devices")


def test_mesh_takes_the_most_devices_that_divide_the_batch():
    assert devices.mesh(8).size == 4
    assert devices.mesh(6).size == 3
    assert devices.mesh(7).size == 1
    assert devices.mesh(8, num_devices=2).size == 2


def test_map_over_mesh_gives_each_device_its_own_block():
    mesh = devices.mesh(8)
    where = devices.map_over_mesh(lambda x: x * 0 + jax.lax.axis_index(devices.AXIS), mesh)
    np.testing.assert_array_equal(np.asarray(where(jnp.zeros(8, int))), [0, 0, 1, 1, 2, 2, 3, 3])


def test_sharded_trials_give_the_single_device_fit():
    data = small_dataset(num_trials=8)
    one = svi(LDS(latent_dim=1), data, num_steps=100, seed=1, num_devices=1, progress=False)
    four = svi(LDS(latent_dim=1), data, num_steps=100, seed=1, progress=False)
    # Only the order of the sums over trials differs (an all-reduce across devices).
    np.testing.assert_allclose(four.losses, one.losses, rtol=1e-9)
    for name in one.params:
        np.testing.assert_allclose(four.params[name], one.params[name], rtol=1e-7, atol=1e-9)


def test_parallel_chains_sample_the_posterior_of_vectorized_ones():
    data = ou_dataset(0)
    draws = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DiagnosticWarning)
        for method in ("vectorized", "parallel"):
            result = nuts(
                ou_model(),
                data,
                num_warmup=200,
                num_samples=500,
                num_chains=8,
                seed=2,
                chain_method=method,
                progress=False,
            )
            assert result.diagnostics()["divergences"] == 0
            draws[method] = result.samples["A"].reshape(8, -1)
    _, grid, cdf = ou_exact(data)
    truth = np.interp([0.1, 0.5, 0.9], cdf, grid)
    for method, a in draws.items():
        # The pooled draws against the exact posterior quantiles (quadrature).
        np.testing.assert_allclose(np.quantile(a, [0.1, 0.5, 0.9]), truth, atol=0.01), method
    # The same chains up to rounding differences: XLA compiles blocks of 2 and of 8 chains
    # differently, and NUTS trajectories amplify them; the first draws agree closely.
    assert draws["parallel"].shape == draws["vectorized"].shape


def test_sharded_particles_give_the_single_device_evidence():
    data = ou_dataset(1)
    exact, _, _ = ou_exact(data)
    options = dict(method="smc", seed=4, num_particles=200, num_repeats=4)
    one = log_evidence(ou_model(), data, num_devices=1, **options)
    four = log_evidence(ou_model(), data, **options)
    assert one.diagnostics["num_devices"] == 1 and four.diagnostics["num_devices"] == 4
    for estimate in (one, four):
        assert abs(estimate.log_evidence - exact) < 4 * estimate.standard_error + 0.02
    # Sums over particles now run across devices in another order; the rounding differences
    # flip an HMC acceptance now and then, so runs differ by far less than their spread.
    per_run = np.subtract(
        four.diagnostics["log_evidence_per_run"], one.diagnostics["log_evidence_per_run"]
    )
    assert np.abs(per_run).max() < 0.1 * np.std(one.diagnostics["log_evidence_per_run"]) + 1e-3


def test_no_implicit_transfer_in_the_sharded_hot_loops(monkeypatch):
    monkeypatch.setattr(devices, "HOT_LOOP_TRANSFER_GUARD", "disallow")
    svi(LDS(latent_dim=1), small_dataset(num_trials=8), num_steps=20, seed=0, progress=False)
    log_evidence(ou_model(), ou_dataset(0), method="smc", seed=0, num_particles=40)


CONFIG = """
seed = 5
out = "{out}"
[data]
source = "simulate"
simulator = "simulate_sde"
[data.options]
system = "ou"
num_trials = 8
num_timesteps = 10
[model]
family = "LDS"
[model.hyperparameters]
latent_dim = 1
[inference]
method = "svi"
num_steps = 10
num_draws = 10
evidence = "none"
"""


def test_two_processes_fit_what_four_devices_of_one_process_fit(tmp_path):
    config = tmp_path / "fit.toml"
    config.write_text(CONFIG.format(out=tmp_path / "single"))
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    environment = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_ENABLE_X64": "1",  # as this process (tests/conftest.py)
    }
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "probdyn.app.cli",
                "fit",
                str(config),
                "--no-progress",
                "--out",
                str(tmp_path / "joint"),
                "--coordinator",
                f"localhost:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    assert main(["fit", str(config), "--no-progress"]) == 0  # meanwhile, 4 devices here
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    assert "process 0 of 2: 4 devices in all" in outputs[0][0], outputs[0][0]
    assert "fitting" not in outputs[1][0]  # process 1 computes but does not report
    with (
        xr.open_datatree(tmp_path / "single" / "run.nc") as one,
        xr.open_datatree(tmp_path / "joint" / "run.nc") as two,
    ):
        for name in ("A", "b", "C", "d", "initial_chol", "r"):
            np.testing.assert_allclose(
                two.posterior[name].values, one.posterior[name].values, rtol=1e-6, atol=1e-9
            )
