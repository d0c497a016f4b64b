r"""The main job on an embedded default: simulate, fit candidates, compare by evidence, report.

The recording is simulated from a 2-D linear dynamical system (a damped rotation,
:math:`A = 0.95\,R(0.3)`) seen through a few noisy channels. The candidates come from three
families: LDS models of latent dimension 1, 2 and 3; a rank-2 SDE RNN (continuous-time tanh
network driven by noise); and a 4-state Gaussian HMM. Each is fitted by SVI and scored by the
importance-weighted bound on its evidence (every row a bound of the same kind; tempered SMC is
the estimator to use for final numbers, see docs/evidence.md), and the table ranks them.

The bound is tight where the model's latent path is integrated out exactly (LDS by the Kalman
filter, HMM by the forward algorithm) and loose where the path is sampled (the SDE RNN's
non-centred path: hundreds of latent dimensions under the guide), so a margin in favour of a
marginalised model over the SDE RNN is partly the bound's looseness; the report says so.

Every candidate with continuous dynamics gets the posterior over its fixed points (location,
class and eigenvalues across 200 posterior draws), saved with its run; the report shows those
of each family's best model, and the winner's run is also written as ``winner.nc``.

The candidates are independent: each is fitted, scored and saved by a worker process, one more
at once than the machine has cores (compiling the programs, most of a short run's time on a
CPU, takes one core each; the spare process keeps the cores busy while another starts up or
writes its run; more than one spare and the processes' runtimes contend: docs/devices.md). The
results do not depend on the number of workers: every candidate has its own seed.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os
import re
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import xarray as xr
from tqdm.auto import tqdm

from probdyn.errors import ConfigError
from probdyn.model import Model, prior_predictive
from probdyn.models import HMM, LDS, SDERNN
from probdyn.runtime.compilation import run_once

TRUE_LATENT_DIM = 2


def simulate_demo_recording(*, seed: int, num_trials: int, num_timesteps: int) -> xr.Dataset:
    """Gaussian observations of a damped 2-D rotation, with the truth attached."""
    angle = 0.3
    rotation = 0.95 * jnp.array(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    )
    readout = jnp.array([[1.0, 0.0], [0.6, 0.8], [-0.5, 1.0], [0.3, -0.9]])
    truth = {
        "A": rotation,
        "b": jnp.zeros(2),
        "q": jnp.full(2, 0.3),
        "C": readout,
        "d": jnp.array([0.5, -0.2, 0.0, 0.3]),
        "r": jnp.full(4, 0.25),
    }
    generator = LDS(
        latent_dim=2,
        parameterisation="redundant",
        priors={k: dist.Delta(v) for k, v in truth.items()},
    )
    draws = prior_predictive(
        generator,
        seed=seed,
        num_samples=1,
        num_trials=num_trials,
        num_timesteps=num_timesteps,
        emission_dim=4,
    )
    return xr.Dataset(
        {
            "y": (("trial", "time", "neuron"), draws["y"][0]),
            "A_true": (("latent", "latent_from"), np.asarray(rotation)),
        },
        coords={"time": np.arange(num_timesteps) * 0.05},
        attrs={"dt": 0.05, "true_model": "LDS(latent_dim=2)"},
    )


def run_path(out: Path, name: str) -> Path:
    """A candidate's saved run: ``LDS(latent_dim=2)`` -> ``OUT/runs/LDS_latent_dim_2.nc``."""
    return out / "runs" / f"{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')}.nc"


#: The demo's recordings: simulated (the default), or the shipped real one.
RECORDINGS = ("simulated", "mc_maze_small")


def demo_recording(recording: str, *, seed: int, quick: bool) -> xr.Dataset:
    """The simulated recording, or MC_Maze_Small's 75 training trials binned at 20 ms."""
    if recording == "simulated":
        with run_once():
            return simulate_demo_recording(
                seed=seed, num_trials=4 if quick else 8, num_timesteps=40 if quick else 60
            )
    if recording == "mc_maze_small":
        from probdyn.data import mc_maze_small

        return mc_maze_small(bin_size=0.02)
    raise ConfigError(f"recording = {recording!r}; expected one of {list(RECORDINGS)}")


def candidate_models(quick: bool = False, recording: str = "simulated") -> dict[str, Model]:
    """The demo's candidates by display name: LDS, an SDE RNN and an HMM.

    Simulated recording (Gaussian channels): LDS of latent dimension 1, 2 and 3 (only 2 when
    ``quick``: one model per family), a rank-2 SDE RNN of 8 units, a 4-state HMM. MC_Maze_Small
    (spike counts): Poisson LDS of latent dimension 2, 4 and 8 (only 4 when ``quick``), a
    Poisson SDE RNN of 16 units and rank 4, a Poisson HMM of 4 states.
    """
    if recording == "mc_maze_small":
        dims = (4,) if quick else (2, 4, 8)
        candidates: dict[str, Model] = {
            f"LDS(latent_dim={d}, poisson)": LDS(latent_dim=d, observation="poisson") for d in dims
        }
        candidates["SDERNN(num_units=16, rank=4, poisson)"] = SDERNN(
            num_units=16, rank=4, observation="poisson"
        )
        candidates["HMM(num_states=4, poisson)"] = HMM(num_states=4, observation="poisson")
        return candidates
    dims = (2,) if quick else (1, 2, 3)
    candidates = {f"LDS(latent_dim={d})": LDS(latent_dim=d) for d in dims}
    candidates["SDERNN(num_units=8, rank=2)"] = SDERNN(num_units=8, rank=2)
    candidates["HMM(num_states=4)"] = HMM(num_states=4, observation="gaussian")
    return candidates


def _best_per_family(table, candidates: dict[str, Model]) -> dict[str, str]:
    """Family name -> its best-ranked candidate (the table is sorted best first)."""
    best: dict[str, str] = {}
    for name in table["model"]:
        best.setdefault(type(candidates[name]).__name__, name)
    return best


def _available_cores() -> int:
    """Cores this process may run on (the affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _jax_settings() -> dict:
    """The JAX settings a worker process must share with this one (precision, compile cache)."""
    return {
        name: getattr(jax.config, name)
        for name in (
            "jax_enable_x64",
            "jax_compilation_cache_dir",
            "jax_persistent_cache_min_compile_time_secs",
        )
    }


def _start_worker(settings: dict) -> None:
    """Give a fresh worker process the parent's JAX settings (before it compiles anything)."""
    for name, value in settings.items():
        jax.config.update(name, value)


def _fit_candidate(
    name: str, *, quick: bool, kind: str, recording: Path, destination: Path, seed: int
) -> tuple[str, float]:
    """Fit one candidate by SVI, bound its evidence, find its fixed points; save the run.

    The run (``destination``, an ArviZ DataTree) holds the posterior and predictive draws, the SVI
    loss trace (``optimization``), the evidence and, for continuous dynamics, the fixed points.
    Returns the name and the seconds taken.
    """
    from probdyn.analysis.fixed_points import fixed_points
    from probdyn.inference import log_evidence, svi
    from probdyn.inference.arviz import MAX_PREDICTIVE_BYTES, add_predictive

    start = time.perf_counter()
    model = candidate_models(quick, kind)[name]
    with xr.open_dataset(recording) as stored:
        ds = stored.load()
    fit = svi(model, ds, num_steps=1000 if quick else 3000, seed=seed, progress=False)
    evidence = log_evidence(
        model,
        ds,
        method="iwae",
        seed=seed,
        svi_result=fit,
        num_importance=500 if quick else 2000,
        num_batches=4,
    )
    # Saving draws and finding fixed points run each program once: compiled unoptimised (at
    # these sizes compiling dominates). The fit and the evidence keep full optimisation.
    with run_once():
        run = fit.to_arviz(num_samples=200, seed=seed, predictive=False)
        # Predictive draws of spike counts cost a Poisson draw per bin and neuron (and per state
        # for the HMM): on the real recording only the minimum of 20 draws, for the band.
        size = MAX_PREDICTIVE_BYTES if kind == "simulated" else 0
        run = add_predictive(run, model, fit.density, seed=seed + 1, max_predictive_bytes=size)
        if not isinstance(model, HMM):  # discrete states: no vector field, no fixed points
            run = fixed_points(model, fit, num_draws=200, seed=seed).attach(run)
    run["evidence"] = xr.DataTree(evidence.to_dataset())
    run.attrs["name"] = name
    run.to_netcdf(destination)
    return name, time.perf_counter() - start


def _fit_all(
    out: Path, quick: bool, kind: str, seed: int, progress: bool, workers: int | None
) -> dict[str, xr.DataTree]:
    """Every candidate's saved run, by name, fitted ``workers`` at a time."""
    names = list(candidate_models(quick, kind))
    workers = min(len(names), workers or _available_cores() + 1)
    jobs = {
        name: dict(
            quick=quick,
            kind=kind,
            recording=out / "recording.nc",
            destination=run_path(out, name),
            seed=seed + i,
        )
        for i, name in enumerate(names)
    }
    with tqdm(
        total=len(names), disable=not progress, desc=f"fitting on {workers} processes"
    ) as bar:
        if workers == 1:
            for name in names:
                _fit_candidate(name, **jobs[name])
                bar.update()
        else:
            with concurrent.futures.ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),  # JAX's threads and fork clash
                initializer=_start_worker,
                initargs=(_jax_settings(),),
            ) as pool:
                futures = [pool.submit(_fit_candidate, name, **jobs[name]) for name in names]
                for future in concurrent.futures.as_completed(futures):
                    name, seconds = future.result()
                    bar.set_postfix_str(f"{name} {seconds:.0f} s")
                    bar.update()
    runs = {}
    for name in names:
        with xr.open_datatree(run_path(out, name)) as tree:
            runs[name] = tree.load()
    return runs


def run_demo(
    out: str | Path = "probdyn-demo",
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
    recording: str = "simulated",
):
    """Run the demo; return (comparison table, report path, the winner's fixed points or None).

    ``recording``: ``"simulated"`` (the default; the generating model is known) or
    ``"mc_maze_small"`` (the shipped real recording, :func:`probdyn.data.mc_maze_small`).
    ``workers`` processes fit the candidates (default: one more than the cores, at most one per
    candidate; 1 fits them in this process). The fixed points are None when the winner has no
    continuous dynamics (an HMM).
    """
    from probdyn.analysis.fixed_points import FixedPointPosterior
    from probdyn.app.report import (
        data_fit_html,
        evidence_figure,
        figure_html,
        fixed_point_html,
        loss_figure,
        write_report,
    )
    from probdyn.inference import Evidence, comparison_table

    out = Path(out)
    ds = demo_recording(recording, seed=seed, quick=quick)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out / "recording.nc")
    # Every candidate is saved as a run (posterior, predictive, loss trace, evidence, fixed
    # points where found), which `probdyn compare out/runs/*.nc` and `probdyn report RUN` read.
    runs = _fit_all(out, quick, recording, seed, progress, workers)
    table = comparison_table(
        {name: Evidence.from_dataset(run["evidence"].to_dataset()) for name, run in runs.items()}
    )
    winner = table["model"].iloc[0]
    candidates = candidate_models(quick, recording)
    family_points = {
        name: FixedPointPosterior.from_tree(runs[name])
        for name in _best_per_family(table, candidates).values()
        if "fixed_points" in runs[name].children
    }
    points = family_points.get(winner)  # None when an HMM wins
    tree = runs[winner]
    shutil.copyfile(run_path(out, winner), out / "winner.nc")
    if recording == "simulated":
        source = f"simulated from {ds.attrs['true_model']}"
        bound_note = (
            "<p>Every row is an importance-weighted lower bound. It is tight for the LDS "
            "and the HMM (latent path integrated out exactly) and loose for the SDE RNN, whose "
            "latent path is sampled: part of any margin against the SDE RNN is the bound's "
            "looseness, not evidence.</p>"
        )
    else:
        source = (
            f"spike counts of {ds.sizes['neuron']} held-in neurons of MC_Maze_Small (monkey "
            "motor and premotor cortex, Churchland et al. 2012; Neural Latents Benchmark, Pei "
            f"et al. 2021), training trials, {1000 * ds.attrs['dt']:.0f} ms bins"
        )
        bound_note = (
            "<p>Every row is an importance-weighted lower bound. It is tight only for the HMM "
            "(states summed out exactly); the Poisson LDS and the SDE RNN sample their latent "
            "paths (thousands of latent dimensions under the guide), so their bounds are loose "
            "by an unknown amount and a margin between them and the HMM is not a Bayes factor. "
            "The evidence is of the trials fitted, not of held-out trials.</p>"
        )
    sections = [
        (
            "Data and the winner's fit",
            f"<p>{ds.sizes['trial']} trials x {ds.sizes['time']} bins x "
            f"{ds.sizes['neuron']} channels, {source}.</p>" + data_fit_html(tree, winner),
        ),
        (
            "Evidence",
            table.drop(columns=["note"]).to_html(
                index=False, float_format="%.3f", classes="evidence"
            )
            + figure_html(evidence_figure(table), "log evidence relative to the best model")
            + bound_note,
        ),
        (
            "Fixed points",
            "<p>For each family with continuous dynamics, the fixed points of 200 posterior "
            "draws of its best model, matched across draws in observation space; latent "
            "coordinates are those of a reference draw. (The HMM has discrete states and no "
            "fixed points.)</p>"
            + "".join(fixed_point_html(name, found) for name, found in family_points.items()),
        ),
        (
            "Fit diagnostics",
            "".join(
                figure_html(
                    loss_figure(run["optimization"]["loss"].values, name), f"SVI loss of {name}"
                )
                for name, run in runs.items()
            ),
        ),
    ]
    report = write_report(out / "report.html", "probdyn demo", sections)
    table.drop(columns=["note"]).to_csv(out / "comparison.csv", index=False)
    return table, report, points
