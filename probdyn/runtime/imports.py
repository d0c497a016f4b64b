"""Repairs for import orders that leave a dependency's namespace incomplete.

ArviZ (``arviz_base``) loads NumPyro lazily. When ``import arviz`` comes before the first
``import numpyro.distributions``, NumPyro's submodules (``numpyro.distributions.distribution``
and its siblings) are imported but not bound as attributes of their package, and NumPyro's
own ``numpyro.factor`` (``numpyro.distributions.distribution.Unit``), which every NUTS or SVI
run calls for constrained sites, fails with an ``AttributeError``. :func:`bind_submodules`
binds them again; ``import probdyn`` runs it, so the order of a user's imports does not matter.
"""

from __future__ import annotations

import sys


def bind_submodules(package: str = "numpyro") -> list[str]:
    """Bind every imported ``package.*`` module as an attribute of its parent; names bound."""
    bound = []
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(package + "."):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = sys.modules.get(parent_name)
        if parent is not None and not hasattr(parent, child):
            setattr(parent, child, module)
            bound.append(name)
    return bound
