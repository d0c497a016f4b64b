"""Recordings shipped with probdyn, for the demo, examples and tests on real data.

``mc_maze_small_train.h5``: the Neural Latents Benchmark '21 tensors of MC_Maze_Small (monkey J,
M1 and PMd, Utah arrays, delayed center-out reaches through a maze), the benchmark's 75 training
trials at 5 ms bins, 140 bins from 250 ms before to 450 ms after movement onset, 107 held-in
and 35 held-out neurons, hand velocity. DANDI archive 000140 (Churchland & Kaufman), license
CC-BY-4.0. Cite: Pei et al., "Neural Latents Benchmark '21", NeurIPS Datasets and Benchmarks
2021; Churchland et al., "Neural population dynamics during reaching", Nature 2012.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import xarray as xr

from probdyn.data.loaders import load_nlb
from probdyn.errors import DataError

#: The benchmark's own bin width (seconds).
MC_MAZE_SMALL_BIN = 0.005


def mc_maze_small_path() -> Path:
    """The shipped MC_Maze_Small training file (231 kB)."""
    return Path(str(files("probdyn.data") / "mc_maze_small_train.h5"))


def mc_maze_small(*, bin_size: float = 0.02, held_in_only: bool = True) -> xr.Dataset:
    """MC_Maze_Small's 75 training trials, counts summed into bins of ``bin_size`` seconds.

    ``bin_size`` must be a whole multiple of the benchmark's 5 ms; bins that would straddle the
    end of the 700 ms window are dropped (none at 5, 10, 20 or 35 ms). ``held_in_only`` keeps
    the 107 held-in neurons (the 35 held-out ones are the benchmark's co-smoothing targets).
    """
    factor = round(bin_size / MC_MAZE_SMALL_BIN)
    if factor < 1 or abs(factor * MC_MAZE_SMALL_BIN - bin_size) > 1e-9:
        raise DataError(f"bin_size = {bin_size!r}; expected a whole multiple of 0.005 s")
    ds = load_nlb(mc_maze_small_path(), split="train")
    if held_in_only:
        ds = ds.sel(neuron=~ds["heldout"])
    # Each new bin starts where its first 5 ms bin starts.
    spikes = ds["spikes"].coarsen(time=factor, boundary="trim", coord_func="min").sum()
    return xr.Dataset(
        {"spikes": spikes.astype(ds["spikes"].dtype)},
        attrs={
            **ds.attrs,
            "dt": factor * MC_MAZE_SMALL_BIN,
            "source": "MC_Maze_Small (NLB'21, DANDI 000140), training trials",
        },
    )
