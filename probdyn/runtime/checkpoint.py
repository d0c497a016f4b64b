"""Checkpoints of an optimisation loop: arrays only, written atomically, read back by the same run.

A checkpoint is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays, read with
``allow_pickle=False``, so loading one can never run code) holding

- ``header``: a JSON document (as bytes) with the format name and version, the run's
  signature (:func:`~probdyn.inference.density.fingerprint` of its model, data and settings),
  the step reached, and the structure of the saved state (its pytree definition, leaf shapes
  and dtypes);
- ``losses``: the losses so far;
- ``leaf_0`` ... ``leaf_{n-1}``: the state's leaves in ``jax.tree_util`` order.

The header is read and checked before any array is: a file that is not such an archive
(a pickle planted in an output folder, a truncated or tampered file), one of another run, and
one whose state does not fit the loop's own state (another JAX, NumPyro or optax version
arranging it differently) are all refused with one line naming the file. The state is rebuilt
on the caller's template, so nothing in the file decides what Python objects are made.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import jax
import numpy as np

from probdyn.errors import ConfigError
from probdyn.runtime import devices

FORMAT = "probdyn-checkpoint"
VERSION = 1


def _structure(state) -> dict:
    leaves, treedef = jax.tree_util.tree_flatten(state)
    return {
        "tree": str(treedef),
        "shapes": [list(np.shape(leaf)) for leaf in leaves],
        "dtypes": [np.asarray(leaf).dtype.str for leaf in leaves],
    }


def _refuse(path: Path, why: str) -> ConfigError:
    return ConfigError(f"checkpoint {str(path)!r} {why}; remove it or choose another path")


def read_checkpoint(path: Path | None, signature: str, template) -> dict | None:
    """The saved ``step``, ``losses`` and ``state`` of this run, or None where there are none.

    ``template`` is the loop's freshly initialised state: the saved leaves are put into its
    structure, after their number, shapes and dtypes are checked against it.
    """
    if path is None or not path.exists():
        return None
    try:
        with path.open("rb") as file:
            if file.read(4) != b"PK\x03\x04":  # a zip archive, as every .npz is
                raise _refuse(path, "is not a probdyn checkpoint")
            file.seek(0)
            with np.load(file, allow_pickle=False) as archive:
                header = json.loads(archive["header"].tobytes().decode())
                if not isinstance(header, dict) or header.get("format") != FORMAT:
                    raise _refuse(path, "is not a probdyn checkpoint")
                if header.get("version") != VERSION:
                    version = header.get("version")
                    raise _refuse(path, f"has format version {version!r}, not {VERSION}")
                if header.get("signature") != signature:
                    raise _refuse(path, "was written by a run with other arguments or data")
                expected = _structure(template)
                if header.get("structure") != expected:
                    raise _refuse(
                        path,
                        "holds a state arranged differently from this run's (written by another "
                        "version of probdyn, JAX, NumPyro or optax?)",
                    )
                leaves = [archive[f"leaf_{i}"] for i in range(len(expected["shapes"]))]
                losses = archive["losses"]
                step = header["step"]
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as error:
        why = f"is not a readable probdyn checkpoint ({type(error).__name__})"
        raise _refuse(path, why) from None
    if not isinstance(step, int) or not 0 <= step == len(losses):
        raise _refuse(path, "has a step count that does not match its losses")
    treedef = jax.tree_util.tree_structure(template)
    return {"step": step, "losses": losses, "state": jax.tree_util.tree_unflatten(treedef, leaves)}


def write_checkpoint(path: Path, signature: str, step: int, losses, state) -> None:
    """Write the state atomically (a kill never leaves half a file); process 0 only."""
    if not devices.is_main_process():
        return
    header = {
        "format": FORMAT,
        "version": VERSION,
        "signature": signature,
        "step": int(step),
        "structure": _structure(state),
    }
    arrays = {
        f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(state))
    }
    temporary = path.with_suffix(path.suffix + ".partial")
    with temporary.open("wb") as file:
        np.savez(
            file,
            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            losses=np.asarray(losses, dtype=np.float64),
            **arrays,
        )
    os.replace(temporary, path)
