"""The importance-weighted bound of an SVI guide (``method="iwae"``)."""

from __future__ import annotations

import math

import jax
import numpy as np
import numpyro
from jax.scipy.special import logsumexp
from numpyro.infer.util import log_density

from probdyn.inference.density import Density
from probdyn.inference.evidence.result import Evidence
from probdyn.runtime import memory
from probdyn.schema import Count


def iwae(
    density: Density,
    key,
    *,
    model=None,
    svi_result=None,
    svi_steps: Count = 2000,
    num_importance: Count = 1000,
    num_batches: Count = 8,
    chunk: Count | None = None,
) -> Evidence:
    """``method="iwae"``: the importance-weighted bound of an SVI guide."""
    from probdyn.inference.svi import svi

    key_fit, key_draw = jax.random.split(key)
    if svi_result is None:
        seed = int(jax.random.randint(key_fit, (), 0, 2**31 - 1))
        svi_result = svi(model, density.data, num_steps=svi_steps, seed=seed, progress=False)
    guide, params = svi_result.guide, svi_result.params
    data = density.data

    def log_weight(key):
        seeded = numpyro.handlers.seed(guide, key)
        log_q, guide_trace = log_density(seeded, (data,), {}, params)
        values = {
            name: site["value"]
            for name, site in guide_trace.items()
            if site["type"] == "sample" and not site["is_observed"]
        }
        program = numpyro.handlers.seed(density.program, jax.random.fold_in(key, 1))
        log_p, _ = log_density(program, (data,), {}, values)
        return log_p - log_q

    keys = jax.random.split(key_draw, num_batches * num_importance)
    log_w = memory.map_chunks(
        log_weight, keys, what="iwae importance draws", unit="draw", chunk=chunk
    ).reshape(num_batches, num_importance)
    bounds = np.asarray(logsumexp(log_w, axis=1) - math.log(num_importance))
    return Evidence(
        float(bounds.mean()),
        float(bounds.std(ddof=1) / math.sqrt(num_batches)),
        "iwae",
        True,
        f"spread of {num_batches} independent batches of K={num_importance}",
        0.0,
        num_batches * num_importance,
        {"num_importance": num_importance, "bound_per_batch": bounds.tolist()},
    )
