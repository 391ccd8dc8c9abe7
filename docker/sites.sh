#!/usr/bin/env bash
# The site lake (docker/compose.yaml) on this machine with podman, as root:
#   docker/sites.sh demo            everything it needs (Debian's podman, a base image, the image), up, the tour
#   docker/sites.sh up | tour | down
#   docker/sites.sh test [PYTEST ARGS]   the cross-site integration tests, on the lake's client host
#   docker/sites.sh check           a lake of its own: up, the tour, the cross-site tests, down (make test)
#   docker/sites.sh faults [PYTEST ARGS]   the site faults (docker/tests), driven from this machine
#   docker/sites.sh link SITE RATE  shape a site's uplink now (SITE: xrd1, xrd2, ...; RATE: 50mbit, 1gbit)
#   docker/sites.sh exec CMD...     a command on the lake's client host (the testbed's env loaded)
#   docker/sites.sh bench [ARGS]    bench/sites.py: what locality is worth, at several link rates (brings the lake up)
# `down` removes only what `up` made: this project's containers, its network and its volume (images stay).
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/docker/containers.conf}
PROJECT=${DATALAKE_SITES_PROJECT:-datalake-sites}
PYTHON=${PYTHON:-.venv/bin/python}

# the integration tests that make sense across sites (the others kill or inspect processes of one machine)
SITE_TESTS=(integration/test_access.py integration/test_share.py integration/test_wlcg_tokens.py
    integration/test_register.py integration/test_pull.py integration/test_conveyor.py integration/test_process.py
    -k "not killed and not stopped_mid_job")

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

install() {
    local missing=()
    command -v podman > /dev/null || missing+=(podman)
    command -v runc > /dev/null || missing+=(runc)
    command -v debootstrap > /dev/null || missing+=(debootstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        step "apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" > /dev/null
    fi
    bash docker/base-image.sh
}

compose() {
    local venv
    venv=$("$PYTHON" -c 'from datalake.testbed import install, settings
print(install.compose_venv(settings.TestbedSettings()))')
    "$venv/bin/podman-compose" --no-ansi -p "$PROJECT" -f docker/compose.yaml "$@"
}

client() { podman exec "${PROJECT}_client_1" "$@"; }

why_not_up() {  # what a lake that did not come up says: every container's state, the client, what it waited for
    echo "the site lake $PROJECT did not come up in 300 s; its containers:" >&2
    podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '  {{.Names}}: {{.Status}}' >&2 || true
    echo "its client says:" >&2
    podman logs --tail 20 "${PROJECT}_client_1" 2>&1 | sed 's/^/  /' >&2 || true
    local waited_for
    waited_for=$(podman logs --tail 5 "${PROJECT}_client_1" 2>&1 | sed -n 's/.*error: \([a-z0-9-]*\) not ready.*/\1/p' | tail -1)
    if [ -n "$waited_for" ]; then
        echo "the client resolves $waited_for as: $(client getent hosts "$waited_for" 2>&1 || echo nothing)" >&2
        echo "$waited_for says:" >&2
        podman logs --tail 30 "${PROJECT}_${waited_for}_1" 2>&1 | sed 's/^/  /' >&2 || true
    fi
}

start() {  # 0 once the client has bootstrapped the lake, 1 (with why) after 300 s
    compose up -d --no-build > /dev/null
    local waited=0
    until client test -e /tmp/bootstrapped 2> /dev/null; do
        if [ $waited -ge 300 ]; then
            why_not_up
            return 1
        fi
        sleep 2
        waited=$((waited + 2))
    done
    echo "up and bootstrapped in about ${waited} s"
}

up() {
    step "building the image and starting the site lake (project $PROJECT)"
    compose build > /dev/null
    start && return 0
    # bringing the lake up is not under test: one more try from nothing, and the first try's why is printed above
    step "starting the site lake $PROJECT once more"
    compose down -v > /dev/null 2>&1 || true
    start
}

faults() {  # driven from this machine: they cut links and kill hosts
    DATALAKE_SITES_PROJECT=$PROJECT "$(dirname "$PYTHON")/pytest" -p no:cacheprovider -ra docker/tests "$@"
}

case "${1:-}" in
    demo) install; up; client env TOUR_SKIP_UP=1 DATALAKE=datalake bash scripts/tour.sh ;;
    check)  # what `make test` runs: a lake of its own (not the demo's), the tour and the tests, then gone
        # a project of its own per run: a check running beside another (a developer's, a CI's) never removes its lake
        PROJECT=${DATALAKE_SITES_PROJECT:-datalake-sites-check-$$}
        trap 'compose down -v > /dev/null 2>&1 || true' EXIT
        install; up
        step "the tour on the site lake"
        tour_log=$(mktemp)
        client env TOUR_SKIP_UP=1 DATALAKE=datalake bash scripts/tour.sh > "$tour_log" 2>&1 \
            || { tail -40 "$tour_log"; rm -f "$tour_log"; exit 1; }
        rm -f "$tour_log"
        echo "the tour passed"
        step "the cross-site integration tests on the site lake"
        client env DATALAKE_TEST_TESTBED_DIR=/testbed DATALAKE_TEST_PORT_BASE=28000 \
            /opt/venv/bin/pytest -p no:cacheprovider -ra "${SITE_TESTS[@]}"
        step "the site lake's own faults (a link cut, a trickling link, a slow link, a host killed) and its ranking"
        faults ;;
    faults) faults "${@:2}" ;;
    bench) install; up; DATALAKE_SITES_PROJECT=$PROJECT "$PYTHON" bench/sites.py "${@:2}" ;;
    up) install; up ;;
    tour) client env TOUR_SKIP_UP=1 DATALAKE=datalake bash scripts/tour.sh ;;
    test)
        shift
        [ $# -gt 0 ] || set -- "${SITE_TESTS[@]}"
        client env DATALAKE_TEST_TESTBED_DIR=/testbed DATALAKE_TEST_PORT_BASE=28000 \
            /opt/venv/bin/pytest -p no:cacheprovider -ra "$@" ;;
    exec) shift; client bash -c 'eval "$(datalake testbed env)" && "$@"' bash "$@" ;;
    link) podman exec "${PROJECT}_$2_1" datalake testbed link "$3" ;;
    down) compose down -v > /dev/null && echo "site lake $PROJECT removed (containers, network, volume)" ;;
    *) sed -n '2,11p' "$0" >&2; exit 2 ;;
esac
