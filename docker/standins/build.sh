#!/usr/bin/env bash
# Builds local stand-ins for the upstream images compose.yaml names (python, tensorflow/tensorflow,
# postgres, prefecthq/prefect, tensorflow/serving), from Debian 12, for machines that reach
# Debian's mirror and PyPI but no image registry. Then builds the project's own images from
# docker/*.Dockerfile on those bases (build arguments only; the Dockerfiles stay as they are).
#
#   docker/standins/build.sh            # from the repository root; prints one line per image
#
# Each stand-in carries a label with the hash of everything it is made from (this folder, the
# Debian suite and packages, the host's CA bundle and pip index); an image whose label matches
# is kept, so a second run rebuilds only the project's images (which Docker's cache makes quick).
set -euo pipefail

cd "$(dirname "$0")/../.."
STANDINS=docker/standins
# Debian's CLI: it builds with BuildKit by itself (a newer CLI may lack the buildx plugin).
DOCKER=${DOCKER:-/usr/bin/docker}
export DOCKER_BUILDKIT=1
MIRROR=${NNSERVE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
BASE_PACKAGES=python3,python3-pip,python3-venv,python-is-python3,ca-certificates
# Outbound HTTPS may be intercepted by a proxy with its own CA: the containers trust what the host
# trusts, or pip inside a build fails its certificate checks.
HOST_CA_BUNDLE=${NNSERVE_HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
# A package index the host's pip is told to use (a registry mirror) is the containers' too.
PIP_INDEX=${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || true)}
LABEL=org.nnserve.standin.inputs

# Read by compose.override.yaml and the end-to-end test.
BASE_IMAGE=nnserve-standin/debian:bookworm
PYTHON_IMAGE=nnserve-standin/python:3.11-bookworm
TENSORFLOW_IMAGE=nnserve-standin/tensorflow:2.21.0
POSTGRES_IMAGE=nnserve-standin/postgres:15-bookworm
PREFECT_IMAGE=nnserve-standin/prefect:3.8.8-python3.11
TFSERVING_IMAGE=nnserve-standin/tfserving:nnserve

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The hash of a stand-in's inputs: the given files and words, with the CA bundle, the pip index
# and the base image's recipe (the function below), which every stand-in inherits.
inputs_hash() {
    {
        declare -f build_base
        cat "$HOST_CA_BUNDLE"
        printf '%s\n' "$SUITE" "$BASE_PACKAGES" "$MIRROR" "$PIP_INDEX"
        for input in "$@"; do
            if [ -f "$input" ]; then cat "$input"; else printf '%s\n' "$input"; fi
        done
    } | sha256sum | cut -c1-16
}

current() {  # IMAGE HASH: true if IMAGE exists with that inputs hash
    [ "$("$DOCKER" image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null)" = "$2" ]
}

build_base() {
    local hash
    hash=$(inputs_hash)
    if current "$BASE_IMAGE" "$hash"; then
        log "$BASE_IMAGE is current ($hash)"
        return
    fi
    log "$BASE_IMAGE: mmdebstrap $SUITE from $MIRROR"
    local env=(
        --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        --change "ENV LANG=C.UTF-8"
        --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
        --change "ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt"
        --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt"
        --change "ENV PIP_DEFAULT_TIMEOUT=180"
        --change "LABEL $LABEL=$hash"
        --change "CMD [\"bash\"]"
    )
    if [ -n "$PIP_INDEX" ]; then
        env+=(--change "ENV PIP_INDEX_URL=$PIP_INDEX")
    fi
    nice -n 10 mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
        --customize-hook="copy-in $HOST_CA_BUNDLE /usr/local/share/ca-certificates/" \
        --customize-hook='mv "$1/usr/local/share/ca-certificates/ca-certificates.crt" "$1/usr/local/share/ca-certificates/host-trusted.crt"' \
        --customize-hook='chroot "$1" update-ca-certificates --fresh >/dev/null' \
        "$SUITE" - "$MIRROR" | "$DOCKER" import "${env[@]}" - "$BASE_IMAGE" >/dev/null
}

# IMAGE DOCKERFILE [CONTEXT]: a stand-in built on the base one; without CONTEXT the Dockerfile
# alone is sent (it copies nothing).
build_on() {
    local image=$1 dockerfile=$2 context=${3:-} hash
    hash=$(inputs_hash "$image" "$dockerfile" ${context:+"$context"/*})
    if current "$image" "$hash"; then
        log "$image is current ($hash)"
        return
    fi
    log "$image: building $dockerfile"
    local build=("$DOCKER" build --quiet --label "$LABEL=$hash" --build-arg "BASE_IMAGE=$BASE_IMAGE"
        --tag "$image")
    if [ -n "$context" ]; then
        nice -n 10 "${build[@]}" --file "$dockerfile" "$context" >/dev/null
    else
        nice -n 10 "${build[@]}" - <"$dockerfile" >/dev/null
    fi
}

# The project's images: its own Dockerfiles, on the stand-ins. Docker's layer cache keeps a second
# build with unchanged sources to seconds.
build_project() {
    log "nnserve-trainer:0.1.0: docker/trainer.Dockerfile on $TENSORFLOW_IMAGE"
    nice -n 10 "$DOCKER" build --quiet --file docker/trainer.Dockerfile \
        --build-arg "TENSORFLOW_IMAGE=${TENSORFLOW_IMAGE%:*}" \
        --build-arg "TENSORFLOW_TAG=${TENSORFLOW_IMAGE#*:}" \
        --tag nnserve-trainer:0.1.0 . >/dev/null
    log "nnserve-gateway:0.1.0: docker/gateway.Dockerfile on $PYTHON_IMAGE"
    nice -n 10 "$DOCKER" build --quiet --file docker/gateway.Dockerfile \
        --build-arg "PYTHON_IMAGE=${PYTHON_IMAGE%:*}" \
        --build-arg "PYTHON_TAG=${PYTHON_IMAGE#*:}" \
        --tag nnserve-gateway:0.1.0 . >/dev/null
}

build_base
"$DOCKER" tag "$BASE_IMAGE" "$PYTHON_IMAGE"
build_on "$TENSORFLOW_IMAGE" "$STANDINS/tensorflow.Dockerfile"
build_on "$POSTGRES_IMAGE" "$STANDINS/postgres/Dockerfile" "$STANDINS/postgres"
build_on "$PREFECT_IMAGE" "$STANDINS/prefect.Dockerfile"
build_project
# The model server stand-in is the trainer image plus the serving extra, so it is rebuilt with it.
log "$TFSERVING_IMAGE: $STANDINS/tfserving.Dockerfile on nnserve-trainer:0.1.0"
nice -n 10 "$DOCKER" build --quiet --file "$STANDINS/tfserving.Dockerfile" \
    --build-arg TRAINER_IMAGE=nnserve-trainer:0.1.0 --tag "$TFSERVING_IMAGE" . >/dev/null
# Each rebuild of the trainer leaves the previous one untagged (gigabytes): drop those, and keep
# BuildKit's cache (which makes the next build quick) from growing past what one full build takes.
"$DOCKER" image prune --force >/dev/null
"$DOCKER" builder prune --force --keep-storage 12GB >/dev/null
log "done"
