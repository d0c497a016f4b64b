"""Model families, each a generative NumPyro program behind :class:`probdyn.Model`."""

from probdyn.models.hmm import HMM
from probdyn.models.lds import LDS

__all__ = ["HMM", "LDS"]
