# The gateway image: `nnserve gateway` on a slim Python, with the base install only (no TensorFlow).
# Build from the repository root: docker build -f docker/gateway.Dockerfile -t nnserve-gateway:0.1.0 .
# The base image is a build argument so that a machine without registry access can build on a
# local stand-in (docker/standins/); the default is the upstream image.
ARG PYTHON_IMAGE=python
ARG PYTHON_TAG=3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE}:${PYTHON_TAG} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/nnserve
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY pipeline ./pipeline
# `.` without extras: the gateway's runtime dependencies and nothing else.
RUN /opt/nnserve/bin/pip install .

FROM ${PYTHON_IMAGE}:${PYTHON_TAG}
RUN groupadd --system --gid 10001 nnserve \
    && useradd --system --uid 10001 --gid nnserve --no-create-home --shell /usr/sbin/nologin nnserve
COPY --from=build /opt/nnserve /opt/nnserve
ENV PATH=/opt/nnserve/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NNSERVE_TFSERVING_ADDR=tfserving:8500
USER 10001:10001
EXPOSE 8000
# The image has no curl; Python's urllib is enough to ask /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["nnserve"]
CMD ["gateway", "--host", "0.0.0.0", "--port", "8000"]
