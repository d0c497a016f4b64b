"""How probdyn spends XLA compile time: kept between runs, and not optimised where run once.

On a CPU, a short analysis is mostly compilation. Two policies cut it:

* :func:`use_persistent_cache` keeps compiled programs on disk, so the second run of a job reads
  its programs back instead of compiling them.
* :func:`run_once` compiles without XLA's optimisation passes inside its block. NumPyro sets a
  guide up by running the model op by op (each op is a program of its own, compiled on first
  use) and by checking the starting point's log density and gradient; these programs run once,
  so optimising them costs more than it saves. Loops that run thousands of times (SVI chunks,
  samplers) are compiled outside such a block and keep the full optimisation.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import jax
import numpyro.infer.util

_find_valid_initial_params = numpyro.infer.util.find_valid_initial_params


def use_persistent_cache() -> None:
    """Keep compiled XLA programs between runs (``$PROBDYN_CACHE`` or ~/.cache/probdyn).

    ``PROBDYN_CACHE=off`` turns this off; a cache directory the caller already configured is
    left as it is.
    """
    place = os.environ.get("PROBDYN_CACHE")
    if place == "off" or jax.config.jax_compilation_cache_dir:
        return
    if place is None:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        place = str(Path(base) / "probdyn" / "jax")
    jax.config.update("jax_compilation_cache_dir", place)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _compiled_initial_check(rng_key, *args, **kwargs):
    """NumPyro's ``find_valid_initial_params`` through its compiled path.

    Given one key, NumPyro evaluates the log density and its gradient at the starting point op
    by op; given a batch of keys it compiles that evaluation as one program. One key is passed
    as a batch of one and the batch axis taken off again: same function, same result. The
    sites keep the model's order (a compiled program returns dictionaries sorted by key), which
    is the order in which a multivariate guide lays them out in its one vector.
    """
    if not numpyro.util.is_prng_key(rng_key):
        return _find_valid_initial_params(rng_key, *args, **kwargs)
    found, is_valid = _find_valid_initial_params(rng_key[None], *args, **kwargs)
    order = kwargs.get("prototype_params")

    def first(tree):
        tree = jax.tree_util.tree_map(lambda leaf: leaf[0], tree)
        if isinstance(tree, dict) and isinstance(order, dict) and tree.keys() == order.keys():
            return {name: tree[name] for name in order}
        return tree

    return tuple(first(part) for part in found), is_valid[0]


@contextlib.contextmanager
def run_once():
    """Inside: programs compiled without optimisation, NumPyro's initial check compiled whole.

    For code that runs each program once (a guide's setup, a single evaluation). Blocks nest.
    Not thread safe: it switches process-wide settings and restores them on exit.
    """
    was_unoptimised = jax.config.read("jax_disable_most_optimizations")
    initial_check = numpyro.infer.util.find_valid_initial_params
    jax.config.update("jax_disable_most_optimizations", True)
    numpyro.infer.util.find_valid_initial_params = _compiled_initial_check
    try:
        yield
    finally:
        numpyro.infer.util.find_valid_initial_params = initial_check
        jax.config.update("jax_disable_most_optimizations", was_unoptimised)
