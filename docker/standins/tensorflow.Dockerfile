# Stand-in for tensorflow/tensorflow:2.21.0 (Ubuntu, TensorFlow in the system Python): Debian 12's
# Python 3.11 with TensorFlow 2.21.0 from PyPI in its system site-packages, where the trainer
# image's venv (--system-site-packages) finds it.
ARG BASE_IMAGE=nnserve-standin/debian:bookworm
FROM ${BASE_IMAGE}
RUN pip install --no-cache-dir --break-system-packages tensorflow==2.21.0
CMD ["bash"]
