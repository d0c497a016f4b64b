r"""A memory budget for work over many draws, particles, importance samples or starts.

Every step that evaluates a model once per item of a large batch (posterior draws, importance
samples, SMC particles, fixed-point starts, Hessian columns) runs the batch in chunks whose size
comes from a budget in bytes, never from a count alone, so that a recording of hundreds of trials
does not grow a ``vmap`` over thousands of items past the machine's memory.

The budget. A process-wide memory limit :math:`M` (default: the resident memory when first read
plus :data:`DEFAULT_FRACTION` of the memory the machine reported available then;
``probdyn fit --memory-limit``, the config key ``memory_limit`` or :func:`limit` change it).
A chunked step may use :math:`B = (M - R) / \text{SAFETY}` where :math:`R` is the process's
resident memory as the step starts: the factor :data:`SAFETY` covers what the bound below does
not see (XLA's workspace, the copy of each chunk's results to the host). Chunks of more than one
item stay within :data:`MAX_CHUNK_BYTES` as well, where they stop running faster.

The cost of one item. The function over one item is traced (never compiled for this) at chunk
sizes 1 and 2; for each traced program the bytes of every intermediate value are added up,
sub-programs (loop bodies, branches, inner jits) included once: the program's footprint were
nothing fused and nothing freed. It is an estimate, not a guarantee (XLA may add buffers of its
own; the factor :data:`SAFETY` is for those); on the programs measured it lay well above what the
process grew by (docs/memory.md). The difference between the two sizes is the cost
per item :math:`c`, the rest is the fixed cost :math:`f`, and the chunk holds
:math:`\lfloor (\min(B, B_\max) - f)/c \rfloor` items (at least 1, at most all), with
:math:`B_\max` = :data:`MAX_CHUNK_BYTES`. Where not even one item fits in :math:`B`,
:class:`~probdyn.errors.MemoryBudgetError` says so before anything runs.

:func:`map_chunks` runs a function over a batch this way: one compiled ``vmap`` over a chunk,
called chunk by chunk (the last one padded and cut), results gathered on the host. Each item is
computed by the same program whatever the chunk size, so chunked and unchunked results agree up
to the order of summation inside XLA's fused loops.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
import os
import re
import time
import weakref
from collections.abc import Callable, Iterator

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from probdyn.errors import ConfigError, MemoryBudgetError

#: Share of the machine's available memory the default limit adds to what the process holds.
DEFAULT_FRACTION = 0.75
#: A chunk may use 1 / SAFETY of the headroom left under the limit (see the module docstring).
SAFETY = 2.0
#: Nor more than this: larger chunks do not run faster on a CPU (the IWAE bound of a Poisson LDS
#: on MC_Maze_Small at 20 ms took 23-27 s for chunks of 16 to 1000 draws, docs/memory.md).
MAX_CHUNK_BYTES = 512 * 10**6

logger = logging.getLogger("probdyn")

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kmgtKMGT]?)(i?)[bB]?\s*$")


def parse_size(value) -> int:
    """Bytes from ``4e9``, ``"4GB"``, ``"4 GiB"``, ``"512MB"``, ``"1.5G"`` (powers of 1000/1024)."""
    if isinstance(value, bool):
        raise ConfigError(f"memory limit {value!r}; expected a size such as '4GB'")
    if isinstance(value, int | float):
        size = float(value)
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ConfigError(
                f"memory limit {value!r}; expected a size such as '4GB', '512MiB' or 4e9 (bytes)"
            )
        number, prefix, binary = match.groups()
        power = "kmgt".index(prefix.lower()) + 1 if prefix else 0
        size = float(number) * ((1024**power) if binary else _UNITS[prefix.lower()])
    if not math.isfinite(size) or size <= 0:
        raise ConfigError(f"memory limit {value!r}; expected a positive size")
    return int(size)


def format_size(num_bytes: float) -> str:
    """``1.23 GB`` style (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(num_bytes) >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes:.0f} B"


def available_bytes() -> int:
    """Memory the machine can still give (Linux ``MemAvailable``, else free physical pages)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """The process's resident memory now (Linux ``/proc/self/statm``; else its peak so far)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_bytes()


def peak_bytes() -> int:
    """The process's peak resident memory so far (``getrusage``)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclasses.dataclass(frozen=True)
class Settings:
    """The memory limit in force and how chunked steps report (see :func:`limit`)."""

    limit_bytes: int | None = None  # None: derived from the machine when first needed
    progress: bool = False

    def resolved_limit(self) -> int:
        """The limit in bytes (the default fixed at its first use in the process)."""
        if self.limit_bytes is not None:
            return self.limit_bytes
        global _DEFAULT_LIMIT
        if _DEFAULT_LIMIT is None:
            _DEFAULT_LIMIT = resident_bytes() + int(DEFAULT_FRACTION * available_bytes())
        return _DEFAULT_LIMIT


_DEFAULT_LIMIT: int | None = None
_SETTINGS: contextvars.ContextVar[Settings | None] = contextvars.ContextVar(
    "probdyn_memory", default=None
)


def settings() -> Settings:
    """The settings in force (:func:`limit` changes them within a ``with`` block)."""
    return _SETTINGS.get() or Settings()


def shows_progress(progress: bool | None) -> bool:
    """Whether a step shows its progress bar: ``progress``, or the setting in force for None."""
    return settings().progress if progress is None else progress


@contextlib.contextmanager
def limit(max_bytes=None, *, progress: bool | None = None) -> Iterator[Settings]:
    """Within the block, chunked steps keep the process under ``max_bytes`` (e.g. ``"4GB"``).

    ``None`` keeps the limit in force; ``progress`` turns progress bars on or off.
    """
    current = settings()
    new = dataclasses.replace(
        current,
        limit_bytes=current.limit_bytes if max_bytes is None else parse_size(max_bytes),
        progress=current.progress if progress is None else progress,
    )
    token = _SETTINGS.set(new)
    try:
        yield new
    finally:
        _SETTINGS.reset(token)


def chunk_budget() -> int:
    """Bytes a chunked step starting now may use: the headroom under the limit over SAFETY."""
    headroom = settings().resolved_limit() - resident_bytes()
    return max(int(headroom / SAFETY), 0)


# -- the cost of one item -------------------------------------------------------------------
def _value_bytes(var) -> int:
    aval = getattr(var, "aval", None)
    shape, dtype = getattr(aval, "shape", None), getattr(aval, "dtype", None)
    if shape is None or dtype is None:
        return 0
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:  # key arrays and other extended dtypes: a few words each
        itemsize = 8
    return int(np.prod(shape, dtype=np.int64)) * itemsize


def _sub_programs(value) -> Iterator:
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jax.extend.core.Jaxpr):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _sub_programs(item)


def program_bytes(jaxpr) -> int:
    """Bytes of every intermediate value of a traced program, sub-programs included once."""
    total = 0
    for equation in jaxpr.eqns:
        total += sum(_value_bytes(v) for v in equation.outvars)
        for param in equation.params.values():
            for sub in _sub_programs(param):
                total += program_bytes(sub)
    return total


def item_cost(fn: Callable, example, shared=None) -> tuple[int, int]:
    """(bytes per item, fixed bytes) of ``vmap(fn)``, estimated from traces at sizes 1 and 2.

    With ``shared``, ``fn(item, shared)`` takes it unbatched (an input, not counted).
    """
    mapped = jax.vmap(fn) if shared is None else jax.vmap(fn, in_axes=(0, None))
    extra = () if shared is None else (shared,)

    def traced(size):
        batch = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct((size, *jnp.shape(x)), jnp.result_type(x)), example
        )
        return program_bytes(jax.make_jaxpr(mapped)(batch, *extra).jaxpr)

    one, two = traced(1), traced(2)
    per_item = max(two - one, 1)
    return per_item, max(one - per_item, 0)


def chunk_size(
    num_items: int, per_item: int, fixed: int, *, what: str, budget: int | None = None
) -> int:
    """Items per chunk within ``budget`` (default :func:`chunk_budget`); an error if none fits.

    More than one item per chunk only within :data:`MAX_CHUNK_BYTES`.
    """
    budget = chunk_budget() if budget is None else budget
    if budget - fixed < per_item:
        raise MemoryBudgetError(
            f"{what}: one item needs up to {format_size(per_item + fixed)} but the memory "
            f"budget leaves {format_size(budget)} for it (limit "
            f"{format_size(settings().resolved_limit())}, {format_size(resident_bytes())} in use); "
            "raise --memory-limit (config key memory_limit) or use smaller data"
        )
    room = min(budget, MAX_CHUNK_BYTES) - fixed
    return int(max(1, min(num_items, room // per_item)))


#: The compiled vmap of each function :func:`map_chunks` has run (weakly held), so that a caller
#: passing the same function again (e.g. a cached closure) runs the compiled program again
#: instead of tracing and compiling it anew.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_vmap(fn: Callable, with_shared: bool):
    by_signature = _COMPILED.setdefault(fn, {})
    if with_shared not in by_signature:
        mapped = jax.vmap(fn, in_axes=(0, None)) if with_shared else jax.vmap(fn)
        by_signature[with_shared] = jax.jit(mapped)
    return by_signature[with_shared]


def map_chunks(
    fn: Callable,
    items,
    *,
    what: str,
    unit: str = "item",
    chunk: int | None = None,
    progress: bool | None = None,
    shared=None,
    cost: tuple[int, int] | None = None,
    max_chunk: int | None = None,
):
    """``vmap(fn)(items)`` in chunks sized by the memory budget; results on the host (NumPy).

    ``items``: a pytree whose leaves share a leading axis (the batch). ``shared``: a pytree
    every item reads whole (``fn(item, shared)``; passed once, not copied per item). ``chunk``
    fixes the chunk size instead (tests compare chunked with unchunked); ``cost`` gives
    :func:`item_cost`'s answer when the caller has it; ``max_chunk`` caps the budget's chunk
    (a progress bar that should move); ``what`` names the step in the cost line
    and in errors. The cost line says items x chunk and the estimated peak;
    after the second chunk the time per chunk is logged (the first includes compiling).
    """
    leaves = jax.tree_util.tree_leaves(items)
    num_items = int(leaves[0].shape[0])
    example = jax.tree_util.tree_map(lambda x: x[0], items)
    if chunk is None:
        per_item, fixed = cost or item_cost(fn, example, shared)
        chunk = chunk_size(num_items, per_item, fixed, what=what)
        chunk = chunk if max_chunk is None else min(chunk, max_chunk)
        # As many chunks as that takes, evened out (4 items by at most 3: two chunks of 2).
        num_chunks = -(-num_items // chunk)
        chunk = -(-num_items // num_chunks)
        peak = resident_bytes() + fixed + chunk * per_item
        logger.info(
            f"{what}: {num_items} {unit}s in {num_chunks} chunk{'s' * (num_chunks > 1)} of "
            f"{chunk} (up to {format_size(per_item)} per {unit}; estimated peak "
            f"{format_size(peak)} of the {format_size(settings().resolved_limit())} limit)"
        )
    chunk = int(max(1, min(chunk, num_items)))
    extra = () if shared is None else (shared,)
    compiled = _compiled_vmap(fn, shared is not None)
    progress = shows_progress(progress)
    results, timings = [], []
    bar = tqdm(total=num_items, disable=not progress, desc=what, unit=unit, leave=False)
    for start in range(0, num_items, chunk):
        stop = min(start + chunk, num_items)
        index = np.arange(start, start + chunk)
        index[stop - start :] = start  # pad the last chunk with repeats, cut below
        began = time.perf_counter()
        batch = jax.tree_util.tree_map(lambda x, index=index: x[index], items)
        out = jax.device_get(compiled(batch, *extra))
        results.append(jax.tree_util.tree_map(lambda x, n=stop - start: np.asarray(x)[:n], out))
        timings.append(time.perf_counter() - began)
        if len(timings) == 2 and num_items > 2 * chunk:
            remaining = (-(-num_items // chunk) - 2) * timings[1]
            logger.info(
                f"{what}: {timings[1]:.2f} s per chunk after the first ({timings[0]:.1f} s with "
                f"compiling); about {remaining:.1f} s to go"
            )
        bar.update(stop - start)
    bar.close()
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts), *results)
