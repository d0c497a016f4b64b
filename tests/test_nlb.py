"""Co-smoothing: the baseline's parts against closed forms, the ``probdyn nlb`` command end to end."""

import h5py
import numpy as np
import pytest

from probdyn import nlb
from probdyn.cli import main
from probdyn.data import load_nlb
from probdyn.metrics import co_bps


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
    rng = np.random.default_rng(2)
    latent = np.sin(np.linspace(0, 3, 25))[None, :, None] + rng.normal(0, 0.3, (14, 1, 1))
    rates = np.exp(latent * rng.normal(size=(1, 1, 8)))
    spikes = rng.poisson(rates).astype(np.float32)
    train, evaluate = folder / "toy_train.h5", folder / "eval.h5"
    with h5py.File(train, "w") as file:
        file["train_spikes_heldin"] = spikes[:10, :, :5]
        file["train_spikes_heldout"] = spikes[:10, :, 5:]
    with h5py.File(evaluate, "w") as file:
        file["eval_spikes_heldin"] = spikes[10:, :, :heldin_eval]
    return train, evaluate, spikes


def test_nlb_command_writes_the_submission_layout(tmp_path, capsys):
    train, evaluate, spikes = write_nlb_files(tmp_path)
    out = tmp_path / "rates.h5"
    args = ["nlb", "--train", str(train), "--eval-input", str(evaluate), "--out", str(out)]
    options = ["--steps", "10", "--latent-dim", "2", "--tau", "0.05", "--refine", "5"]
    status = main([*args, *options, "--no-progress"])
    assert status == 0, capsys.readouterr().err
    with h5py.File(out, "r") as file:
        group = file["toy"]
        shapes = {key: group[key].shape for key in group}
        eval_heldout = np.asarray(group["eval_rates_heldout"])
    assert shapes == {
        "train_rates_heldin": (10, 25, 5),
        "train_rates_heldout": (10, 25, 3),
        "eval_rates_heldin": (4, 25, 5),
        "eval_rates_heldout": (4, 25, 3),
    }
    assert np.isfinite(eval_heldout).all() and (eval_heldout > 0).all()
    assert np.isfinite(co_bps(spikes[10:, :, 5:], eval_heldout))
    assert "co-bps on the training trials" in capsys.readouterr().out


def test_nlb_command_rejects_negative_counts_of_steps(tmp_path, capsys):
    train, evaluate, _ = write_nlb_files(tmp_path)
    args = ["nlb", "--train", str(train), "--eval-input", str(evaluate), "--out", "r.h5"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--refine", "-3"])
    assert exit_info.value.code == 2
    assert "--refine: expected an integer >= 0, got -3" in capsys.readouterr().err


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
    assert co_bps(spikes[:10, :, 5:], fitted) > 0
    with pytest.raises(Exception, match="held-out neurons"):
        nlb.fit_node(train.sel(neuron=~train.heldout), num_steps=1)
