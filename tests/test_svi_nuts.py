import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import numpyro
import pytest
import xarray as xr
from lds_cases import ou_dataset, ou_exact, ou_model
from scipy import stats

from probdyn.errors import ConfigError
from probdyn.inference import nuts, svi
from probdyn.inference.curriculum import curriculum_schedule
from probdyn.models import LDS

REPO = Path(__file__).resolve().parents[1]


def small_dataset(seed=0, num_trials=6):
    rng = np.random.default_rng(seed)
    y = (
        np.cumsum(rng.normal(size=(num_trials, 20, 2)) * 0.3, axis=1)
        + rng.normal(size=(num_trials, 20, 2)) * 0.2
    )
    return xr.Dataset({"y": (("trial", "time", "neuron"), y)}, attrs={"dt": 0.1})


def test_svi_same_seed_same_result_and_loss_decreases():
    ds = small_dataset()
    a = svi(LDS(latent_dim=1), ds, num_steps=300, seed=3, progress=False)
    b = svi(LDS(latent_dim=1), ds, num_steps=300, seed=3, progress=False)
    for key in a.params:
        np.testing.assert_array_equal(np.asarray(a.params[key]), np.asarray(b.params[key]))
    assert a.losses[-50:].mean() < a.losses[:50].mean()
    draws = a.sample_posterior(20, seed=0)
    assert set(draws) == {"A", "b", "initial_chol", "C", "d", "r"} and draws["C"].shape == (20, 2, 1)
    with pytest.raises(ConfigError, match="refine needs an amortised guide"):
        a.sample_posterior(2, seed=0, refine=5)


def test_curriculum_stage_equals_a_fit_to_the_first_bins_only():
    ds = small_dataset()
    staged = svi(LDS(latent_dim=1), ds, num_steps=60, seed=1, curriculum=(4, 100), progress=False)
    hidden = ds.copy(deep=True)
    hidden["y"][:, 4:] = np.nan  # the stage's view: bins 4.. missing
    direct = svi(LDS(latent_dim=1), hidden, num_steps=60, seed=1, progress=False)
    np.testing.assert_allclose(staged.losses, direct.losses, rtol=1e-6)
    # Stages grow by 4 bins every 100 steps up to all 20; chunks stop at stage boundaries.
    data = LDS(latent_dim=1).prepare(ds)
    at = curriculum_schedule(data, (4, 100))
    visible = [int(at(step).mask[0, :, 0].sum()) for step in (0, 99, 100, 250, 1000)]
    assert visible == [4, 4, 8, 12, 20]
    grown = svi(LDS(latent_dim=1), ds, num_steps=130, seed=1, curriculum=(4, 50), progress=False)
    assert grown.losses.shape == (130,) and np.isfinite(grown.losses).all()
    with pytest.raises(ConfigError, match="curriculum"):
        svi(LDS(latent_dim=1), ds, num_steps=5, seed=1, curriculum=(0, 10), progress=False)


def test_laplace_draws_have_the_inverse_hessian_spread_and_init_starts_a_guide():
    ds = ou_dataset(seed=1)
    model = ou_model()
    point = svi(model, ds, num_steps=800, seed=0, guide="delta", progress=False)
    laplace = svi(model, ds, num_steps=800, seed=0, guide="laplace", progress=False)
    draws = laplace.sample_posterior(4000, seed=2)
    density = laplace.density
    z = np.asarray(jax.vmap(density.unconstrain)({"A": draws["A"]}))[:, 0]
    mode = density.unconstrain({"A": np.asarray(laplace.guide.median(laplace.params)["A"])})
    curvature = -jax.hessian(density.log_posterior)(mode)[0, 0]
    # Centred on the MAP point (within 4 Monte Carlo standard errors), with the unconstrained
    # spread 1/sqrt(curvature) (4000 draws: the sd is within about 2%).
    assert abs(np.mean(z) - float(mode[0])) < 4 * np.std(z) / np.sqrt(z.size)
    assert np.std(z) == pytest.approx(float(curvature) ** -0.5, rel=0.05)
    started = svi(
        model, ds, num_steps=1, seed=0, guide="normal", init=point, init_scale=1e-3, progress=False
    )
    assert np.std(started.sample_posterior(500, seed=0)["A"]) < 0.01
    with pytest.raises(ConfigError, match="unknown sites"):
        svi(model, ds, num_steps=1, seed=0, init={"B": 1.0}, progress=False)


def test_minibatch_likelihood_is_scaled_by_trials_over_batch():
    ds = small_dataset(num_trials=8)
    model = LDS(latent_dim=1)
    data = model.prepare(ds)
    params = {k: v.sample(jax.random.key(1)) for k, v in model.site_priors(2).items()}
    seeded = numpyro.handlers.seed(model.program, jax.random.key(7))
    trace = numpyro.handlers.trace(numpyro.handlers.substitute(seeded, params)).get_trace(
        data, batch_size=3
    )
    site = trace["y"]
    index = trace["trial"]["value"]
    assert index.shape == (3,) and site["scale"] == pytest.approx(8 / 3)
    per_trial = site["fn"].log_prob(site["value"])
    np.testing.assert_allclose(per_trial, site["fn"].log_prob(data.observations[index]))


def test_svi_minibatches_with_local_latents():
    ds = small_dataset(num_trials=8)
    fit = svi(
        LDS(latent_dim=1, marginal="sample"),
        ds,
        num_steps=200,
        seed=0,
        batch_size=4,
        progress=False,
    )
    assert np.isfinite(fit.losses).all()
    assert fit.sample_posterior(5, seed=1)["latents"].shape == (5, 8, 20, 1)


SCRIPT = textwrap.dedent(
    """
    import sys, pickle, jax
    jax.config.update("jax_enable_x64", True)
    import xarray as xr, numpy as np
    from probdyn.inference import svi
    from probdyn.models import LDS
    ds = xr.open_dataset(sys.argv[1]).load()
    fit = svi(LDS(latent_dim=1), ds, num_steps=int(sys.argv[3]), seed=5, checkpoint=sys.argv[2],
              checkpoint_every=50, progress=False)
    with open(sys.argv[4], "wb") as f:
        pickle.dump(({k: np.asarray(v) for k, v in fit.params.items()}, fit.resumed_from, fit.losses), f)
    """
)


@pytest.mark.slow
def test_checkpoint_survives_sigkill_and_resumes_exactly(tmp_path):
    import pickle

    ds_path = tmp_path / "data.nc"
    small_dataset().to_netcdf(ds_path)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    num_steps = 15_000
    ckpt, out = tmp_path / "fit.ckpt", tmp_path / "out.pkl"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    args = [sys.executable, str(script), str(ds_path), str(ckpt), str(num_steps), str(out)]
    victim = subprocess.Popen(args, env=env)
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert ckpt.exists() and not out.exists(), "the run should have been killed mid-way"
    subprocess.run(args, env=env, check=True)
    resumed_params, resumed_from, resumed_losses = pickle.loads(out.read_bytes())
    assert 0 < resumed_from < num_steps
    # Reference: the same run, uninterrupted, in a fresh process.
    reference_out = tmp_path / "reference.pkl"
    subprocess.run(
        [
            sys.executable,
            str(script),
            str(ds_path),
            str(tmp_path / "other.ckpt"),
            str(num_steps),
            str(reference_out),
        ],
        env=env,
        check=True,
    )
    reference_params, reference_from, reference_losses = pickle.loads(reference_out.read_bytes())
    assert reference_from == 0
    for key, value in reference_params.items():
        np.testing.assert_array_equal(resumed_params[key], value)
    # The reported loss values may differ in the last bit between processes (XLA's CPU reduction
    # order for the scalar ELBO is not fixed); the parameters above are bit-identical.
    np.testing.assert_allclose(resumed_losses, reference_losses, rtol=1e-12)


def test_checkpoint_from_other_arguments_is_refused(tmp_path):
    ds = small_dataset()
    ckpt = tmp_path / "fit.ckpt"

    def fit(seed):
        return svi(
            LDS(latent_dim=1),
            ds,
            num_steps=60,
            seed=seed,
            checkpoint=ckpt,
            checkpoint_every=30,
            progress=False,
        )

    fit(0)
    with pytest.raises(Exception, match="written by a run with other arguments"):
        fit(1)


FINGERPRINT_OF_CUSTOM_PRIORS = textwrap.dedent(
    """
    import sys
    import numpyro.distributions as dist
    from probdyn.inference.density import fingerprint

    loc = float(sys.argv[1])
    priors = {"A": dist.Normal(loc, 0.5), "q": dist.LogNormal(loc, 0.3).to_event(0)}
    print(fingerprint({"priors": priors, "steps": (10, 20)}))
    """
)


def test_fingerprint_of_custom_priors_is_the_same_in_every_process():
    """A resumed run must recognise its checkpoint whatever the process's string-hash seed.

    NumPyro orders a distribution's pytree leaves through a set of field names, so hashing the
    leaves in that order gave each process its own fingerprint (found when a killed fit with
    custom priors refused its own checkpoint).
    """

    def fingerprint_in_process(hash_seed, loc):
        env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
        command = [sys.executable, "-c", FINGERPRINT_OF_CUSTOM_PRIORS, str(loc)]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout

    seen = {fingerprint_in_process(seed, 0.0) for seed in range(4)}
    assert len(seen) == 1
    assert fingerprint_in_process(0, 0.1) not in seen


@pytest.mark.slow
def test_nuts_matches_grid_posterior_and_datatree_round_trips(tmp_path):
    ds = ou_dataset(seed=11)
    _, grid, cdf = ou_exact(ds)
    result = nuts(
        ou_model(), ds, num_warmup=400, num_samples=1000, num_chains=2, seed=0, progress=False
    )
    d = result.diagnostics()
    assert d["divergences"] == 0 and d["max_rhat"] < 1.01
    draws = result.parameters()["A"].reshape(-1)
    # KS test on draws thinned to about their effective sample size (independence assumed by KS).
    thin = max(1, int(np.ceil(draws.size / d["min_ess_bulk"])))
    pvalue = stats.kstest(draws[::thin], lambda a: np.interp(a, grid, cdf)).pvalue
    assert pvalue > 1e-3
    tree = result.to_arviz()
    assert {
        "posterior",
        "sample_stats",
        "log_likelihood",
        "posterior_predictive",
        "observed_data",
    } <= set(tree.children)
    assert tree["log_likelihood"]["y_trial"].dims == ("chain", "draw", "trial")
    assert tree["log_likelihood"]["y"].dims == ("chain", "draw", "trial", "time", "neuron")
    assert tree["posterior_predictive"]["y"].dims == ("chain", "draw", "trial", "time", "neuron")
    assert tree["posterior"]["A"].dims == ("chain", "draw", "latent", "latent_from")
    path = tmp_path / "run.nc"
    tree.to_netcdf(path)
    reloaded = xr.open_datatree(path).load()
    xr.testing.assert_identical(reloaded, tree)


def test_nuts_warns_about_bad_diagnostics():
    from probdyn.inference import DiagnosticWarning

    ds = ou_dataset(seed=1, num_timesteps=30)
    with pytest.warns(DiagnosticWarning, match="bulk ESS"):
        nuts(ou_model(), ds, num_warmup=20, num_samples=30, num_chains=2, seed=0, progress=False)
