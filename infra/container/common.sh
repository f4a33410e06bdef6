# shellcheck shell=bash
# Shared by the infra/container scripts (sourced, not run): where the project's Docker engine
# lives and which docker command drives it.
#
# MODELRUNNER_DOCKER_DIR  state of the engine these scripts start (data root, exec root, socket,
#                         pid file, log); default ${TMPDIR:-/tmp}/modelrunner-docker. The data
#                         root is kept between runs: it is the layer cache.
# DOCKER_HOST             an engine that already answers is used as it is, and never stopped.
# MODELRUNNER_DOCKER      the docker command (default: one that can build with BuildKit).

MODELRUNNER_DOCKER_DIR="${MODELRUNNER_DOCKER_DIR:-${TMPDIR:-/tmp}/modelrunner-docker}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

log() { printf '%s %s\n' "[$(date +%H:%M:%S)] ${0##*/}:" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The Dockerfile's base image: the first FROM that names no earlier stage.
base_image_tag() {
    awk 'toupper($1) == "FROM" { print $2; exit }' "$ROOT/Dockerfile"
}

# A docker CLI that builds with BuildKit: one with the buildx plugin, else a CLI older than 23
# (its BuildKit client is built in; from 23 on `docker build` without buildx is the legacy
# builder, which has no RUN --mount).
docker_cli() {
    if [[ -n "${MODELRUNNER_DOCKER:-}" ]]; then
        echo "$MODELRUNNER_DOCKER"
        return
    fi
    local candidate major
    for candidate in docker /usr/bin/docker; do
        command -v "$candidate" > /dev/null || continue
        if "$candidate" buildx version > /dev/null 2>&1; then
            echo "$candidate"
            return
        fi
        major="$("$candidate" version --format '{{.Client.Version}}' 2> /dev/null | cut -d. -f1)"
        if [[ "$major" =~ ^[0-9]+$ ]] && ((major < 23)); then
            echo "$candidate"
            return
        fi
    done
    return 1
}
