"""Where and how programs run: compilation cache, devices, processes, memory, checkpoints.

:mod:`~probdyn.runtime.compilation` (the persistent compile cache), :mod:`~probdyn.runtime.devices`
(meshes and sharding), :mod:`~probdyn.runtime.distributed` (multi-process runs),
:mod:`~probdyn.runtime.memory` (budgets and chunked maps) and
:mod:`~probdyn.runtime.checkpoint` (resumable state on disk) and
:mod:`~probdyn.runtime.imports` (repairs for import orders that break a dependency).
"""

from probdyn._lazy import lazy_submodules

__getattr__ = lazy_submodules(
    __name__, ("checkpoint", "compilation", "devices", "distributed", "imports", "memory")
)
