#!/usr/bin/env bash
# Create or update the project venv from uv.lock: datalake (editable), its locked dependencies and the test tools,
# exactly those and nothing else (extra groups as arguments: `setup-venv.sh .venv bench`). Installs python3-venv
# if missing.
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
extras=(--extra test)
for extra in "$@"; do extras+=(--extra "$extra"); done
export PYTHON
# --locked: a uv.lock that no longer matches pyproject.toml is an error (run `make lock`), never a silent re-resolve;
# --compile-bytecode, as pip does: else every server and command of the testbed compiles its imports at start
UV_PROJECT_ENVIRONMENT="$VENV" "$(dirname "$0")/uv" sync --locked --quiet --compile-bytecode --python "$PYTHON" "${extras[@]}"
echo "setup: $VENV ready ($("$VENV/bin/datalake" --version), from uv.lock)"
