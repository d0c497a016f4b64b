import os
from pathlib import Path

import jax
import pytest

# Numerical checks against closed forms need double precision.
jax.config.update("jax_enable_x64", True)

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("PROBDYN_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_file():
    """Return a path under the shared data folder, or skip naming the file that is missing."""

    def find(relative: str) -> Path:
        path = data_dir() / relative
        if not path.exists():
            pytest.skip(
                f"needs the real recording {relative} under {data_dir()} (or $PROBDYN_DATA)"
            )
        return path

    return find
