"""Devices: sharded runs against single-device runs, several processes, hot-loop hygiene.

The sharded checks need 4 host devices, which JAX fixes when it starts: they run in a process
of their own (tests/sharded/check_sharding.py), which also starts the two-process CLI run.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import chex
import numpy as np
import pytest
from lds_cases import ou_dataset, ou_model
from test_svi_nuts import small_dataset

from probdyn.errors import ConfigError
from probdyn.inference import DiagnosticWarning, log_evidence, mcmc, nuts, svi
from probdyn.models import LDS
from probdyn.runtime import devices, distributed

REPO = Path(__file__).resolve().parents[1]
FOUR_DEVICES = "--xla_force_host_platform_device_count=4"


@pytest.mark.slow
def test_sharded_runs_and_two_processes_agree_with_single_device_runs():
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PROBDYN_")}
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            str(REPO / "tests" / "sharded" / "check_sharding.py"),
        ],
        cwd=REPO,
        env={**environment, "PYTHONPATH": str(REPO / "tests"), "XLA_FLAGS": FOUR_DEVICES},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    assert "7 passed" in check.stdout, check.stdout[-2000:]


def test_a_cached_sampler_draws_what_a_fresh_one_draws():
    data = ou_dataset(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DiagnosticWarning)
        options = dict(num_warmup=100, num_samples=100, num_chains=2, seed=7, progress=False)
        mcmc._samplers.clear()
        fresh = nuts(ou_model(), data, **options)
        cached = nuts(ou_model(), data, **options)
        assert len(mcmc._samplers) == 1
        other_data = nuts(ou_model(), ou_dataset(4), **options)
        assert len(mcmc._samplers) == 1  # same shapes: the compiled sampler is reused
    np.testing.assert_array_equal(cached.samples["A"], fresh.samples["A"])
    assert not np.array_equal(other_data.samples["A"], fresh.samples["A"])


def test_no_implicit_transfer_in_the_hot_loops(monkeypatch, tmp_path):
    monkeypatch.setattr(devices, "HOT_LOOP_TRANSFER_GUARD", "disallow")
    svi(
        LDS(latent_dim=1),
        small_dataset(),
        num_steps=40,
        seed=0,
        checkpoint=tmp_path / "c",
        checkpoint_every=10,
        curriculum=(5, 20),
        progress=False,
    )
    log_evidence(ou_model(), ou_dataset(0), method="smc", seed=0, num_particles=40)


def test_svi_chunks_are_traced_once(monkeypatch):
    svi_module = sys.modules["probdyn.inference.svi"]  # the module, not the function
    scan_steps = svi_module._scan_steps
    monkeypatch.setattr(
        svi_module, "_scan_steps", lambda *a: chex.assert_max_traces(scan_steps(*a), n=1)
    )
    result = svi(
        LDS(latent_dim=1),
        small_dataset(),
        num_steps=90,
        seed=0,
        checkpoint_every=30,
        progress=False,
    )
    assert len(result.losses) == 90


def test_bad_device_requests_name_the_problem():
    with pytest.raises(ConfigError, match="num_devices = 0"):
        devices.mesh(8, num_devices=0)
    with pytest.raises(ConfigError, match="number of processes"):
        distributed.initialize("localhost:1234", None, None)
    with pytest.raises(ConfigError, match="0 <= id"):
        distributed.initialize("localhost:1234", 2, 2)
    with pytest.raises(ConfigError, match="host:port"):
        distributed.initialize("localhost", 2, 0)
    assert distributed.initialize() is False  # no coordinator anywhere: one process
