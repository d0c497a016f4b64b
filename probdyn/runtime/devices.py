r"""The devices probdyn spreads work over, through JAX's own sharding.

Every parallel path uses one mesh with a single axis, :data:`AXIS`, over the visible devices (those
of all processes once :func:`probdyn.runtime.distributed.initialize` has joined several): NUTS
chains, SMC particles and SVI trials are split along it, everything else is replicated. A batch of
:math:`n` items goes on the largest number of devices :math:`d \le` ``jax.device_count()`` that
divides :math:`n`, so that every device holds :math:`n / d` of them and none is padded or dropped.

Arrays are placed by :func:`shard` from values every process holds in full (the data are read by
each process, as ``probdyn fit`` does), so the same code runs on one device, on several devices of
one process, and on several processes. Results come back by :func:`to_host`, which gathers
shards held by other processes.

Eigen-decompositions of non-symmetric matrices, which JAX only runs on CPU, are done by NumPy on
the host in :mod:`probdyn.analysis.fixed_points`, after one explicit transfer of all Jacobians.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from probdyn.errors import ConfigError

#: Name of the one mesh axis that chains, particles and trials are split along.
AXIS = "batch"
#: ``jax.transfer_guard`` level inside hot loops (SVI chunks, the SMC run). Tests set it to
#: ``"disallow"`` so that any implicit host-device transfer there fails.
HOT_LOOP_TRANSFER_GUARD = "allow"


def mesh(size: int, num_devices: int | None = None) -> Mesh:
    """A one-axis mesh for a batch of ``size`` items.

    ``num_devices`` (default: every visible device) caps the number of devices; the mesh takes
    the largest count up to it that divides ``size``.
    """
    available = jax.device_count()
    if num_devices is None:
        num_devices = available
    if not isinstance(num_devices, int) or not 1 <= num_devices <= available:
        raise ConfigError(f"num_devices = {num_devices!r}; expected 1..{available} (visible)")
    count = max(d for d in range(1, num_devices + 1) if size % d == 0)
    if jax.process_count() > 1 and count != available:
        raise ConfigError(
            f"{size} items cannot be split evenly over all {available} devices of "
            f"{jax.process_count()} processes; use a multiple of {available}"
        )
    auto = (jax.sharding.AxisType.Auto,)
    return Mesh(np.asarray(jax.devices()[:count]), (AXIS,), axis_types=auto)


def split(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def shard(tree, mesh: Mesh):
    """Place every array leaf of ``tree`` with its leading axis split over ``mesh``.

    Each process must hold the full values; it places the shards for its own devices.
    """
    return place(tree, split(mesh))


def shard_batch(tree, mesh: Mesh, size: int):
    """Split the leaves whose leading axis has ``size`` entries over ``mesh``, replicate the rest.

    Per-trial parameters (a guide's local sites) then live with their trials' data: sharding
    the data alone made XLA gather them on every step (85 times slower on two CPU devices).
    """

    def put(leaf):
        value = np.asarray(jax.device_get(leaf))
        batched = value.ndim > 0 and value.shape[0] == size
        return place(value, split(mesh) if batched else replicated(mesh))

    return jax.tree_util.tree_map(put, tree)


def place(tree, sharding: jax.sharding.Sharding):
    """Place every array leaf of ``tree`` as ``sharding`` says, from values every process holds."""

    def put(leaf):
        value = np.asarray(jax.device_get(leaf))
        if jax.process_count() == 1:
            return jax.device_put(value, sharding)  # explicit: allowed in hot loops
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree_util.tree_map(put, tree)


def to_host(tree):
    """NumPy copies of every leaf, gathering shards that other processes hold.

    Replicated leaves are read from a local copy; the split ones of all leaves are gathered
    in one collective (each gather synchronises the processes).
    """
    leaves, structure = jax.tree_util.tree_flatten(tree)
    split_across_processes = []
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            leaves[i] = np.asarray(jax.device_get(leaf))
        elif leaf.sharding.is_fully_replicated:
            leaves[i] = np.asarray(jax.device_get(leaf.addressable_data(0)))
        else:
            split_across_processes.append(i)
    if split_across_processes:
        gathered = multihost_utils.process_allgather(
            [leaves[i] for i in split_across_processes], tiled=True
        )
        for i, value in zip(split_across_processes, gathered, strict=True):
            leaves[i] = np.asarray(value)
    return jax.tree_util.tree_unflatten(structure, leaves)


def map_over_mesh(fn, mesh: Mesh):
    """``fn`` of one item, mapped over a batch whose leading axis is split over ``mesh``.

    Each device runs ``jax.vmap(fn)`` over its own block with no communication (``shard_map``),
    so independent chains never wait for each other.
    """
    spec = PartitionSpec(AXIS)
    mapped = jax.shard_map(jax.vmap(fn), mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    return jax.jit(mapped)


def hot_loop():
    """Context for a hot loop: the transfer guard at :data:`HOT_LOOP_TRANSFER_GUARD`."""
    return jax.transfer_guard(HOT_LOOP_TRANSFER_GUARD)


def is_main_process() -> bool:
    """Whether this process writes results (process 0; always true for one process)."""
    return jax.process_index() == 0
