"""Self-contained HTML reports (figures embedded as PNG) for runs and comparisons.

Needs matplotlib (``pip install probdyn[plot]``); everything else in probdyn works without it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from probdyn.errors import ConfigError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ConfigError("reports need matplotlib: pip install 'probdyn[plot]'") from error
    return plt


def figure_html(fig, caption: str) -> str:
    """Embed a matplotlib figure as a base64 PNG with a caption, and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def evidence_figure(table: pd.DataFrame):
    """Bar chart of log evidence relative to the best model, with 2-standard-error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 0.5 + 0.5 * len(table)))
    ax.barh(
        table["model"], table["delta"], xerr=2 * table["standard_error"].fillna(0), color="#4477aa"
    )
    ax.axvline(0, color="k", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("log evidence - best (nats), bars: 2 standard errors")
    return fig


def trajectories_figure(observed: np.ndarray, predicted: np.ndarray | None, dt: float, title: str):
    """Observed traces of the first trial, with the posterior predictive 90% band when given."""
    plt = _pyplot()
    channels = min(observed.shape[-1], 4)
    fig, axes = plt.subplots(channels, 1, figsize=(7, 1.4 * channels), sharex=True, squeeze=False)
    time = np.arange(observed.shape[1]) * dt
    for j, ax in enumerate(axes[:, 0]):
        ax.plot(time, observed[0, :, j], "k.", ms=3, label="observed")
        if predicted is not None:
            low, mid, high = np.quantile(predicted[:, 0, :, j], [0.05, 0.5, 0.95], axis=0)
            ax.fill_between(time, low, high, color="#66ccee", alpha=0.5, label="90% predictive")
            ax.plot(time, mid, color="#4477aa", lw=1)
        ax.set_ylabel(f"channel {j}")
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("time")
    return fig


def loss_figure(losses: np.ndarray, title: str):
    """SVI loss (negative ELBO) trace."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.plot(losses, lw=0.8)
    ax.set_yscale("symlog")
    ax.set_xlabel("step")
    ax.set_ylabel("-ELBO")
    ax.set_title(title)
    return fig


def write_report(path: str | Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write one HTML file from (heading, html body) sections."""
    body = "\n".join(
        f"<section><h2>{html.escape(heading)}</h2>\n{content}</section>"
        for heading, content in sections
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}
figure{{margin:1em 0}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
