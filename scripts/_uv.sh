# shellcheck shell=bash
# Sourced by the scripts (with $root set to the repository): picks the Python 3.13 that
# the repository's .python-version selects, wherever the script is called from, and
# makes sure uv is at hand, installing it with pip when missing.
: "${root:?set root to the repository before sourcing _uv.sh}"
PYTHON="$(cd "$root" && python3 -c 'import sys; print(sys.executable)')"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 13))'; then
  echo "error: Python 3.13 is required; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi
# Use that interpreter; never download one (nothing but package indexes may be reachable).
export UV_PYTHON="${UV_PYTHON:-$PYTHON}"
export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"
if command -v uv >/dev/null 2>&1 && uv --version >/dev/null 2>&1; then
  uv() { command uv "$@"; }
else
  if ! "$PYTHON" -m uv --version >/dev/null 2>&1; then
    echo "==> installing uv with pip" >&2
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "uv>=0.9"
  fi
  uv() { "$PYTHON" -m uv "$@"; }
fi
