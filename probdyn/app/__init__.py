"""The application: the ``probdyn`` command, its configs, the demo, reports and the NLB runner.

The only layer that may import every other (see the import contract in ``pyproject.toml``).
"""

from probdyn._lazy import lazy_submodules

__getattr__ = lazy_submodules(__name__, ("cli", "config", "demo", "nlb", "report"))
