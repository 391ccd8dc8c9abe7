#!/usr/bin/env bash
# Lock a venv of its own (the Rucio server's, the stock client's): STEM.in (the ranges) -> STEM.txt (exact
# versions and sha256 hashes for CPython 3.11 on Linux x86_64). Existing pins are kept unless --upgrade; --check
# only verifies that STEM.txt was compiled from the STEM.in of today (its digest is recorded in the lock's first line).
set -euo pipefail
stem=$1
mode=${2:-}
shift $(( $# < 2 ? $# : 2 ))  # the rest: more `uv pip compile` options for this lock (e.g. --no-emit-package)
digest="# from $(basename "$stem").in sha256:$(sha256sum < "$stem.in" | cut -d' ' -f1)"
if [ "$mode" = --check ]; then
    if [ "$(head -n 1 "$stem.txt")" != "$digest" ]; then
        echo "lock: $stem.txt was not compiled from today's $stem.in: run make lock" >&2
        exit 1
    fi
    exit 0
fi
upgrade=()
[ "$mode" = --upgrade ] && upgrade=(--upgrade)
body=$(mktemp)
trap 'rm -f "$body"' EXIT
[ -f "$stem.txt" ] && tail -n +2 "$stem.txt" > "$body"  # the pins to keep
"$(dirname "$0")/uv" pip compile "$stem.in" --quiet --generate-hashes --python-version 3.11 \
    --python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock" "${upgrade[@]}" "$@" -o "$body"
{ echo "$digest"; cat "$body"; } > "$stem.txt"
