"""The posterior over fixed points: the dataset of every draw's points and its summaries."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr
from jax import Array

from probdyn.analysis.fixed_points.classification import CLASSES
from probdyn.analysis.fixed_points.figures import eigenvalue_figure, phase_portrait_figure
from probdyn.errors import ConfigError
from probdyn.models import from_spec


@dataclasses.dataclass(frozen=True)
class FixedPointPosterior:
    """Fixed points of every posterior draw, matched across draws.

    ``dataset`` has dims (draw, fixed_point, latent, neuron, eigen): ``exists``, ``location``
    (the draw's own latent coordinates), ``aligned_location`` (the reference draw's
    coordinates), ``observation_mean``, ``eigenvalue_real``/``eigenvalue_imag`` (leading first:
    largest real part for flows, largest modulus for maps; at a kink, those of the linear
    region the leading perturbation ends in), ``stability`` (codes into :data:`CLASSES`, -1
    where the point is absent), ``kink`` (the point sits where the field is not
    differentiable: classified by its local dynamics, :mod:`~probdyn.analysis.fixed_points.local`),
    ``growth_rate`` (the leading growth of perturbations: log per step for maps, per unit time
    for flows), ``residual``; absent entries are NaN. Results saved before kinks were detected
    lack ``kink`` and ``growth_rate`` and read as smooth.
    """

    dataset: xr.Dataset
    model: Any
    reference_params: Mapping[str, Array]
    inputs: Array | None = None

    def _classes(self) -> np.ndarray:
        return self.dataset["stability"].values

    def summary(self, level: float = 0.9) -> pd.DataFrame:
        """One row per matched fixed point.

        Columns: ``p_exists`` (share of draws that have it), ``class`` and ``p_class`` (its most
        probable class and that class's probability given that the point exists),
        ``p_stable``, ``p_kink`` (share of its draws where it sits on a kink), then mean and
        central ``level`` interval (``q05``/``q95`` at 0.9) of each
        aligned latent coordinate ``x{i}``, each observation-space coordinate ``y{j}``, and the
        leading eigenvalue's real part and absolute imaginary part, and of the growth rate.
        """
        ds = self.dataset
        low, high = (1 - level) / 2, (1 + level) / 2
        names = (f"q{round(100 * low):02d}", f"q{round(100 * high):02d}")
        stable = [CLASSES.index("stable node"), CLASSES.index("stable spiral")]
        rows = []
        for k in ds["fixed_point"].values:
            exists = ds["exists"].values[:, k]
            codes = self._classes()[exists, k]
            counts = np.bincount(codes, minlength=len(CLASSES))
            row = {
                "fixed_point": int(k),
                "p_exists": exists.mean(),
                "class": CLASSES[int(np.argmax(counts))],
                "p_class": counts.max() / max(counts.sum(), 1),
                "p_stable": np.isin(codes, stable).mean(),
                "p_kink": ds["kink"].values[exists, k].mean() if "kink" in ds else 0.0,
            }
            columns = {
                **{
                    f"x{i}": ds["aligned_location"].values[exists, k, i]
                    for i in range(ds.sizes["latent"])
                },
                **{
                    f"y{j}": ds["observation_mean"].values[exists, k, j]
                    for j in range(ds.sizes["neuron"])
                },
                "lead_real": ds["eigenvalue_real"].values[exists, k, 0],
                "lead_imag_abs": np.abs(ds["eigenvalue_imag"].values[exists, k, 0]),
            }
            if "growth_rate" in ds:
                columns["growth_rate"] = ds["growth_rate"].values[exists, k]
            for name, values in columns.items():
                row[f"{name}_mean"] = values.mean()
                row[f"{name}_{names[0]}"] = np.quantile(values, low)
                row[f"{name}_{names[1]}"] = np.quantile(values, high)
            rows.append(row)
        return pd.DataFrame(rows).set_index("fixed_point")

    def describe(self) -> str:
        """A few lines for a terminal: each matched point's class, probabilities, eigenvalue."""
        summary = self.summary()
        counts = self.count_distribution()["total"]
        lines = [
            f"fixed points over {self.dataset.sizes['draw']} posterior draws; number of points: "
            + ", ".join(f"{n}: {p:.2f}" for n, p in counts.items() if p > 0)
        ]
        per = "per step" if self.dataset.attrs["kind"] == "map" else "per unit time"
        for k, row in summary.iterrows():
            share = "<1" if 0 < row["p_exists"] < 0.01 else f"{100 * row['p_exists']:.0f}"
            line = (
                f"  point {k}: {row['class']} (P = {row['p_class']:.2f}), exists in "
                f"{share}% of draws, P(stable) = {row['p_stable']:.2f}, "
            )
            if row["p_kink"] > 0.5:
                # On a kink the eigenvalues are one region's; the growth is what happens.
                growth = row["growth_rate_mean"]
                factor = f"x{np.exp(growth):.3f}" if per == "per step" else f"{growth:.3f}"
                line += (
                    f"on a kink of the field in {100 * row['p_kink']:.0f}% of draws: "
                    f"perturbations grow by {factor} {per} (mean over draws)"
                )
            else:
                line += (
                    f"leading eigenvalue {row['lead_real_mean']:.3f} "
                    f"± {row['lead_imag_abs_mean']:.3f}i"
                )
            lines.append(line)
        return "\n".join(lines)

    def count_distribution(self) -> pd.DataFrame:
        """Posterior probability of each number of fixed points, in total and by class."""
        codes = self._classes()
        counts = {c: (codes == i).sum(axis=1) for i, c in enumerate(CLASSES)}
        counts["total"] = (codes >= 0).sum(axis=1)
        largest = max(int(v.max()) for v in counts.values())
        table = pd.DataFrame(
            {c: np.bincount(v, minlength=largest + 1) / len(v) for c, v in counts.items()}
        )
        table.index.name = "number"
        return table

    def in_credible_region(
        self, value, fixed_point: int, *, level: float = 0.9, space: str = "observation"
    ) -> bool:
        r"""Whether ``value`` lies in the ``level`` credible region of one matched point.

        The region is the ellipsoid :math:`(v - \bar v)^\top \Sigma^{+} (v - \bar v) \le c`
        of the draws' mean and covariance, with :math:`c` the ``level`` quantile of the draws'
        own Mahalanobis distances (no Gaussian assumption on their spread). ``space`` is
        ``"observation"`` or ``"latent"`` (reference draw's coordinates). A point that exists in
        fewer than two draws has no region (False).
        """
        variable = {"observation": "observation_mean", "latent": "aligned_location"}.get(space)
        if variable is None:
            raise ConfigError(f"space={space!r}; expected 'observation' or 'latent'")
        exists = self.dataset["exists"].values[:, fixed_point]
        draws = self.dataset[variable].values[exists, fixed_point]
        if len(draws) < 2:
            return False
        mean = draws.mean(axis=0)
        precision = np.linalg.pinv(np.atleast_2d(np.cov(draws, rowvar=False)), rcond=1e-10)

        def distance(v):
            centred = np.asarray(v) - mean
            return np.einsum("...i,ij,...j->...", centred, precision, centred)

        return bool(distance(value) <= np.quantile(distance(draws), level))

    @classmethod
    def from_tree(cls, tree: xr.DataTree) -> FixedPointPosterior:
        """The result saved in a run's ``fixed_points`` group (see :meth:`attach`)."""
        import json

        if "fixed_points" not in tree.children:
            raise ConfigError("the run has no fixed_points group; run probdyn fixed-points on it")
        dataset = tree["fixed_points"].to_dataset().load()
        model = from_spec(json.loads(tree["posterior"].attrs["model"]))
        reference = {
            name.removeprefix("reference_"): jnp.asarray(value.values)
            for name, value in dataset.data_vars.items()
            if name.startswith("reference_")
        }
        return cls(dataset, model, reference)

    def attach(self, tree: xr.DataTree) -> xr.DataTree:
        """A copy of an ArviZ DataTree with this result as its ``fixed_points`` group."""
        tree = tree.copy()
        tree["fixed_points"] = xr.DataTree(self.dataset)
        return tree

    def phase_portrait(self, dims: tuple[int, int] | None = None):
        """Matplotlib figure: aligned fixed points of all draws coloured by class (see report)."""
        return phase_portrait_figure(self, dims)

    def eigenvalue_figure(self, level: float = 0.9):
        """Matplotlib figure: eigenvalues of every draw and the leading one's credible box."""
        return eigenvalue_figure(self.dataset, level)
