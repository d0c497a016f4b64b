"""The benchmark's parts against closed forms, the ``probdyn nlb`` command end to end."""

import json

import h5py
import numpy as np
import pytest
import xarray as xr

from probdyn.analysis.metrics import co_bps
from probdyn.app import nlb
from probdyn.app.cli import main
from probdyn.data import load_nlb
from probdyn.errors import ConfigError, DataError


def test_gaussian_smoothing_keeps_constants_and_matches_convolution_inside():
    rng = np.random.default_rng(0)
    spikes = rng.poisson(1.0, size=(2, 60, 3)).astype(float)
    np.testing.assert_allclose(nlb.gaussian_smooth(np.ones((1, 30, 2)), 3.0), 1.0)
    sigma, half = 2.0, 8
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    expected = np.convolve(spikes[1, :, 2], kernel, mode="valid")
    np.testing.assert_allclose(nlb.gaussian_smooth(spikes, sigma)[1, half:-half, 2], expected)


def test_poisson_glm_without_penalty_is_the_group_mean_mle():
    # One binary feature: the MLE rates are the two group means (closed form).
    rng = np.random.default_rng(1)
    x = np.repeat([0.0, 1.0], 500)[:, None]
    y = rng.poisson(np.where(x[:, 0] > 0, 3.0, 0.5))[:, None].astype(float)
    weights, intercepts = nlb.poisson_glm(x, y, alpha=0.0)
    m0, m1 = y[x[:, 0] == 0].mean(), y[x[:, 0] == 1].mean()
    np.testing.assert_allclose(intercepts[0], np.log(m0), rtol=1e-9)
    np.testing.assert_allclose(weights[0, 0], np.log(m1 / m0), rtol=1e-9)
    shrunk, _ = nlb.poisson_glm(x, y, alpha=1.0)
    assert abs(shrunk[0, 0]) < abs(weights[0, 0])


def write_nlb_files(folder, heldin_eval: int = 5):
    """A toy benchmark: 10 training trials (forward window, behaviour) and 4 evaluation trials."""
    rng = np.random.default_rng(2)
    latent = np.sin(np.linspace(0, 4, 30))[None, :, None] + rng.normal(0, 0.3, (14, 1, 1))
    rates = np.exp(latent * rng.normal(size=(1, 1, 8)))
    spikes = rng.poisson(rates).astype(np.float32)
    train, evaluate = folder / "toy_train.h5", folder / "eval.h5"
    with h5py.File(train, "w") as file:
        file["train_spikes_heldin"] = spikes[:10, :24, :5]
        file["train_spikes_heldout"] = spikes[:10, :24, 5:]
        file["train_spikes_heldin_forward"] = spikes[:10, 24:, :5]
        file["train_spikes_heldout_forward"] = spikes[:10, 24:, 5:]
        file["train_behavior"] = np.repeat(latent[:10, :24], 2, axis=-1).astype(np.float32)
    with h5py.File(evaluate, "w") as file:
        file["eval_spikes_heldin"] = spikes[10:, :24, :heldin_eval]
    return train, evaluate, spikes


TINY = ["--members", "1", "--steps", "6", "--generator", "4", "--factors", "2", "--no-progress"]


def test_nlb_command_writes_the_submission_layout_and_the_band(tmp_path, capsys):
    train, evaluate, _ = write_nlb_files(tmp_path)
    out = tmp_path / "rates.h5"
    args = ["nlb", "--train", str(train), "--eval-input", str(evaluate), "--out", str(out)]
    status = main([*args, *TINY])
    assert status == 0, capsys.readouterr().err
    with h5py.File(out, "r") as file:
        group = file["toy"]
        shapes = {key: group[key].shape for key in group}
        eval_heldout = np.asarray(group["eval_rates_heldout"])
    assert shapes == {
        "train_rates_heldin": (10, 24, 5),
        "train_rates_heldout": (10, 24, 3),
        "eval_rates_heldin": (4, 24, 5),
        "eval_rates_heldout": (4, 24, 3),
        "eval_rates_heldin_forward": (4, 6, 5),
        "eval_rates_heldout_forward": (4, 6, 3),
    }
    assert np.isfinite(eval_heldout).all() and (eval_heldout > 0).all()
    band = xr.load_dataset(out.with_suffix(".band.nc"))
    assert band.rates.shape == (4, 30, 8)
    assert (band.rates_lower <= band.rates_upper).all()
    # The band is of the draws; their mean lies inside it wherever the draws are not all equal.
    np.testing.assert_allclose(band.rates.values[:, :24, 5:], eval_heldout, rtol=1e-6)
    assert "co-bps on the training trials" in capsys.readouterr().out
    assert list((tmp_path / "rates.work" / "submission").glob("member-*.ckpt"))


def test_nlb_cross_validation_prints_every_fold_beside_the_baseline(tmp_path, capsys):
    train, _, _ = write_nlb_files(tmp_path)
    table, report = tmp_path / "cv.json", tmp_path / "cv.html"
    args = ["nlb", "--train", str(train), "--folds", "2", "--table", str(table)]
    args += ["--report", str(report)]
    assert main([*args, "--work", str(tmp_path / "w"), *TINY]) == 0
    printed = capsys.readouterr().out
    assert printed.count("fold ") >= 2 and "mean: co-bps" in printed and "baseline" in printed
    rows = json.loads(table.read_text())["folds"]
    assert [row["trials"] for row in rows] == [5, 5]
    for row in rows:
        for key in ("co_bps", "fp_bps", "velocity_r2", "baseline_co_bps", "baseline_fp_bps"):
            assert np.isfinite(row[key]), key
    page = report.read_text()
    assert "Fixed points of the generator" in page and "90% band" in page


def test_nlb_command_rejects_bad_counts_and_missing_targets(tmp_path, capsys):
    train, evaluate, _ = write_nlb_files(tmp_path)
    args = ["nlb", "--train", str(train), "--eval-input", str(evaluate), "--out", "r.h5"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--members", "0"])
    assert exit_info.value.code == 2
    assert "--members: expected an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["nlb", "--train", str(train)]) == 2
    assert "--eval-input" in capsys.readouterr().err


def test_nlb_command_rejects_an_eval_file_of_another_shape(tmp_path, capsys):
    train, evaluate, _ = write_nlb_files(tmp_path, heldin_eval=4)
    args = ["nlb", "--train", str(train), "--eval-input", str(evaluate)]
    assert main([*args, "--out", str(tmp_path / "r.h5"), "--steps", "5"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "4 held-in neurons" in error and "5" in error
    assert not (tmp_path / "r.h5").exists()


def test_smoothing_baseline_beats_the_null_on_shared_structure(tmp_path):
    train_path, _, spikes = write_nlb_files(tmp_path)
    train = load_nlb(train_path, split="train")
    fitted, _ = nlb.smoothing_baseline(train, train, sigma_bins=2.0)
    assert co_bps(spikes[:10, :24, 5:], fitted) > 0
    with pytest.raises(Exception, match="held-out neurons"):
        nlb.build_model(train.sel(neuron=~train.heldout), nlb.Settings(), 12)


def test_coarsen_sums_counts_averages_behaviour_and_refuses_ragged_windows(tmp_path):
    train = load_nlb(write_nlb_files(tmp_path)[0], split="train")
    coarse = nlb.coarsen(train, 3)
    assert coarse.sizes["time"] == 8 and coarse.sizes["forward_time"] == 2
    np.testing.assert_array_equal(
        coarse.spikes.values[:, 1], train.spikes.values[:, 3:6].sum(axis=1)
    )
    np.testing.assert_allclose(coarse.behavior.values[:, 0], train.behavior.values[:, :3].mean(1))
    assert coarse.attrs["dt"] == pytest.approx(3 * train.attrs["dt"])
    with pytest.raises(DataError, match="not a multiple of bin_factor=5"):
        nlb.coarsen(train, 5)  # 24 bins are not whole bins of 5


def test_with_forward_appends_the_window_or_missing_bins(tmp_path):
    train = load_nlb(write_nlb_files(tmp_path)[0], split="train")
    joined = nlb.with_forward(train, 6)
    np.testing.assert_array_equal(joined.spikes.values[:, 24:], train.spikes_forward.values)
    blind = nlb.with_forward(nlb.heldin_only(train), 6)
    assert np.isnan(blind.spikes.values[:, 24:]).all()
    assert np.isnan(blind.spikes.values[:, :24, 5:]).all()
    assert not np.isnan(blind.spikes.values[:, :24, :5]).any()


def test_ridge_decoding_recovers_a_linear_readout_and_r2_is_its_closed_form():
    rng = np.random.default_rng(3)
    rates = rng.gamma(2.0, size=(12, 20, 6))
    weights = rng.normal(size=(6, 2))
    behaviour = rates @ weights + 0.01 * rng.normal(size=(12, 20, 2))
    r2 = nlb.velocity_r2(rates[:8], behaviour[:8], rates[8:], behaviour[8:])
    assert r2 > 0.999
    shuffled = nlb.velocity_r2(rates[:8], behaviour[:8], rates[8:], behaviour[8:][::-1, ::-1])
    assert shuffled < 0.2  # the control: decoding the wrong trials' behaviour fails
    target, prediction = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
    expected = np.mean(
        [
            1
            - np.sum((target[:, j] - prediction[:, j]) ** 2)
            / np.sum((target[:, j] - target[:, j].mean()) ** 2)
            for j in range(2)
        ]
    )
    assert nlb.r2_score(target, prediction) == pytest.approx(expected)


def test_a_member_resumes_from_its_finished_checkpoint(tmp_path):
    train = load_nlb(write_nlb_files(tmp_path)[0], split="train")
    settings = nlb.Settings(generator=4, factors=2, num_steps=6, members=1)
    sequences = nlb.with_forward(train, 6)
    checkpoint = tmp_path / "member.ckpt"
    _, first = nlb.fit_member(
        sequences, settings, 24, seed=1, checkpoint=checkpoint, progress=False
    )
    _, again = nlb.fit_member(
        sequences, settings, 24, seed=1, checkpoint=checkpoint, progress=False
    )
    assert first.resumed_from == 0 and again.resumed_from == 6
    np.testing.assert_array_equal(first.losses, again.losses)


def test_settings_grid_reads_each_choice_by_its_type_and_names_bad_ones():
    grid = nlb.settings_grid(nlb.Settings(), ["generator=32,64", "coordinated_dropout=0.2,0.4"])
    assert [(s.generator, s.coordinated_dropout) for s in grid] == [
        (32, 0.2),
        (32, 0.4),
        (64, 0.2),
        (64, 0.4),
    ]
    assert nlb.describe(grid[0]) == "generator=32, coordinated_dropout=0.2"
    with pytest.raises(ConfigError, match="NAME one of"):
        nlb.settings_grid(nlb.Settings(), ["gen=3"])
    with pytest.raises(ConfigError, match="generator takes int"):
        nlb.settings_grid(nlb.Settings(), ["generator=3.5"])


@pytest.mark.slow
def test_nlb_search_scores_candidates_on_held_out_trials_and_uses_the_winner(tmp_path, capsys):
    train, evaluate, _ = write_nlb_files(tmp_path)
    out = tmp_path / "rates.h5"
    args = ["nlb", "--train", str(train), "--eval-input", str(evaluate), "--out", str(out)]
    assert main([*args, *TINY, "--search", "factors=1,2"]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("search: ")]
    assert len(lines) == 2 and "factors=1" in lines[0] and "factors=2" in lines[1]
    scores = [float(line.split("co-bps ")[1].split()[0]) for line in lines]
    winner = "factors=1" if scores[0] >= scores[1] else "factors=2"
    assert f"chosen: generator=4, {winner}" in printed
