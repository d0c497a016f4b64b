import os
from pathlib import Path

import jax
import pytest

# Numerical checks against closed forms need double precision.
jax.config.update("jax_enable_x64", True)
# Compilation dominates the suite's time on CPU; identical programs compiled by other tests or
# workers (or an earlier run) are read back from a persistent cache instead.
jax.config.update(
    "jax_compilation_cache_dir", str(Path(__file__).resolve().parents[1] / ".jax_cache")
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items):
    """Slow tests first: spread over the xdist workers, they start early rather than end last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
