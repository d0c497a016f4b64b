"""Self-contained HTML reports (figures embedded as PNG) for runs and comparisons."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from probdyn.analysis.fixed_points.figures import pyplot


def figure_html(fig, caption: str) -> str:
    """Embed a matplotlib figure as a base64 PNG with a caption, and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def evidence_figure(table: pd.DataFrame):
    """Bar chart of log evidence relative to the best model, with 2-standard-error bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 0.5 + 0.5 * len(table)))
    ax.barh(
        table["model"], table["delta"], xerr=2 * table["standard_error"].fillna(0), color="#4477aa"
    )
    ax.axvline(0, color="k", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("log evidence - best (nats), bars: 2 standard errors")
    return fig


def trial_fit_figure(
    time: np.ndarray,
    observed: np.ndarray,
    smoothed: np.ndarray | None,
    fresh: np.ndarray | None,
    title: str,
    channels: Sequence[tuple[int, str]] | None = None,
):
    r"""One trial, two views: the fit given the trial's own data, and fresh-path predictions.

    Left, the smoothed prediction :math:`E[y_t \mid y_{1:T}, \theta]` (``smoothed``: draws x
    time x channel, the emission mean on posterior draws of the trial's latent path): its
    median and 90% credible band over draws. Right, the posterior predictive of new data from
    fresh latent paths (``fresh``: draws x time x channel), the calibration check: the observed
    points should scatter inside its 90% band. ``channels``: (index, label) of those shown
    (default: the first 4); observed points in black.
    """
    plt = pyplot()
    if channels is None:
        channels = [(j, f"channel {j}") for j in range(min(observed.shape[-1], 4))]
    fig, axes = plt.subplots(
        len(channels), 2, figsize=(10, 1.4 * len(channels) + 0.4), sharex=True, squeeze=False
    )
    views = (
        (smoothed, "#ee7733", "fit given this trial: smoothed E[y_t | y_1:T], 90% credible"),
        (fresh, "#66ccee", "fresh latent paths: posterior predictive of new data, 90%"),
    )
    for column, (values, colour, label) in enumerate(views):
        for row, (j, name) in enumerate(channels):
            ax = axes[row, column]
            if values is not None:
                low, mid, high = np.quantile(values[..., j], [0.05, 0.5, 0.95], axis=0)
                ax.fill_between(time, low, high, color=colour, alpha=0.45, lw=0, label=label)
                ax.plot(time, mid, color=colour, lw=1.2)
            ax.plot(time, observed[:, j], "k.", ms=3, label="observed")
            ax.set_ylabel(name, fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0, column].set_title(
            label if values is not None else "not available for this model", fontsize=8
        )
        axes[-1, column].set_xlabel("time (s)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def posterior_paths(tree, trials: Sequence[int] = (0,), max_draws: int = 200, seed: int = 0):
    r"""Posterior draws of the latent paths of ``trials`` given their data, with the parameters.

    Returns ``(model, params, paths)`` or None where the run has no such posterior. ``params``
    holds the first ``max_draws`` draws of every site without a trial axis; ``paths`` is
    (trial, draw, time, latent), draw d of each path belonging to parameter draw d. From the
    posterior's ``latents`` site where the run recorded it; for a linear-Gaussian run (latents
    integrated out) one path per parameter draw from the smoothed marginals
    :math:`p(x_t \mid y, \theta)` (the exact marginal posterior of each :math:`x_t`).
    """
    import json

    import jax
    import jax.numpy as jnp

    from probdyn.models import from_spec

    posterior = tree["posterior"]
    model = from_spec(json.loads(posterior.attrs["model"]))
    recorded = "latents" in posterior
    smoothable = (
        hasattr(model, "smoothed_latents")
        and "observed_data" in tree.children
        and model.observation == "gaussian"
    )
    if not (recorded or smoothable):
        return None
    params = {  # (chain, draw, ...) -> (draw, ...), chains one after another
        name: value.values.reshape(-1, *value.shape[2:])[:max_draws]
        for name, value in posterior.data_vars.items()
        if "trial" not in value.dims
    }
    if recorded:
        latents = posterior["latents"]
        values = latents.isel({latents.dims[2]: list(trials)}).values  # chain draw trial ...
        values = np.moveaxis(values.reshape(-1, *values.shape[2:]), 1, 0)
        return model, params, values[:, :max_draws]
    observed = next(iter(tree["observed_data"].to_dataset().data_vars.values())).values
    names = set(model.default_priors(observed.shape[-1]))
    rng = np.random.default_rng(seed)
    paths = []
    for trial in trials:
        mask = np.isfinite(observed[trial])
        values = jnp.asarray(np.where(mask, observed[trial], 0.0), dtype=jnp.result_type(float))
        means, covariances = jax.vmap(lambda p, v=values, m=mask: model.smoothed_latents(p, v, m))(
            {k: v for k, v in params.items() if k in names}
        )
        chol = np.linalg.cholesky(np.asarray(covariances))
        noise = rng.normal(size=np.shape(means))
        paths.append(np.asarray(means) + np.einsum("dtij,dtj->dti", chol, noise))
    return model, params, np.stack(paths)


def smoothed_prediction(model, params: dict, paths: np.ndarray) -> np.ndarray:
    """The emission mean on each posterior path: (draw, time, channel)."""
    import jax

    def one(draw, path):
        return jax.vmap(lambda x: model.emission_mean(draw, x))(path)

    return np.asarray(jax.vmap(one)(params, paths))


def latent_figure(draws: np.ndarray, time: np.ndarray, title: str):
    """Median and 90% credible band of each latent coordinate (up to 4) over ``time``."""
    plt = pyplot()
    dims = min(draws.shape[-1], 4)
    fig, axes = plt.subplots(dims, 1, figsize=(7, 1.4 * dims), sharex=True, squeeze=False)
    for j, ax in enumerate(axes[:, 0]):
        low, mid, high = np.quantile(draws[..., j], [0.05, 0.5, 0.95], axis=0)
        ax.fill_between(time, low, high, color="#ccbb44", alpha=0.5, label="90% credible")
        ax.plot(time, mid, color="#996600", lw=1, label="median")
        ax.set_ylabel(f"latent {j}")
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("time")
    return fig


def loss_figure(losses: np.ndarray, title: str):
    """SVI loss (negative ELBO) trace."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.plot(losses, lw=0.8)
    ax.set_yscale("symlog")
    ax.set_xlabel("step")
    ax.set_ylabel("-ELBO")
    ax.set_title(title)
    return fig


#: One colour per stability class (same order as ``probdyn.analysis.fixed_points.CLASSES``).
def fixed_point_html(name: str, points) -> str:
    """One model's fixed-point posterior: description, tables, phase portrait, eigenvalues."""
    return (
        f"<h3>{html.escape(name)}</h3><pre>{html.escape(points.describe())}</pre>"
        + points.summary()
        .filter(regex=r"^(?!y\d)")
        .to_html(float_format="%.3f", classes="fixed-points")
        + "<p>Posterior probability of each number of fixed points: by class (columns) and in "
        "total (last column); rows are the number.</p>"
        + points.count_distribution().to_html(float_format="%.3f")
        + figure_html(points.phase_portrait(), f"fixed points of all draws of {name} by class")
        + figure_html(points.eigenvalue_figure(), f"eigenvalues at the fixed points of {name}")
    )


def data_fit_html(tree, name: str, trials: Sequence[int] | None = None) -> str:
    """Per trial chosen (default: the first and the middle one): the fit and latent figures.

    The fit figure (:func:`trial_fit_figure`) sets the smoothed prediction given the trial's
    own data beside the fresh-path posterior predictive, for the 4 channels whose observed
    values vary most, named by the recording's unit ids; the latent figure shows the trial's
    latent path posterior where the run has one (:func:`posterior_paths`).
    """
    observed_ds = tree["observed_data"].to_dataset()
    site = next(iter(observed_ds.data_vars))
    observed = observed_ds[site]
    if observed.ndim != 3:
        return ""
    fresh = None
    if "posterior_predictive" in tree.children and site in tree["posterior_predictive"]:
        values = tree["posterior_predictive"][site].values
        fresh = values.reshape(-1, *values.shape[2:])
    labels, time = observed["trial"].values, observed["time"].values
    chosen = sorted({0, len(labels) // 2}) if trials is None else trials
    # The 4 channels that vary most (the active neurons of a spike-count recording).
    spread = np.nanvar(observed.values, axis=(0, 1))
    units = observed["neuron"].values
    channels = [(int(j), f"neuron {units[j]}") for j in np.argsort(-spread, kind="stable")[:4]]
    found = posterior_paths(tree, chosen)
    out = ""
    for row, index in enumerate(chosen):
        paths = None if found is None else found[2][row]
        smoothed = None if found is None else smoothed_prediction(found[0], found[1], paths)
        label = f"trial {labels[index]}"
        out += figure_html(
            trial_fit_figure(
                time,
                observed.values[index],
                smoothed,
                None if fresh is None else fresh[:, index],
                f"{name}, {label}",
                channels,
            ),
            f"{label}: left, the fit given the trial's own data (smoothed prediction of the "
            "emission mean with its 90% credible band); right, the 90% posterior predictive "
            "band of new data from fresh latent paths, the calibration check",
        )
        if paths is not None:
            out += figure_html(
                latent_figure(paths, time, f"{label}: latents of {name}"),
                f"{label}: posterior median and 90% credible band of each latent coordinate "
                f"given the trial ({paths.shape[0]} draws); latent coordinates are "
                "identified only up to the model's symmetries (for linear readouts, an "
                "invertible map)",
            )
    return out


#: LOO-PIT needs one Pareto-smoothed fit per observed element: beyond this many it is left out.
MAX_LOO_PIT_ELEMENTS = 50_000
#: Pareto smoothing needs a tail of at least 5 draws (ArviZ: min(0.2 S, 3 sqrt S) >= 5).
MIN_PSIS_DRAWS = 25


def arviz_diagnostics_html(tree) -> str:
    """arviz-plots' own figures of a run: rank and energy (MCMC), PPC, LOO-PIT, Pareto k.

    Rank plots show up to three parameters of at most 9 values each; LOO-PIT is drawn where
    the run has pointwise log likelihoods of at most :data:`MAX_LOO_PIT_ELEMENTS` elements;
    Pareto k is that of leaving one trial out. ArviZ's warnings are shown under the figures.
    """
    import warnings

    import arviz as az
    import arviz_plots as azp

    from probdyn.inference.arviz import per_trial_variable

    children = tree.children
    figures, figures_note = [], ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if "sample_stats" in children and "energy" in tree["sample_stats"]:
            posterior = tree["posterior"]
            small = [n for n in posterior.data_vars if posterior[n][0, 0].size <= 9][:3]
            if small:
                chart = azp.plot_rank_dist(tree, var_names=small, backend="matplotlib")
                figures.append((chart, "rank plots (uniform ranks: the chains agree)"))
            chart = azp.plot_energy(tree, backend="matplotlib")
            figures.append((chart, "energy: marginal and transition energies (BFMI)"))
        if "posterior_predictive" in children and "observed_data" in children:
            chart = azp.plot_ppc_dist(tree, backend="matplotlib", num_samples=50)
            figures.append((chart, "posterior predictive distribution of all observed values"))
        log_likelihood = tree["log_likelihood"] if "log_likelihood" in children else None
        draws = (
            0
            if log_likelihood is None
            else log_likelihood.sizes["chain"] * log_likelihood.sizes["draw"]
        )
        if 0 < draws < MIN_PSIS_DRAWS:
            figures_note = (
                f"LOO-PIT and Pareto k left out: {draws} posterior draws, Pareto smoothing "
                f"needs at least {MIN_PSIS_DRAWS}"
            )
        elif draws:
            observed = tree["observed_data"]
            site = next(iter(observed.data_vars))
            pointwise = (
                site in log_likelihood
                and log_likelihood[site].dims[2:] == observed[site].dims  # not a pre-2026-12-05 run
                and observed[site].size <= MAX_LOO_PIT_ELEMENTS
            )
            if pointwise:
                chart = azp.plot_loo_pit(tree, backend="matplotlib")
                figures.append((chart, "LOO-PIT of every observed element (uniform: calibrated)"))
            name = per_trial_variable(site)
            if name in log_likelihood:
                loo = az.loo(tree, var_name=name, pointwise=True)
                chart = azp.plot_khat(loo, backend="matplotlib")
                figures.append((chart, "Pareto k of leaving one trial out (above 0.7: unreliable)"))
    out = "".join(figure_html(chart.get_viz("figure"), caption) for chart, caption in figures)
    if figures_note:
        out += f"<p>{html.escape(figures_note)}.</p>"
    notes = sorted({str(w.message).splitlines()[0] for w in caught})
    if notes:
        out += "<p>ArviZ says: " + "; ".join(html.escape(n) for n in notes) + "</p>"
    return out


def run_sections(tree, name: str) -> list[tuple[str, str]]:
    """Report sections for one saved run (an ArviZ DataTree written by probdyn).

    Data and fit (:func:`data_fit_html`), fit diagnostics (the SVI loss trace, or R-hat, ESS and
    divergences of MCMC), the evidence when the run carries one, the fixed-point posterior when
    it carries one.
    """
    import arviz as az

    from probdyn.inference import Evidence

    children = tree.children
    sections = []
    if "observed_data" in children:
        observed = tree["observed_data"].to_dataset()
        site = next(iter(observed.data_vars))
        shape = " x ".join(f"{size} {dim}s" for dim, size in observed[site].sizes.items())
        body = f"<p>Observed <code>{html.escape(site)}</code>: {html.escape(shape)}.</p>"
        sections.append(("Data and fit", body + data_fit_html(tree, name)))
    diagnostics = ""
    if "optimization" in children:
        losses = tree["optimization"]["loss"].values
        diagnostics += figure_html(loss_figure(losses, f"SVI loss of {name}"), "SVI loss trace")
    if "sample_stats" in children and "diverging" in tree["sample_stats"]:
        divergences = int(tree["sample_stats"]["diverging"].values.sum())
        summary = az.summary(tree, kind="diagnostics")
        diagnostics += f"<p>{divergences} divergent transitions.</p>" + summary.to_html(
            float_format="%.3f"
        )
    diagnostics += arviz_diagnostics_html(tree)
    if diagnostics:
        sections.append(("Fit diagnostics", diagnostics))
    if "evidence" in children:
        evidence = Evidence.from_dataset(tree["evidence"].to_dataset())
        sections.append(("Evidence", f"<p>{html.escape(str(evidence))}</p>"))
    if "fixed_points" in children:
        from probdyn.analysis.fixed_points import FixedPointPosterior

        points = FixedPointPosterior.from_tree(tree)
        sections.append(("Fixed points", fixed_point_html(name, points)))
    return sections


def rates_band_figure(test, prediction, *, num_neurons: int = 3, num_trials: int = 2):
    """Predicted rates with their 90% band against the smoothed held-out spikes.

    ``test``: the held-out trials (file bins, all neurons, ``heldout`` flags); ``prediction``:
    their :class:`probdyn.app.nlb.Prediction`. Shows the ``num_neurons`` most active held-out
    neurons on the first ``num_trials`` trials, in spikes per second; the spikes are smoothed
    by the baseline's Gaussian kernel (60 ms at 5 ms bins).
    """
    from probdyn.app.nlb import gaussian_smooth

    plt = pyplot()
    dt = float(test.attrs["dt"])
    heldout = np.flatnonzero(test.heldout.values)
    spikes = test.spikes.values.astype(float)
    T = spikes.shape[1]
    chosen = heldout[np.argsort(-spikes[..., heldout].mean(axis=(0, 1)))[:num_neurons]]
    smoothed = gaussian_smooth(spikes[:num_trials][..., chosen], 0.06 / dt)
    fig, axes = plt.subplots(
        num_neurons, num_trials, figsize=(3.4 * num_trials, 1.6 * num_neurons), squeeze=False
    )
    time = np.arange(prediction.mean.shape[1]) * dt
    for i, neuron in enumerate(chosen):
        for j, ax in enumerate(axes[i]):
            ax.fill_between(
                time,
                prediction.lower[j, :, neuron] / dt,
                prediction.upper[j, :, neuron] / dt,
                color="#66ccee",
                alpha=0.5,
                lw=0,
                label="90% posterior band",
            )
            ax.plot(
                time,
                prediction.mean[j, :, neuron] / dt,
                color="#4477aa",
                lw=1.2,
                label="predicted rate",
            )
            ax.plot(
                time[:T],
                smoothed[j, :, i] / dt,
                color="k",
                lw=0.8,
                label="held-out spikes, smoothed",
            )
            if time.size > T:
                ax.axvline(time[T], color="0.5", lw=0.6, ls="--")
            ax.set_title(f"trial {int(test.trial.values[j])}, neuron {int(neuron)}", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[i, 0].set_ylabel("spikes/s", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time in trial (s); dashed: forward window", fontsize=8)
    axes[0, 0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    return fig


def nlb_sections(validation, *, seed: int = 0) -> list[tuple[str, str]]:
    """Report sections of an NLB :class:`~probdyn.app.nlb.CrossValidation`.

    Scores, rates, fixed points.
    """
    table = [
        {
            **{k: v for k, v in row.items() if k not in ("member_co_bps", "heldout_ll_per_trial")},
            "fold": str(row["fold"] + 1),
        }
        for row in validation.rows
    ]
    rows = pd.DataFrame([*table, {"fold": "mean", **validation.mean()}])
    scores = rows.to_html(float_format="%.3f", index=False) + (
        f"<p>Single members: {validation.member_spread()}; the ensemble averages their rates. "
        "Every score is on trials the fold's models never saw.</p>"
    )
    last = validation.folds[-1]
    prediction = last.ensemble.predictions["test"]
    figure = figure_html(
        rates_band_figure(last.test, prediction),
        f"fold {len(validation.folds)}: predicted rates of held-out neurons on trials the "
        "models never saw, with the 90% band of the posterior draws of all members",
    )
    points = last.ensemble.fixed_points(last.test, seed=seed)
    name = f"SeqVAE generator, fold {len(validation.folds)} ({len(last.ensemble.members)} members)"
    return [
        ("Scores", scores),
        ("Predicted rates", figure),
        ("Fixed points of the generator", fixed_point_html(name, points)),
    ]


def write_report(path: str | Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write one HTML file from (heading, html body) sections."""
    body = "\n".join(
        f"<section><h2>{html.escape(heading)}</h2>\n{content}</section>"
        for heading, content in sections
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;}}
table{{border-collapse:collapse;display:block;overflow-x:auto;max-width:100%}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}
figure{{margin:1em 0}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
