import subprocess
import sys

import pandas as pd
import pytest
import xarray as xr

from probdyn.app.cli import main


@pytest.mark.slow
def test_quick_demo_writes_report_and_names_the_winner(tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "probdyn.app.cli",
            "demo",
            "--quick",
            "--no-progress",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "winner: LDS(latent_dim=" in run.stdout
    page = (out / "report.html").read_text()
    assert page.count("<img") >= 3 and "<table" in page
    assert (out / "winner.nc").exists() and (out / "comparison.csv").exists()
    # The generating dynamics (a damped rotation) have one fixed point, a stable spiral.
    assert "point 0: stable spiral" in run.stdout and "Fixed points" in page
    # Three families ranked; fixed points shown for each family with continuous dynamics.
    for family in ("LDS(", "SDERNN(", "HMM("):
        assert family in run.stdout
    assert "fixed points of all draws of SDERNN" in page
    tree = xr.open_datatree(out / "winner.nc")
    assert tree["fixed_points"]["exists"].values.all()
    # The saved run carries its model: fixed points again from the file, into a new file.
    assert main(["fixed-points", str(out / "winner.nc"), "--num-draws", "50"]) == 0
    again = xr.open_datatree(out / "winner-fixed-points.nc")
    assert again["fixed_points"].sizes["draw"] == 50
    assert xr.open_datatree(out / "winner.nc")["fixed_points"].sizes["draw"] == 200
    # Every candidate was saved as a run: compare them and report one, from the files alone.
    runs = sorted(str(p) for p in (out / "runs").glob("*.nc"))
    assert len(runs) == 3
    table, page_path = tmp_path / "table.csv", tmp_path / "comparison.html"
    assert main(["compare", *runs, "--out", str(table), "--report", str(page_path)]) == 0
    saved = pd.read_csv(table)
    assert saved["model"].iloc[0] == "LDS(latent_dim=2)" and len(saved) == 3
    assert saved["elpd_loo"].notna().all() and "<img" in page_path.read_text()
    assert main(["report", str(out / "runs" / "SDERNN_num_units_8_rank_2.nc")]) == 0
    run_page = (out / "runs" / "SDERNN_num_units_8_rank_2-report.html").read_text()
    for heading in ("Data and fit", "Fit diagnostics", "Evidence", "Fixed points"):
        assert f"<h2>{heading}</h2>" in run_page
    # Each trial shown twice, labelled for what it is: the fit given it, the fresh-path check.
    assert "the fit given the trial&#x27;s own data" in run_page
    assert "new data from fresh latent paths" in run_page


def test_user_errors_are_one_line_and_nonzero(capsys, monkeypatch):
    import probdyn.app.demo

    def bad_demo(*args, **kwargs):
        from probdyn import DataError

        raise DataError("spikes[trial=0, time=1, neuron=2] = -1: spike counts must be non-negative")

    monkeypatch.setattr(probdyn.app.demo, "run_demo", bad_demo)
    assert main(["demo", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("probdyn: error: spikes[trial=0")


def test_fixed_points_command_errors_name_the_problem(tmp_path, capsys):
    cases = {
        "no run file": [str(tmp_path / "missing.nc")],
        "not a run saved by probdyn": [str(tmp_path / "plain.nc")],
        "is the run itself": [str(tmp_path / "plain.nc"), "--out", str(tmp_path / "plain.nc")],
    }
    xr.Dataset({"x": ("t", [1.0, 2.0])}).to_netcdf(tmp_path / "plain.nc")
    (tmp_path / "notes.txt").write_text("not a run")
    for command in ("fixed-points", "report", "compare"):
        for expected, argv in cases.items():
            if command == "compare" and "--out" in argv:
                continue
            assert main([command, *argv]) == 2
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and expected in err, (command, err)
        assert main([command, str(tmp_path / "notes.txt")]) == 2
        assert "is not a netCDF run file" in capsys.readouterr().err


def test_the_real_recording_demo_fits_spike_count_models_to_the_shipped_file():
    from probdyn.app.demo import candidate_models, demo_recording
    from probdyn.errors import ConfigError

    ds = demo_recording("mc_maze_small", seed=0, quick=True)
    assert ds.sizes == {"trial": 75, "time": 35, "neuron": 107}
    candidates = candidate_models(quick=True, recording="mc_maze_small")
    assert {type(m).__name__ for m in candidates.values()} == {"LDS", "SDERNN", "HMM"}
    assert {m.observation for m in candidates.values()} == {"poisson"}
    for model in candidates.values():
        model.prepare(ds)  # every candidate reads the recording as it is
    assert len(candidate_models(quick=False, recording="mc_maze_small")) == 5
    with pytest.raises(ConfigError, match="recording = 'mars'"):
        demo_recording("mars", seed=0, quick=True)
