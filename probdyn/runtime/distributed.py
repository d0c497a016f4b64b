"""Several processes (hosts) as one JAX runtime, through ``jax.distributed``.

Every process runs the same program on the same inputs (SPMD): the mesh of
:mod:`probdyn.runtime.devices` then spans the devices of all of them, arrays are split across
processes, and process 0 writes the results. This module imports nothing that touches a device,
so it can run first, as :func:`initialize` must.
"""

from __future__ import annotations

import contextlib
import os

import jax

from probdyn.errors import ConfigError

#: Environment variables read by :func:`initialize` when its arguments are not given.
ENVIRONMENT = ("PROBDYN_COORDINATOR", "PROBDYN_NUM_PROCESSES", "PROBDYN_PROCESS_ID")


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Join several processes (hosts) into one JAX runtime with ``jax.distributed``.

    Arguments fall back to ``$PROBDYN_COORDINATOR`` (``host:port`` of process 0),
    ``$PROBDYN_NUM_PROCESSES`` and ``$PROBDYN_PROCESS_ID``. With no coordinator anywhere this is
    a single-process run and nothing happens (returns False). On CPU, collectives go through
    gloo. Must run before anything else touches JAX's devices.
    """
    coordinator = coordinator or os.environ.get(ENVIRONMENT[0])
    if not coordinator:
        return False
    num_processes = num_processes if num_processes is not None else os.environ.get(ENVIRONMENT[1])
    process_id = process_id if process_id is not None else os.environ.get(ENVIRONMENT[2])
    try:
        num_processes, process_id = int(num_processes), int(process_id)
    except (TypeError, ValueError):
        raise ConfigError(
            f"a coordinator ({coordinator}) needs the number of processes and this process's id "
            f"as integers (--num-processes/--process-id or ${ENVIRONMENT[1]}/${ENVIRONMENT[2]}); "
            f"got {num_processes!r} and {process_id!r}"
        ) from None
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(
            f"process id {process_id} of {num_processes} processes; expected "
            "0 <= id < number of processes"
        )
    if ":" not in coordinator:
        raise ConfigError(f"coordinator = {coordinator!r}; expected host:port")
    with contextlib.suppress(AttributeError):  # older JAX: no such option
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    return True
