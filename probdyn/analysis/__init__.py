"""Analyses of fitted models: fixed points, nonequilibrium, ablations, transitions, metrics.

:mod:`~probdyn.analysis.fixed_points` (the posterior over fixed points),
:mod:`~probdyn.analysis.nonequilibrium` (entropy production, probability currents),
:mod:`~probdyn.analysis.ablation` (a network without its antisymmetric part or a population),
:mod:`~probdyn.analysis.transitions` (switching between attractors and its order),
:mod:`~probdyn.analysis.mechanism` (what an emulator's hidden states do),
:mod:`~probdyn.analysis.symbols` (statistics of symbol sequences) and
:mod:`~probdyn.analysis.metrics` (scores of predictions: co-bps, R², trajectory distances).
They read models and inference results, never the application.
"""

from probdyn._lazy import lazy_submodules

__getattr__ = lazy_submodules(
    __name__,
    (
        "ablation",
        "fixed_points",
        "mechanism",
        "metrics",
        "nonequilibrium",
        "symbols",
        "transitions",
    ),
)
