"""Checkpoints hold arrays only: foreign, corrupt, tampered or mismatched files are refused."""

import json
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

from probdyn.errors import ConfigError
from probdyn.runtime.checkpoint import read_checkpoint, write_checkpoint

STATE = {"weights": jnp.arange(6.0).reshape(2, 3), "step": (jnp.int32(4), jnp.ones(2))}


class _Planted:
    """Unpickling this creates the file it names: the code a planted pickle would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_reads_back_its_state_exactly(tmp_path):
    path = tmp_path / "fit.ckpt"
    write_checkpoint(path, "run-a", 3, [1.5, 1.25, 1.0], STATE)
    saved = read_checkpoint(path, "run-a", template=STATE)
    assert saved["step"] == 3
    np.testing.assert_array_equal(saved["losses"], [1.5, 1.25, 1.0])
    for got, want in zip(
        np.asarray(saved["state"]["weights"]), np.asarray(STATE["weights"]), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    assert saved["state"]["step"][0].dtype == np.int32
    assert read_checkpoint(tmp_path / "none.ckpt", "run-a", template=STATE) is None
    assert not list(tmp_path.glob("*.partial"))


def test_a_planted_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "fit.ckpt"
    path.write_bytes(pickle.dumps({"signature": "run-a", "step": 1, "state": _Planted(marker)}))
    with pytest.raises(ConfigError, match="is not a (readable )?probdyn checkpoint") as error:
        read_checkpoint(path, "run-a", template=STATE)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


def _rewrite_header(path, change):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes().decode())
    change(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with path.open("wb") as file:
        np.savez(file, **arrays)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable"),
        (lambda p: p.write_bytes(b"\x00" * 64), "not a probdyn"),
        (lambda p: _rewrite_header(p, lambda h: h.update(format="other")), "not a probdyn"),
        (lambda p: _rewrite_header(p, lambda h: h.update(version=99)), "format version 99"),
        (lambda p: _rewrite_header(p, lambda h: h.update(signature="run-b")), "other arguments"),
        (lambda p: _rewrite_header(p, lambda h: h.update(step=2)), "step count"),
        (
            lambda p: _rewrite_header(p, lambda h: h["structure"]["shapes"][0].append(1)),
            "arranged differently",
        ),
    ],
    ids=["truncated", "zeros", "format", "version", "signature", "step", "shapes"],
)
def test_corrupt_or_tampered_checkpoints_are_refused_in_one_line(tmp_path, damage, expected):
    path = tmp_path / "fit.ckpt"
    write_checkpoint(path, "run-a", 3, [1.5, 1.25, 1.0], STATE)
    damage(path)
    with pytest.raises(ConfigError, match=expected) as error:
        read_checkpoint(path, "run-a", template=STATE)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_state_arranged_differently_is_refused(tmp_path):
    """Another JAX/optax version arranging the optimiser state otherwise: refused, not misread."""
    path = tmp_path / "fit.ckpt"
    write_checkpoint(path, "run-a", 1, [0.0], STATE)
    other = {"weights": STATE["weights"], "step": (jnp.int32(4), jnp.ones(2), jnp.zeros(1))}
    with pytest.raises(ConfigError, match="arranged differently"):
        read_checkpoint(path, "run-a", template=other)
    retyped = {"weights": STATE["weights"].astype(jnp.int32), "step": STATE["step"]}
    with pytest.raises(ConfigError, match="arranged differently"):
        read_checkpoint(path, "run-a", template=retyped)
