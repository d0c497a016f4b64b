"""probdyn: probabilistic programming for latent neural dynamics.

The public surface: the data layer (:mod:`probdyn.data`), the model interface
(:class:`Model`, :class:`ModelData`, :func:`prior_predictive`), model families
(:mod:`probdyn.models`), inference (:mod:`probdyn.inference`) and the posterior over fixed
points (:func:`fixed_points`). Subpackages load on first use (``import probdyn`` then
``probdyn.models.LDS`` or ``probdyn.inference.svi``).

The house, from the bottom up (each layer imports only those below it; ``pyproject.toml``
states the contract and CI checks it): :mod:`probdyn.errors`; :mod:`probdyn.data`,
:mod:`probdyn.algorithms` and :mod:`probdyn.runtime`; the model interface
(:mod:`probdyn.model`, :mod:`probdyn.capabilities`, :mod:`probdyn.state_space`);
:mod:`probdyn.models`; :mod:`probdyn.inference`; :mod:`probdyn.analysis`; :mod:`probdyn.app`.
"""

import importlib

import numpyro

from probdyn.errors import ConfigError, DataError, PriorError, ProbdynError
from probdyn.runtime.imports import bind_submodules

bind_submodules(numpyro.__name__)  # an earlier `import arviz` may have left them unbound

from probdyn.model import Model, ModelData, prior_predictive  # noqa: E402

__version__ = "0.1.0"

_SUBPACKAGES = ("algorithms", "analysis", "app", "data", "inference", "models", "runtime")
_FROM_ANALYSIS = ("Dynamics", "FixedPointPosterior", "fixed_points")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"probdyn.{name}")
    if name in _FROM_ANALYSIS:
        return getattr(importlib.import_module("probdyn.analysis.fixed_points"), name)
    raise AttributeError(f"module 'probdyn' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "DataError",
    "Dynamics",
    "FixedPointPosterior",
    "Model",
    "ModelData",
    "PriorError",
    "ProbdynError",
    "data",
    "fixed_points",
    "inference",
    "models",
    "prior_predictive",
]
