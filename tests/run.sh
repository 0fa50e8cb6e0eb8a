#!/usr/bin/env bash
# Install what the test suite needs (a no-op when already there), then run all of it,
# inside the studio's virtual environment .venv (created here when missing, as the README's
# first command does), never into whatever python3 comes first. PYTHON=... picks another.
# Usage: bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ] && [ ! -x .venv/bin/python ]; then
  echo "creating the virtual environment .venv"
  python3 -m venv .venv
fi
PY=${PYTHON:-.venv/bin/python}

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: ${missing[*]} missing and cannot be installed here; tests needing them will skip" >&2
  fi
fi

# torch first, as the CPU build, so nothing below pulls a multi-GB CUDA build.
$PY -m pip install -q --disable-pip-version-check torch==2.13.0
$PY -m pip install -q --disable-pip-version-check -e ".[test]"
exec $PY -m pytest -q "$@"
