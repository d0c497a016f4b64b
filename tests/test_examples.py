"""Smoke tests: every script in docs/examples runs (short version) and prints its results."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
EXPECTED = {
    "associative_memory.py": ["stable states", "fixed points over 200 posterior draws", "entropy"],
    "sequential_memory.py": ["matching errors", "fixed points over 200 posterior draws", "entropy"],
    "new_model_family.py": [
        "persistence a",
        "held-out log predictive density",
        "fixed points over 50 posterior draws",
        "persistence from shuffled bins",
    ],
    "new_inference_method.py": ["MAP after", "fixed points over 1 posterior draws", "ArviZ groups"],
}


def test_every_example_has_a_smoke_test():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name):
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PROBDYN_EXAMPLE_QUICK": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for text in EXPECTED[name]:
        assert text in run.stdout
