# Sourced by the scripts: makes sure uv is at hand, installing it with pip when missing.
if command -v uv >/dev/null 2>&1 && uv --version >/dev/null 2>&1; then
  uv() { command uv "$@"; }
else
  if ! python3 -m uv --version >/dev/null 2>&1; then
    echo "==> installing uv with pip" >&2
    python3 -m pip install --quiet --disable-pip-version-check "uv>=0.9"
  fi
  uv() { python3 -m uv "$@"; }
fi
