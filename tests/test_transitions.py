"""Switching between attractors: core-set labels, order, coarse-grained entropy production."""

import numpy as np
import pytest

from probdyn.analysis.transitions import attractor_transitions, core_labels
from probdyn.errors import ConfigError

#: Three attractors on the unit circle, counterclockwise.
CENTRES = np.stack([np.cos(2 * np.pi * np.arange(3) / 3), np.sin(2 * np.pi * np.arange(3) / 3)], 1)


def _hops(sequence, dwell=20):
    """A path resting ``dwell`` bins at each centre of ``sequence`` in turn (one trial)."""
    return np.repeat(CENTRES[np.asarray(sequence)], dwell, axis=0)[None]


def test_a_cycle_run_forward_is_ordered_and_its_reverse_is_not():
    path = _hops([0, 1, 2, 0, 1, 2, 0])
    forward = attractor_transitions(path, CENTRES, 0.1, order=[0, 1, 2])
    assert int(forward.counts.sum()) == 6
    assert float(forward.forward_fraction) == 1.0
    assert float(forward.coarse_entropy_production) > 0
    backward = attractor_transitions(path[:, ::-1], CENTRES, 0.1, order=[0, 1, 2])
    assert float(backward.forward_fraction) == 0.0
    # Time reversal swaps the rates, which leaves the coarse-grained production unchanged.
    assert float(backward.coarse_entropy_production) == pytest.approx(
        float(forward.coarse_entropy_production)
    )
    assert float(forward.switching_rate) == pytest.approx(6 / (path.shape[1] * 0.1), rel=0.01)


def test_balanced_jumps_produce_nothing():
    # Every jump is undone: detailed balance in the counts, order 1/2, no coarse production.
    path = _hops([0, 1, 0, 2, 0, 1, 2, 1, 0, 2, 1, 2, 0])
    stats = attractor_transitions(path, CENTRES, 0.1, order=[0, 1, 2])
    np.testing.assert_array_equal(stats.counts, stats.counts.T)
    assert float(stats.forward_fraction) == 0.5
    assert float(stats.coarse_entropy_production) == pytest.approx(0.0, abs=1e-12)


def test_grazing_the_basin_boundary_is_not_a_switch():
    # Leave centre 0 towards centre 1, stop short of its core, come back: no transition.
    there = np.linspace(CENTRES[0], 0.55 * CENTRES[0] + 0.45 * CENTRES[1], 30)
    path = np.concatenate([there, there[::-1], there, there[::-1]])[None]
    labels = core_labels(path, CENTRES)
    assert set(np.unique(labels)) == {0}
    assert int(attractor_transitions(path, CENTRES, 0.1).counts.sum()) == 0


def test_labels_wait_for_the_first_core():
    start = np.zeros((5, 2))  # the origin: in no core
    path = np.concatenate([start, _hops([1])[0]])[None]
    labels = core_labels(path, CENTRES)
    assert (labels[0, :5] == -1).all() and (labels[0, 5:] == 1).all()


def test_bad_input_is_refused():
    path = _hops([0, 1])
    with pytest.raises(ConfigError, match="radius"):
        core_labels(path, CENTRES, radius=1.0)
    with pytest.raises(ConfigError, match="permutation"):
        attractor_transitions(path, CENTRES, 0.1, order=[0, 1, 1])
    with pytest.raises(ConfigError, match="two centres"):
        core_labels(path, CENTRES[:1])
    with pytest.raises(ConfigError, match="positive time step"):
        attractor_transitions(path, CENTRES, 0.0)


def test_paths_that_never_reach_an_attractor_score_nothing():
    # An ablation that destroys the attractors leaves the paths elsewhere: NaN, not an error.
    stats = attractor_transitions(np.zeros((2, 10, 2)), CENTRES, 0.1, order=[0, 1, 2])
    assert float(stats.occupancy) == 0.0 and float(stats.observed_time) == 0.0
    assert np.isnan(float(stats.switching_rate)) and np.isnan(float(stats.forward_fraction))
