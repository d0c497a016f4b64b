"""Recordings in probdyn's data convention: validation, loaders, writers and simulators."""

from probdyn.data.loaders import bin_spike_times, load, load_nlb, load_nwb, save
from probdyn.data.recordings import mc_maze_small, mc_maze_small_path
from probdyn.data.simulate import (
    hmm_architecture,
    simulate_attractor,
    simulate_facrnn_teacher,
    simulate_hmm,
    simulate_sde,
)
from probdyn.data.validate import observation_variable, validate

__all__ = [
    "bin_spike_times",
    "hmm_architecture",
    "load",
    "load_nlb",
    "load_nwb",
    "mc_maze_small",
    "mc_maze_small_path",
    "observation_variable",
    "save",
    "simulate_attractor",
    "simulate_facrnn_teacher",
    "simulate_hmm",
    "simulate_sde",
    "validate",
]
