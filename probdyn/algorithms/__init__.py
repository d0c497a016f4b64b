"""Algorithms over latent paths and distributions, free of any model family.

The Kalman filter and smoother (:mod:`~probdyn.algorithms.kalman`), the forward algorithm of
discrete HMMs (:mod:`~probdyn.algorithms.hmm`), Euler-Maruyama transition densities
(:mod:`~probdyn.algorithms.sde`), the bootstrap particle filter
(:mod:`~probdyn.algorithms.particle_filter`), entropic optimal transport
(:mod:`~probdyn.algorithms.optimal_transport`) and the dependence measures of latent groups
(:mod:`~probdyn.algorithms.independence`). They import nothing of probdyn but its errors.
"""

from probdyn._lazy import lazy_submodules

__getattr__ = lazy_submodules(
    __name__,
    ("hmm", "independence", "kalman", "optimal_transport", "particle_filter", "sde"),
)
