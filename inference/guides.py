"""The guides ``svi`` builds: autoguides by name, amortised guides, and where they start."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpyro
from jax import Array
from numpyro.infer import autoguide

from probdyn.errors import ConfigError
from probdyn.inference.amortised import (
    AMORTISED_GUIDES,
    amortised_guide,
)
from probdyn.inference.density import Density
from probdyn.model import Model

GUIDES = {
    "normal": autoguide.AutoNormal,
    "mvn": autoguide.AutoMultivariateNormal,
    "delta": autoguide.AutoDelta,
    "laplace": autoguide.AutoLaplaceApproximation,
}
#: "auto" picks a full-covariance Gaussian up to this many free dimensions, AutoNormal above.
MVN_MAX_DIM = 400


def make_guide(
    guide,
    model: Model,
    density: Density,
    *,
    subsampled: bool = False,
    init_values: Mapping[str, Array] | None = None,
    init_scale: float | None = None,
):
    """An autoguide by name on the bound program, or the user's guide callable unchanged.

    Names: ``"auto"`` (``"mvn"`` up to :data:`MVN_MAX_DIM` free dimensions without
    subsampling, else ``"normal"``), ``"normal"``, ``"mvn"``, ``"delta"``, ``"laplace"``. The
    guide's trial plate is the model's, so minibatches subsample both alike.
    """
    if callable(guide) and not isinstance(guide, str):
        return guide
    if guide == "auto":
        guide = "mvn" if density.dim <= MVN_MAX_DIM and not subsampled else "normal"
    if guide not in GUIDES and guide not in AMORTISED_GUIDES:
        raise ConfigError(
            f"guide={guide!r}; expected 'auto', one of {sorted(GUIDES | AMORTISED_GUIDES)} or a "
            "callable"
        )
    values = dict(init_values) if init_values else prior_medians(density)
    options = {"init_loc_fn": functools.partial(start_at, values=values)}
    if init_scale is not None and guide in ("normal", "mvn", "amortised"):
        options["init_scale"] = init_scale
    if guide in AMORTISED_GUIDES:
        return amortised_guide(guide, model, density.program, **options)
    if guide in ("normal", "delta"):
        options["create_plates"] = model.trial_plate
    elif subsampled:
        raise ConfigError(f"guide={guide!r} cannot subsample trials; use 'normal' or 'delta'")
    return GUIDES[guide](density.program, **options)


def prior_medians(density: Density, num_samples: int = 15) -> dict[str, Array]:
    """Per-site medians of joint prior draws: where the guides start by default.

    Like NumPyro's ``init_to_median``, but the draws come from one compiled, vectorised run of
    the program instead of eager per-site sampling, which took seconds per model.
    """
    unobserved = dataclasses.replace(density.data, observations=None, mask=None)
    predictive = numpyro.infer.Predictive(
        density.program, num_samples=num_samples, return_sites=list(density.shapes)
    )
    draws = jax.jit(predictive)(jax.random.key(0), unobserved)
    medians = {name: jnp.median(value, axis=0) for name, value in draws.items()}
    # Entrywise medians of a simplex do not sum to one: back onto the simplex.
    for name, support in density.supports.items():
        while hasattr(support, "base_constraint"):  # independent(simplex, 1): rows of a matrix
            support = support.base_constraint
        if support is numpyro.distributions.constraints.simplex:
            medians[name] = medians[name] / medians[name].sum(-1, keepdims=True)
    return medians


def start_at(site=None, values: Mapping[str, Array] | None = None):
    """An init strategy: the given value where its shape fits the site, else the site's median.

    Under trial subsampling a local site has the batch's shape, not the full data's, and falls
    back to NumPyro's ``init_to_median``. Used as ``functools.partial(start_at, values=...)``.
    """
    if site is None:
        return functools.partial(start_at, values=values)
    value = (values or {}).get(site["name"])
    if (
        site["type"] == "sample"
        and not site["is_observed"]
        and value is not None
        and jnp.shape(value) == tuple(site["fn"].shape())
    ):
        return value
    return numpyro.infer.init_to_median(site, num_samples=15)
