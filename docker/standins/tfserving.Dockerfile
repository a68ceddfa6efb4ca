# Stand-in for tensorflow/serving: the trainer image with the serving extra, and a
# `tensorflow_model_server` that is `nnserve model-server`, so compose.yaml's entrypoint and flags
# run unchanged. Build from the repository root with TRAINER_IMAGE set (docker/standins/build.sh).
ARG TRAINER_IMAGE=nnserve-trainer:0.1.0
FROM ${TRAINER_IMAGE}
USER root
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY pipeline ./pipeline
RUN /opt/nnserve/bin/pip install --no-cache-dir ".[serving]" \
    && rm -rf /src \
    && printf '#!/bin/sh\nexec nnserve model-server "$@"\n' >/usr/local/bin/tensorflow_model_server \
    && chmod 755 /usr/local/bin/tensorflow_model_server
WORKDIR /
USER 10001:10001
EXPOSE 8500
ENTRYPOINT ["tensorflow_model_server"]
