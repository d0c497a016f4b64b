"""Figures of a fixed-point posterior (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

import numpy as np

from probdyn.analysis.fixed_points.classification import CLASSES
from probdyn.analysis.fixed_points.dynamics import residual

#: One colour per stability class (colour-blind safe, Paul Tol's bright scheme).
CLASS_COLOURS = ("#228833", "#66ccee", "#ee6677", "#aa3377", "#ccbb44", "#bbbbbb")


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: fits need no plotting)."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":  # switching closes open figures (3.9 warns)
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def phase_portrait_figure(posterior, dims: tuple[int, int] | None = None):
    """Fixed points of all draws in the reference draw's latent coordinates, coloured by class.

    Two latent dims: the reference draw's field (``f(x)`` for flows, ``F(x) - x`` for maps) as
    streamlines underneath. More: the two given ``dims``, or else the first two principal
    components of the points. One latent dim: the field of the reference draw along the line.
    """
    import jax

    plt = pyplot()
    ds = posterior.dataset
    points = ds["aligned_location"].values
    codes = ds["stability"].values
    present = codes >= 0
    fig, ax = plt.subplots(figsize=(5, 4.5))
    latent_dim = points.shape[-1]
    model, params, u = posterior.model, posterior.reference_params, posterior.inputs

    def field(x):
        return residual(model, params, x, u)

    flat = points[present]
    if latent_dim == 1:
        low, high = flat.min() - 1, flat.max() + 1
        grid = np.linspace(low, high, 200)[:, None]
        ax.plot(grid[:, 0], np.asarray(jax.vmap(field)(grid))[:, 0], color="0.5", lw=1)
        ax.axhline(0, color="k", lw=0.6)
        coords = np.stack([points[..., 0], np.zeros(points.shape[:-1])], axis=-1)
        labels = ("x0", "f(x)" if ds.attrs["kind"] == "flow" else "F(x) - x")
    elif latent_dim == 2 or dims is not None:
        i, j = dims or (0, 1)
        coords = points[..., [i, j]]
        labels = (f"x{i}", f"x{j}")
        if latent_dim == 2 and len(flat):
            pad = 0.3 * (np.ptp(flat, axis=0) + 1)
            gx, gy = np.meshgrid(
                np.linspace(flat[:, 0].min() - pad[0], flat[:, 0].max() + pad[0], 25),
                np.linspace(flat[:, 1].min() - pad[1], flat[:, 1].max() + pad[1], 25),
            )
            grid = np.stack([gx.ravel(), gy.ravel()], axis=-1)
            flow = np.asarray(jax.vmap(field)(grid)).reshape(*gx.shape, 2)
            ax.streamplot(gx, gy, flow[..., 0], flow[..., 1], color="0.75", density=0.8)
    else:
        centred = flat - flat.mean(axis=0)
        # Full matrices: two axes even when fewer than two points exist.
        _, _, vt = np.linalg.svd(centred, full_matrices=True)
        coords = (points - flat.mean(axis=0)) @ vt[:2].T
        labels = ("PC 1 of the points", "PC 2 of the points")
    for code, name in enumerate(CLASSES):
        chosen = codes == code
        if chosen.any():
            ax.scatter(*coords[chosen].T, s=12, alpha=0.5, color=CLASS_COLOURS[code], label=name)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(f"fixed points of {ds.sizes['draw']} posterior draws")
    ax.legend(fontsize=7, loc="best")
    return fig


def eigenvalue_figure(dataset, level: float = 0.9):
    """Eigenvalues of all draws per matched point, with the leading one's central interval box.

    The stability boundary is drawn: the imaginary axis for flows, the unit circle for maps.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    real, imag = dataset["eigenvalue_real"].values, dataset["eigenvalue_imag"].values
    low, high = (1 - level) / 2, (1 + level) / 2
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k in dataset["fixed_point"].values:
        exists = dataset["exists"].values[:, k]
        if not exists.any():
            continue
        colour = colours[k % len(colours)]
        ax.scatter(real[exists, k].ravel(), imag[exists, k].ravel(), s=6, alpha=0.3, color=colour)
        lead_re = np.quantile(real[exists, k, 0], [low, high])
        lead_im = np.quantile(np.abs(imag[exists, k, 0]), [low, high])
        ax.add_patch(
            plt.Rectangle(
                (lead_re[0], lead_im[0]),
                lead_re[1] - lead_re[0],
                lead_im[1] - lead_im[0],
                fill=False,
                color=colour,
                lw=1.5,
                label=f"point {k}: leading, {round(100 * level)}% interval",
            )
        )
    if dataset.attrs["kind"] == "map":
        angle = np.linspace(0, 2 * np.pi, 200)
        ax.plot(np.cos(angle), np.sin(angle), color="k", lw=0.6)
    else:
        ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("Re eigenvalue")
    ax.set_ylabel("Im eigenvalue")
    ax.legend(fontsize=7, loc="best")
    return fig
