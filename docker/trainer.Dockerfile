# The trainer image: training jobs, the Prefect worker and the model config writer, on TensorFlow's
# official image. The GPU variant is the same file on TensorFlow's -gpu tag:
#   docker build -f docker/trainer.Dockerfile -t nnserve-trainer:0.1.0 .
#   docker build -f docker/trainer.Dockerfile -t nnserve-trainer:0.1.0-gpu \
#       --build-arg TENSORFLOW_TAG=2.21.0-gpu .
# The base image is a build argument so that a machine without registry access can build on a
# local stand-in (docker/standins/); the default is the upstream image.
ARG TENSORFLOW_IMAGE=tensorflow/tensorflow
ARG TENSORFLOW_TAG=2.21.0

FROM ${TENSORFLOW_IMAGE}:${TENSORFLOW_TAG} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The base image's site-packages stay visible: its TensorFlow (CPU or GPU build) satisfies the
# pipeline's requirement, so only what it lacks goes into the venv.
RUN python3 -m venv --system-site-packages /opt/nnserve
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY pipeline ./pipeline
RUN /opt/nnserve/bin/pip install ".[pipeline,kubernetes]"

FROM ${TENSORFLOW_IMAGE}:${TENSORFLOW_TAG}
RUN groupadd --system --gid 10001 nnserve \
    && useradd --system --uid 10001 --gid nnserve --no-create-home --shell /usr/sbin/nologin nnserve \
    && mkdir -p /models /runs /datasets \
    && chown nnserve:nnserve /models /runs /datasets
COPY --from=build /opt/nnserve /opt/nnserve
WORKDIR /opt/nnserve/app
# The specs sit where the README's commands expect them: `nnserve train pipeline/specs/NAME.yaml`.
COPY pipeline/specs ./pipeline/specs
# The scheduled retraining deployments, for `prefect deploy --all` from here (register-schedules).
COPY prefect.yaml ./prefect.yaml
COPY docker/tfserving_config.py ./tfserving_config.py
# Every path the processes write to is under /models, /runs, /datasets (downloaded dataset files)
# or /tmp, so the root filesystem can be mounted read-only.
ENV PATH=/opt/nnserve/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    NNSERVE_MODEL_REPO=/models \
    NNSERVE_RUNS_DIR=/runs \
    NNSERVE_DATA_DIR=/datasets \
    NNSERVE_TFSERVING_ADDR=tfserving:8500 \
    HOME=/tmp \
    PREFECT_HOME=/tmp/prefect \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
EXPOSE 8080
# Answers when the image runs its default command, the Prefect worker started --with-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
CMD ["prefect", "worker", "start", "--pool", "training", "--type", "process", "--with-healthcheck"]
