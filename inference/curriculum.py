"""Which bins a fit sees at each step (a curriculum), and how its steps are chunked."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from probdyn.errors import ConfigError
from probdyn.model import ModelData
from probdyn.runtime import devices


def curriculum_schedule(data: ModelData, curriculum):
    """``step -> data`` with only the bins the curriculum shows at that step observed."""
    if curriculum is None:
        return lambda step: data
    pair = tuple(curriculum) if isinstance(curriculum, tuple | list) else ()
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair
    ):
        raise ConfigError(
            f"curriculum = {curriculum!r}; expected (bins, every), two positive integers"
        )
    bins, every = pair
    observed = data.observations
    # Each stage's mask is made on the host and placed like the data, once per stage.
    mask = np.ones(observed.shape, bool) if data.mask is None else devices.to_host(data.mask)
    shape = (1, data.num_timesteps) + (1,) * (observed.ndim - 2)
    time = np.arange(data.num_timesteps).reshape(shape)

    @functools.cache
    def stage(visible: int) -> ModelData:
        placed = devices.place(mask & (time < visible), observed.sharding)
        return dataclasses.replace(data, mask=placed)

    return lambda step: stage(min(data.num_timesteps, bins * (1 + step // every)))


def chunk_lengths(start: int, num_steps: int, every: int, curriculum) -> list[int]:
    """Steps per compiled chunk from ``start``: at most ``every``, cut at curriculum stages."""
    lengths, step = [], start
    while step < num_steps:
        length = min(every, num_steps - step)
        if curriculum is not None:
            length = min(length, curriculum[1] - step % curriculum[1])
        lengths.append(length)
        step += length
    return lengths
