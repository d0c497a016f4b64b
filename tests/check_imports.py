"""Check the import contracts of pyproject.toml (import-linter) on the installed layout.

models/ and inference/ live at the top of the repository but install as probdyn.models and
probdyn.inference; import-linter reads packages from disk, so the check runs on a copy laid
out as installed (probdyn/ with models/ and inference/ inside), every import counted, those
inside functions too.

    python tests/check_imports.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    """Run lint-imports on an installed-layout copy; its exit status (0: every contract kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "probdyn"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.h5")
        shutil.copytree(REPO / "probdyn", package, ignore=ignore)
        shutil.copytree(REPO / "models", package / "models", ignore=ignore)
        shutil.copytree(REPO / "inference", package / "inference", ignore=ignore)
        lint = Path(sys.executable).with_name("lint-imports")
        command = [str(lint), str(REPO / "pyproject.toml"), "--no-cache"]
        return subprocess.run(command, cwd=tmp, env={"PYTHONPATH": tmp, "PATH": ""}).returncode


if __name__ == "__main__":
    sys.exit(main())
