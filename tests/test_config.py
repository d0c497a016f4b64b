"""`probdyn fit CONFIG.toml`: the prior grammar, the config checks and a run end to end."""

import json
import textwrap

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import xarray as xr

from probdyn.app.cli import main
from probdyn.app.config import load_config, parse_prior
from probdyn.errors import ConfigError

GOOD = """
seed = 3
out = "{out}"

[data]
source = "simulate"
simulator = "simulate_sde"
[data.options]
system = "ou"
num_trials = 4
num_timesteps = 30

[model]
family = "LDS"
[model.hyperparameters]
latent_dim = 2
[model.priors]
A = "Normal(0, 0.3)"
r = "HalfNormal(scale=0.5)"

[inference]
method = "svi"
num_steps = 200
num_draws = 50
evidence = "iwae"
evidence_options = {{ num_importance = 300, num_batches = 4 }}
"""


def test_prior_strings_become_distributions():
    normal = parse_prior("Normal(0, 0.5)")
    assert isinstance(normal, dist.Normal) and float(normal.scale) == 0.5
    named = parse_prior(" HalfNormal( scale = 2e-1 ) ")
    assert isinstance(named, dist.HalfNormal) and float(named.scale) == pytest.approx(0.2)
    dirichlet = parse_prior("Dirichlet([1, 2.5, 3])")
    np.testing.assert_allclose(dirichlet.concentration, jnp.array([1.0, 2.5, 3.0]))
    assert isinstance(parse_prior("Exponential()"), dist.Exponential)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Norma(0, 1)", "unknown distribution 'Norma'"),
        ("Normal(0, __import__('os'))", "is not a number"),
        ("Normal 0 1", "not of the form Name(arguments)"),
        ("Normal(0, -1)", "Normal(0, -1)"),
        ("Normal(loc=0, 1)", "positional argument after a named one"),
        ("Dirichlet([[1, 2]])", "nested brackets"),
        ("Normal(0, 1, 2, 3)", "Normal(0, 1, 2, 3)"),
    ],
)
def test_bad_prior_strings_name_the_site_and_the_problem(text, expected):
    with pytest.raises(ConfigError) as error:
        parse_prior(text, "A")
    message = str(error.value)
    assert message.startswith("model.priors.A:") and expected in message, message


def _write(tmp_path, text):
    path = tmp_path / "fit.toml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("seed = 3", "seed = 3\ninferance = 1"), "unknown key(s) ['inferance']"),
        (('family = "LDS"', 'family = "GRU"'), "model.family = 'GRU'"),
        (('source = "simulate"', 'source = "csv"'), "data.source = 'csv'"),
        (('source = "simulate"', 'source = "netcdf"'), "data.path is required"),
        (("seed = 3", 'seed = "three"'), "seed = 'three'; expected an integer in [0, 4294967295]"),
        (('A = "Normal(0, 0.3)"', 'A = "Normal(0, 0.3"'), "model.priors.A"),
        (('A = "Normal(0, 0.3)"', 'Z = "Normal(0, 1)"'), "unknown prior site(s) ['Z']"),
        (('r = "HalfNormal(scale=0.5)"', 'r = "Normal(0, 1)"'), "puts mass outside the site's support"),
        (('A = "Normal(0, 0.3)"', 'q = "HalfNormal(1)"'), "parameterisation='redundant'"),
        (("num_steps = 200", "num_steps = 0"), "inference.num_steps = 0"),
        (("latent_dim = 2", "latent_dims = 2"), "latent_dims"),
        (('system = "ou"', 'system = "oo"'), "unknown SDE system 'oo'"),
        (("[model]", "[model"), "is not valid TOML"),
        (("seed = 3", 'seed = 3\nmemory_limit = "fast"'), "memory limit 'fast'"),
        (
            ("num_importance = 300", "num_particles = 9"),
            "inference.evidence_options: unknown option(s) ['num_particles']",
        ),
        (("num_steps = 200", 'num_steps = 200\nchain_method = "threads"'), "chain_method"),
        (("num_steps = 200", "num_steps = 200\nnum_devices = 0"), "inference.num_devices = 0"),
        (
            ("num_steps = 200", 'num_steps = 200\nlearning_rate = "fast"'),
            "inference.learning_rate = 'fast'; expected a finite number > 0",
        ),
        (("num_steps = 200", "num_steps = 200\nbatch_size = 0"), "inference.batch_size = 0"),
        (
            ("num_steps = 200", "num_steps = 200\nwarmup = -1"),
            "inference.warmup = -1; expected an integer >= 0",
        ),
        (
            ("num_steps = 200", "num_steps = 200\nnum_devices = 64"),
            "num_devices = 64; expected 1..",
        ),
    ],
)
def test_config_errors_are_one_line_naming_the_key(tmp_path, capsys, change, expected):
    path = _write(tmp_path, GOOD.format(out=tmp_path / "out").replace(*change))
    assert main(["fit", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("probdyn: error:") and expected in err, err
    assert not (tmp_path / "out" / "run.nc").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--coordinator", "localhost:1"], "needs the number of processes"),
        (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"], "host:port"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "0 <= id"),
    ],
)
def test_process_flag_errors_are_one_line(tmp_path, capsys, flags, expected):
    path = _write(tmp_path, GOOD.format(out=tmp_path / "out"))
    assert main(["fit", str(path), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err, err


def test_data_errors_from_a_file_source_are_one_line(tmp_path, capsys):
    spikes = np.ones((2, 5, 3))
    spikes[1, 2, 0] = -1
    xr.Dataset(
        {"spikes": (("trial", "time", "neuron"), spikes)},
        coords={"time": np.arange(5) * 0.01},
        attrs={"dt": 0.01},
    ).to_netcdf(tmp_path / "rec.nc")
    text = GOOD.format(out=tmp_path / "out").replace(
        'source = "simulate"', f'source = "netcdf"\npath = "{tmp_path / "rec.nc"}"'
    )
    text = text.replace('simulator = "simulate_sde"', "").replace('system = "ou"', "")
    text = text.replace("num_trials = 4", "").replace("num_timesteps = 30", "")
    text = text.replace("latent_dim = 2", 'latent_dim = 2\nobservation = "poisson"')
    text = text.replace('r = "HalfNormal(scale=0.5)"', "")
    assert main(["fit", str(_write(tmp_path, text)), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "spikes[trial=1, time=2, neuron=0] = -1.0" in err, err
    assert main(["fit", str(tmp_path / "missing.toml")]) == 2
    assert "no config file" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_writes_a_run_that_the_other_commands_read(tmp_path):
    out = tmp_path / "out"
    path = _write(tmp_path, GOOD.format(out=out))
    assert main(["fit", str(path), "--no-progress"]) == 0
    for name in ("run.nc", "config.toml", "versions.json", "fit.log"):
        assert (out / name).is_file()
    assert (out / "config.toml").read_text() == path.read_text()
    tree = xr.open_datatree(out / "run.nc")
    assert tree["posterior"].sizes["draw"] == 50 and "evidence" in tree.children
    diagnostics = json.loads(tree["evidence"].attrs["diagnostics"])
    assert diagnostics["num_importance"] == 300  # the config's evidence_options were used
    assert len(diagnostics["bound_per_batch"]) == 4
    # The configured prior was used: A's draws sit inside the Normal(0, 0.3) scale.
    assert np.abs(tree["posterior"]["A"].values).max() < 2.0
    assert (out / "report.html").is_file()  # the fit writes its report too
    assert main(["report", str(out / "run.nc")]) == 0
    assert main(["compare", str(out / "run.nc")]) == 0
    # The same config again finds nothing left to do; another config never overwrites the run.
    written = (out / "run.nc").stat().st_mtime_ns
    assert main(["fit", str(path), "--no-progress"]) == 0
    assert (out / "run.nc").stat().st_mtime_ns == written
    assert main(["fit", str(_write(tmp_path, GOOD.format(out=out).replace("seed = 3", "seed = 4")))]) == 2


@pytest.mark.slow
def test_a_failed_step_keeps_the_fit_and_a_rerun_resumes_there(tmp_path, capsys, monkeypatch):
    import probdyn.inference

    out = tmp_path / "out"
    path = _write(tmp_path, GOOD.format(out=out))

    def broken(*args, **kwargs):
        raise FloatingPointError("forced failure of the evidence step\nsecond line")

    monkeypatch.setattr(probdyn.inference, "log_evidence", broken)
    assert main(["fit", str(path), "--no-progress"]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("probdyn: evidence failed (FloatingPointError: forced failure"), err
    tree = xr.open_datatree(out / "run.nc")
    assert "evidence" not in tree.children  # the failed step
    assert tree["posterior"].sizes["draw"] == 50  # the fit, kept
    assert "posterior_predictive" in tree.children and (out / "report.html").is_file()
    tree.close()
    monkeypatch.undo()
    assert main(["fit", str(path), "--no-progress"]) == 0
    output = capsys.readouterr().out
    assert "resuming" in output and "missing: ['evidence']" in output, output
    assert "svi: final loss" not in output  # not fitted again
    tree = xr.open_datatree(out / "run.nc")
    assert np.isfinite(float(tree["evidence"]["log_evidence"]))
    assert tree["posterior"].sizes["draw"] == 50


def test_a_memory_limit_below_one_step_stops_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, GOOD.format(out=tmp_path / "out"))
    assert main(["fit", str(path), "--no-progress", "--memory-limit", "1MB"]) == 2
    err = capsys.readouterr().err.strip()
    # The first step that would not fit is the fit itself: refused before it runs.
    assert err.count("\n") == 0 and "svi: one step over 4 trials needs" in err, err
    assert "use batch_size = 1" in err and "--memory-limit" in err, err
    assert not (tmp_path / "out" / "run.nc").exists()
    assert main(["fit", str(path), "--no-progress", "--memory-limit", "lots"]) == 2
    assert "memory limit 'lots'" in capsys.readouterr().err


# The plumbing is under test: two 100-draw chains of a K = 2 fit to 3-state data mix poorly.
@pytest.mark.filterwarnings("ignore::probdyn.inference.DiagnosticWarning")
def test_nuts_fit_with_bridge_evidence_reuses_the_draws(tmp_path, monkeypatch, capsys):
    import probdyn.inference

    def broken(*args, **kwargs):
        raise MemoryError("forced")

    text = textwrap.dedent(
        f"""
        seed = 1
        out = "{tmp_path / "out"}"
        [data]
        source = "simulate"
        simulator = "simulate_hmm"
        [data.options]
        num_trials = 2
        num_timesteps = 50
        [model]
        family = "HMM"
        [model.hyperparameters]
        num_states = 2
        [inference]
        method = "nuts"
        num_warmup = 100
        num_samples = 100
        num_chains = 2
        evidence = "bridge"
        """
    )
    # The evidence fails at first; the rerun bridges from the draws saved in the run.
    monkeypatch.setattr(probdyn.inference, "log_evidence", broken)
    assert main(["fit", str(_write(tmp_path, text)), "--no-progress"]) == 1
    monkeypatch.undo()
    assert main(["fit", str(_write(tmp_path, text)), "--no-progress"]) == 0
    assert "missing: ['evidence']" in capsys.readouterr().out
    tree = xr.open_datatree(tmp_path / "out" / "run.nc")
    evidence = tree["evidence"].to_dataset()
    assert evidence.attrs["method"] == "bridge"
    assert np.isfinite(float(evidence["log_evidence"]))
    diagnostics = json.loads(evidence.attrs["diagnostics"])
    assert diagnostics["label_permutations"] == 2  # the two states' relabellings averaged
    assert diagnostics["num_posterior_draws"] == 50  # the second half of each 100-draw chain


SEQVAE = """
seed = 1
out = "{out}"

[data]
source = "netcdf"
path = "{path}"

[model]
family = "SeqVAE"
[model.hyperparameters]
num_neurons = 6
generator = 4
factors = 2
encoder_hidden = 4
[model.priors]
Wh = "Normal(0, 0.2)"

[inference]
method = "svi"
guide = "amortised-delta"
num_steps = 30
num_draws = 10
coordinated_dropout = 0.3
encoder_dropout = 0.1
warmup = 10
evidence = "iwae"
evidence_options = {{ num_importance = 20, num_batches = 2 }}
"""


@pytest.mark.slow
def test_seqvae_fits_from_a_config_with_its_regularisers_and_priors(tmp_path):
    from probdyn.data import save

    rng = np.random.default_rng(0)
    spikes = rng.poisson(1.0, size=(5, 12, 6))
    recording = xr.Dataset(
        {"spikes": (("trial", "time", "neuron"), spikes)},
        coords={"time": 0.01 * np.arange(12)},
        attrs={"dt": 0.01},
    )
    path = save(recording, tmp_path / "spikes.nc")
    out = tmp_path / "out"
    config = _write(tmp_path, SEQVAE.format(out=out, path=path))
    assert main(["fit", str(config), "--no-progress"]) == 0
    tree = xr.open_datatree(out / "run.nc")
    assert tree["posterior"]["Wh"].shape[-3:] == (3, 4, 4) and "evidence" in tree.children
    bad = _write(tmp_path, SEQVAE.format(out=out, path=path).replace("= 0.3", "= 1.5"))
    with pytest.raises(ConfigError, match="coordinated_dropout = 1.5"):
        load_config(bad)


class _Planted:
    """Unpickling this creates the file it names: the code a planted pickle would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_planted_where_fit_resumes_never_runs(tmp_path, capsys):
    import pickle

    out = tmp_path / "out"
    out.mkdir()
    marker = tmp_path / "created-by-the-pickle"
    (out / "svi.ckpt").write_bytes(pickle.dumps({"signature": "", "state": _Planted(marker)}))
    assert main(["fit", str(_write(tmp_path, GOOD.format(out=out))), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "svi.ckpt" in err and "not a probdyn checkpoint" in err, err
    assert not marker.exists()
    assert not (out / "run.nc").exists()
