r"""The main job on an embedded default: simulate, fit candidates, compare by evidence, report.

The recording is simulated from a 2-D linear dynamical system (a damped rotation,
:math:`A = 0.95\,R(0.3)`) seen through a few noisy channels; the candidates are LDS models of
latent dimension 1, 2 and 3. Each is fitted by SVI and scored by the importance-weighted
bound on its evidence (every row a bound of the same kind, so the ranking compares like with
like; tempered SMC is the estimator to use for final numbers, see docs/evidence.md), and the
table ranks them. For the winner, the report shows its posterior predictive and its posterior
over fixed points (location, class and eigenvalues across 200 posterior draws), which also
joins the saved ArviZ tree ``winner.nc`` as its ``fixed_points`` group.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import xarray as xr

from probdyn.model import prior_predictive
from probdyn.models import LDS

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
    generator = LDS(latent_dim=2, priors={k: dist.Delta(v) for k, v in truth.items()})
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


def run_demo(
    out: str | Path = "probdyn-demo", *, quick: bool = False, seed: int = 0, progress: bool = True
):
    """Run the demo and return (comparison table, report path, winner's fixed points)."""
    from probdyn.fixed_point_posterior import fixed_points
    from probdyn.inference import compare, log_evidence, svi
    from probdyn.report import (
        evidence_figure,
        figure_html,
        loss_figure,
        trajectories_figure,
        write_report,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = simulate_demo_recording(
        seed=seed, num_trials=4 if quick else 8, num_timesteps=40 if quick else 60
    )
    ds.to_netcdf(out / "recording.nc")
    candidates = {f"LDS(latent_dim={d})": LDS(latent_dim=d) for d in (1, 2, 3)}
    fits, evidences = {}, {}
    for i, (name, model) in enumerate(candidates.items()):
        fits[name] = svi(
            model, ds, num_steps=1000 if quick else 3000, seed=seed + i, progress=progress
        )
        evidences[name] = log_evidence(
            model,
            ds,
            method="iwae",
            seed=seed + i,
            svi_result=fits[name],
            num_importance=500 if quick else 2000,
            num_batches=4,
        )
    table = compare(candidates, ds, seed=seed, evidences=evidences)
    winner = table["model"].iloc[0]
    points = fixed_points(candidates[winner], fits[winner], num_draws=200, seed=seed)
    tree = points.attach(fits[winner].to_arviz(num_samples=200, seed=seed))
    tree.to_netcdf(out / "winner.nc")
    predicted = tree["posterior_predictive"]["y"].values[0]
    sections = [
        (
            "Data",
            f"<p>{ds.sizes['trial']} trials x {ds.sizes['time']} bins x "
            f"{ds.sizes['neuron']} channels, "
            f"simulated from {ds.attrs['true_model']}.</p>"
            + figure_html(
                trajectories_figure(
                    ds["y"].values,
                    predicted,
                    ds.attrs["dt"],
                    f"trial 0 and the predictive of {winner}",
                ),
                "observed and predicted traces",
            ),
        ),
        (
            "Evidence",
            table.drop(columns=["note"]).to_html(
                index=False, float_format="%.3f", classes="evidence"
            )
            + figure_html(evidence_figure(table), "log evidence relative to the best model"),
        ),
        (
            "Fixed points",
            f"<p>Fixed points of {points.dataset.sizes['draw']} posterior draws of {winner}, "
            "matched across draws in observation space; latent coordinates are those of the "
            "reference draw.</p>"
            + points.summary()
            .filter(regex=r"^(?!y\d)")
            .to_html(float_format="%.3f", classes="fixed-points")
            + points.count_distribution().to_html(float_format="%.3f")
            + figure_html(points.phase_portrait(), "fixed points of all draws by class")
            + figure_html(points.eigenvalue_figure(), "eigenvalues at the fixed points"),
        ),
        (
            "Fit diagnostics",
            "".join(
                figure_html(loss_figure(f.losses, n), f"SVI loss of {n}") for n, f in fits.items()
            ),
        ),
    ]
    report = write_report(out / "report.html", "probdyn demo", sections)
    table.drop(columns=["note"]).to_csv(out / "comparison.csv", index=False)
    return table, report, points
