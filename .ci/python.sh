# Sourced by .ci scripts: PYTHON is a Python 3.12 (an explicit python3.12, else pyenv's 3.12.1,
# else python3 if it is 3.12).
find_python() {
  for candidate in python3.12 "env PYENV_VERSION=3.12.1 python3" python3; do
    if $candidate -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "probdyn needs Python 3.12 (python3.12 or pyenv 3.12.1)" >&2; return 1
}
PYTHON=$(find_python)
