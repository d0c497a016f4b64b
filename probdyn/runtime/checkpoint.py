"""Checkpoints of an optimisation loop: written atomically, read back only by the same run.

A checkpoint holds the loop's state (any picklable pytree), the step reached, the losses so
far and the run's signature (:func:`~probdyn.inference.density.fingerprint` of its model, data
and settings). A run that finds a checkpoint of its own signature resumes from it; one that
finds another run's refuses to overwrite it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from probdyn.errors import ConfigError
from probdyn.runtime import devices


def read_checkpoint(path: Path | None, signature: str) -> dict | None:
    """The saved ``step``, ``losses`` and ``state`` of this run, or None where there are none."""
    if path is None or not path.exists():
        return None
    saved = pickle.loads(path.read_bytes())
    if saved["signature"] != signature:
        raise ConfigError(
            f"checkpoint {str(path)!r} was written by a run with other arguments or data; "
            "remove it or choose another path"
        )
    return saved


def write_checkpoint(path: Path, signature: str, step: int, losses, state) -> None:
    """Write the state atomically (a kill never leaves half a file); process 0 only."""
    if not devices.is_main_process():
        return
    payload = {"signature": signature, "step": step, "losses": np.asarray(losses), "state": state}
    temporary = path.with_suffix(path.suffix + ".partial")
    temporary.write_bytes(pickle.dumps(payload))
    os.replace(temporary, path)
