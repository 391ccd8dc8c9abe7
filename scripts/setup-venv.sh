#!/usr/bin/env bash
# Create the project venv with datalake (editable) and its test tools. Installs python3-venv if missing.
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
        PYTHON=/usr/bin/python3
    else
        echo "setup: need Python >= 3.11 with venv (apt-get install python3-venv)" >&2; exit 1
    fi
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --disable-pip-version-check -q -U pip 2> >(grep -v "^WARNING: Location" >&2)
"$VENV/bin/pip" install --disable-pip-version-check -q -e '.[test]' 2> >(grep -v "^WARNING: Location" >&2)
echo "setup: $VENV ready ($("$VENV/bin/datalake" --version))"
