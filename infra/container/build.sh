#!/usr/bin/env bash
# Build the images (default: all four targets) with the tags the compose files, the Kubernetes
# manifests and the container tests use:
#   worker      modelrunner-worker:local and modelrunner-worker:<project version>
#   models      modelrunner-models:local
#   bioimageio  modelrunner-bioimageio:local
#   emulator    modelrunner-emulator:local
#
#   eval "$(infra/container/engine.sh start)"; infra/container/build.sh [target ...]
#
# pip inside the build reaches the package index this machine's pip is configured with (its
# index-url, http(s) extra-index-urls, trusted hosts, timeout, CA bundle: read from `pip config list`,
# which includes PIP_* variables) and the proxy variables, passed as build arguments; builds
# use the host network.
set -euo pipefail
# shellcheck source=infra/container/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DOCKER="$(docker_cli)"
PYTHON="${PYTHON:-python3}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)"

# `pip config list` value of a key (the last one listed wins, as the environment does).
pip_config() {
    "$PYTHON" -m pip config list 2> /dev/null \
        | sed -n "s/^[^.]*\.$1='\(.*\)'\$/\1/p" | tail -n 1
}

build_args=()
add_arg() {
    if [[ -n "$2" ]]; then
        build_args+=(--build-arg "$1=$2")
    fi
}
add_arg PIP_INDEX_URL "$(pip_config index-url)"
add_arg PIP_EXTRA_INDEX_URL "$(pip_config extra-index-url | tr ' ' '\n' | grep -E '^https?://' \
    | paste -sd ' ' || true)"
add_arg PIP_TRUSTED_HOST "$(pip_config trusted-host)"
add_arg PIP_DEFAULT_TIMEOUT "$(pip_config default-timeout)"
cert="$(pip_config cert)"
cert="${cert:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}}"
if [[ -n "$cert" && -f "$cert" ]]; then
    build_args+=(--secret "id=pip-cert,src=$cert")
fi
for proxy in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    add_arg "$proxy" "${!proxy:-}"
done

tags_of() {
    case "$1" in
        worker) echo "modelrunner-worker:local modelrunner-worker:$VERSION" ;;
        models | bioimageio | emulator) echo "modelrunner-$1:local" ;;
        *) die "unknown target $1 (worker, models, bioimageio, emulator)" ;;
    esac
}

"$(dirname "${BASH_SOURCE[0]}")/base-image.sh"
targets=("$@")
((${#targets[@]})) || targets=(worker models bioimageio emulator)
for target in "${targets[@]}"; do
    tag_args=()
    for tag in $(tags_of "$target"); do
        tag_args+=(--tag "$tag")
    done
    log "building $target"
    started=$SECONDS
    DOCKER_BUILDKIT=1 nice -n 10 "$DOCKER" build --network host --progress plain \
        "${build_args[@]}" --target "$target" "${tag_args[@]}" "$ROOT"
    log "built $target in $((SECONDS - started)) s: $(tags_of "$target")" \
        "($("$DOCKER" image inspect --format '{{.Size}}' "${tag_args[1]}") bytes)"
done
