"""probdyn: probabilistic programming for latent neural dynamics.

The public surface: the data layer (:mod:`probdyn.data`), the model interface
(:class:`Model`, :class:`ModelData`, :func:`prior_predictive`), model families
(:mod:`probdyn.models`), inference (:mod:`probdyn.inference`) and the posterior over fixed
points (:func:`fixed_points`).
"""

from probdyn import data
from probdyn.errors import ConfigError, DataError, PriorError, ProbdynError
from probdyn.fixed_point_posterior import Dynamics, FixedPointPosterior, fixed_points
from probdyn.model import Model, ModelData, prior_predictive

__version__ = "0.1.0"

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
    "prior_predictive",
]
