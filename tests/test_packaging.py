"""The layout installs as probdyn, probdyn.models and probdyn.inference, and nothing else."""

import math
import subprocess
import sys
import zipfile
from pathlib import Path

import probdyn
import probdyn.inference
import probdyn.models

REPO = Path(__file__).resolve().parents[1]
CHECK = (
    "import importlib.util, probdyn.models, probdyn.inference; "
    "assert importlib.util.find_spec('models') is None, 'a top-level models module is importable'; "
    "assert importlib.util.find_spec('inference') is None, 'a top-level inference module is importable'; "
    "print(probdyn.models.__file__)"
)


def test_installed_import_names(tmp_path):
    # Run from an empty folder so the repository root is not on sys.path.
    out = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).name == "__init__.py"
    assert probdyn.models.__name__ == "probdyn.models"
    assert probdyn.inference.__name__ == "probdyn.inference"


def test_wheel_installs_subpackages_only(tmp_path):
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("probdyn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"probdyn", f"probdyn-{probdyn.__version__}.dist-info"}
    assert "probdyn/models/lds.py" in names and "probdyn/inference/__init__.py" in names
    assert "probdyn/data/mc_maze_small_train.h5" in names  # the demo's real recording
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    run = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            f"import sys; sys.path[:0] = [{str(target)!r}]; "
            + "import site; site.main(); "
            + CHECK,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith(str(target))


def test_python_dash_m_probdyn_is_the_command_and_says_its_version():
    from importlib.metadata import version

    done = subprocess.run(
        [sys.executable, "-m", "probdyn", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == f"probdyn {version('probdyn')}"


def test_import_contracts_hold():
    # The layers and no-cycle contracts of pyproject.toml, on the installed layout.
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "check_imports.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_subpackages_load_on_first_use():
    script = (
        "import sys, probdyn; "
        "assert 'probdyn.inference' not in sys.modules and 'probdyn.app' not in sys.modules; "
        "print(probdyn.models.LDS.__name__, probdyn.inference.svi.__name__, "
        "probdyn.fixed_points.__name__, probdyn.algorithms.kalman.__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["LDS", "svi", "fixed_points", "probdyn.algorithms.kalman"]


def test_an_earlier_import_of_arviz_does_not_break_numpyro_sites():
    # ArviZ versions that load NumPyro lazily leave NumPyro's submodules unbound when
    # `import numpyro.distributions` comes right after `import arviz`, and numpyro.factor
    # (constrained sites under NUTS and SVI) fails; `import probdyn` binds them again.
    script = (
        "import arviz, numpyro.distributions as dist; "
        "import probdyn, numpyro; "
        "from numpyro.infer.util import log_density; "
        "model = lambda: numpyro.factor('f', dist.Normal().log_prob(1.0)); "
        "print(float(log_density(model, (), {}, {})[0]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert abs(float(done.stdout) - (-0.5 - 0.5 * math.log(2 * math.pi))) < 1e-6
