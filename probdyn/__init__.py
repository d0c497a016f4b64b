"""probdyn: probabilistic programming for latent neural dynamics.

The public surface: the data layer (:mod:`probdyn.data`), the model interface
(:class:`Model`, :class:`ModelData`, :func:`prior_predictive`), model families
(:mod:`probdyn.models`) and inference (:mod:`probdyn.inference`).
"""

from probdyn import data
from probdyn.errors import ConfigError, DataError, PriorError, ProbdynError
from probdyn.model import Model, ModelData, prior_predictive

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "Model",
    "ModelData",
    "PriorError",
    "ProbdynError",
    "data",
    "prior_predictive",
]
