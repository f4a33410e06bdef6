#!/usr/bin/env bash
# The Dockerfile's base image (python:3.11-slim-bookworm), idempotently: kept if the engine has
# it, pulled if a registry answers, otherwise a stand-in made offline from the machine's Debian
# mirror: debootstrap (minbase, Debian bookworm's Python 3.11, venv, pip, CA certificates),
# /usr/local/bin/python -> python3, no apt lists, caches, docs or locales, then `docker import`
# under the same tag. Needs DOCKER_HOST / MODELRUNNER_DOCKER (infra/container/engine.sh start) and root.
set -euo pipefail
# shellcheck source=infra/container/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DOCKER="$(docker_cli)"
TAG="$(base_image_tag)"
SUITE=bookworm
PULL_TIMEOUT_S="${MODELRUNNER_PULL_TIMEOUT_S:-60}"

# The first Debian mirror apt is configured with (deb822 sources or a sources.list line).
debian_mirror() {
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$file" ]] || continue
        awk '$1 == "URIs:" { uri = $2 } $1 == "Suites:" && /(^| )'"$SUITE"'( |$)/ && uri {
            print uri; exit }' "$file"
    done | head -n 1 | grep . && return
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2> /dev/null \
        | awk '$1 == "deb" && $0 ~ / '"$SUITE"' / { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {
            print $i; exit } }' | head -n 1 | grep .
}

if "$DOCKER" image inspect "$TAG" > /dev/null 2>&1; then
    log "$TAG: present"
    exit 0
fi
if timeout "$PULL_TIMEOUT_S" "$DOCKER" pull --quiet "$TAG" > /dev/null 2>&1; then
    log "$TAG: pulled"
    exit 0
fi

log "$TAG: no registry answers; building a stand-in with debootstrap"
mirror="$(debian_mirror)" || die "no Debian $SUITE mirror in /etc/apt/sources.list*"
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$rootfs" "$mirror" > "$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log" >&2; die "debootstrap failed"; }
rm -f "$rootfs.log"
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/log/*
tar --numeric-owner -C "$rootfs" -c . | "$DOCKER" import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase $SUITE: stand-in for $TAG" \
    - "$TAG" > /dev/null
log "$TAG: imported ($("$DOCKER" image inspect --format '{{.Size}}' "$TAG") bytes)"
