#!/usr/bin/env bash
# Create or update the project venv from uv.lock: datalake (editable) and its locked dependencies, plus the
# optional groups named after the venv (`setup-venv.sh .venv test bench`). With groups, exactly the lock (what
# it does not name is removed); without (`make demo`), what the demo runs is added and nothing is removed.
# Installs python3-venv if missing.
set -euo pipefail
VENV=${1:-.venv}
shift || true
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
        PYTHON=/usr/bin/python3
    else
        echo "setup: need CPython 3.11 with venv, the version uv.lock is for (apt-get install python3-venv)" >&2
        exit 1
    fi
fi
if [ $# -eq 0 ]; then
    selection=(--inexact)  # the demo: add what it runs, keep the tools a developer installed
else
    selection=()
    for extra in "$@"; do selection+=(--extra "$extra"); done
fi
export PYTHON
# --locked: a uv.lock that no longer matches pyproject.toml is an error (run `make lock`), never a silent re-resolve;
# --compile-bytecode, as pip does: else every server and command of the testbed compiles its imports at start
UV_PROJECT_ENVIRONMENT="$VENV" "$(dirname "$0")/uv" sync --locked --quiet --compile-bytecode --python "$PYTHON" "${selection[@]}"
echo "setup: $VENV ready ($("$VENV/bin/datalake" --version), from uv.lock)"
