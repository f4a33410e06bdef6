#!/usr/bin/env bash
# `make test-container`: a Docker engine (installed and started if missing), the four images
# built, then the container tests (tests/container) and the compose stack end to end
# (tests/functional/test_compose.py), or the pytest arguments given. Stops the engine if it
# started it; its data root (the layer cache) stays for the next run.
#
#   PYTHON=.venv/bin/python infra/container/test.sh [pytest arguments]
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=infra/container/common.sh
source "$here/common.sh"
export PYTHON="${PYTHON:-python3}"

eval "$("$here/engine.sh" start)"
if [[ "$MODELRUNNER_DOCKER_STARTED" == 1 ]]; then
    trap '"$here/engine.sh" stop' EXIT
fi
"$here/build.sh"
((${#@})) || set -- tests/container tests/functional/test_compose.py
cd "$ROOT"
MODELRUNNER_REQUIRE_DOCKER=1 "$PYTHON" -m pytest -p no:cacheprovider -m docker "$@"
