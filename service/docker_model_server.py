"""The model server of `nnserve up --engine docker`: the tensorflow/serving image (a setting) run
through the Docker SDK on the host's model repository, with TF Serving's own flags, its gRPC port
published on 127.0.0.1 only. The container is handled like the embedded model server's process
(poll, signal, wait, kill), so `nnserve up` stops both kinds the same way."""

import os
import signal
import subprocess
from pathlib import Path

CONTAINER_PORT = 8500


class DockerEngineError(RuntimeError):
    """No engine, or no image: said in one line, with what to do."""


def engine():
    """A client of the engine at DOCKER_HOST (default the local socket), or DockerEngineError."""
    try:
        import docker
    except ImportError as error:
        raise DockerEngineError(
            "the Docker SDK for Python is not installed: pip install 'nnserve[serving]'"
        ) from error
    where = os.environ.get("DOCKER_HOST", "the local socket")
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except docker.errors.DockerException as error:
        raise DockerEngineError(
            f"no Docker engine answers at {where}: start it, or use --engine embedded ({error})"
        ) from error
    return client


def check_image(client, image: str) -> None:
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise DockerEngineError(
            f"the image {image} is not on this Docker engine: `docker pull {image}`, or set "
            "NNSERVE_TFSERVING_IMAGE to one that is, or use --engine embedded"
        ) from None


class ModelServerContainer:
    """A running model server container, with the parts of subprocess.Popen that `nnserve up`
    uses; `remove()` deletes it."""

    def __init__(self, container) -> None:
        self._container = container
        self.returncode: int | None = None

    @classmethod
    def start(
        cls, client, image: str, grpc_port: int, config_file: Path, repo: Path
    ) -> "ModelServerContainer":
        # The model config names versions by absolute host paths: mounted at the same paths,
        # they mean the same inside the container.
        mounts = {str(repo): {"bind": str(repo), "mode": "ro"}}
        if not config_file.is_relative_to(repo):
            mounts[str(config_file.parent)] = {"bind": str(config_file.parent), "mode": "ro"}
        container = client.containers.run(
            image,
            # The image's own entrypoint adds --model_name and --model_base_path; as in
            # compose.yaml, the config file replaces both.
            entrypoint=["tensorflow_model_server"],
            command=[
                f"--port={CONTAINER_PORT}",
                f"--model_config_file={config_file}",
                # Promotions and rollbacks take effect within 1 s, as with the embedded server.
                "--model_config_file_poll_wait_seconds=1",
                "--allow_version_labels_for_unavailable_models=true",
            ],
            ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", grpc_port)},
            volumes=mounts,
            # The repository's files are the user's: read as the user.
            user=f"{os.getuid()}:{os.getgid()}",
            read_only=True,
            tmpfs={"/tmp": ""},
            environment={"TF_ENABLE_ONEDNN_OPTS": "0"},
            labels={"org.nnserve.up": "model-server"},
            detach=True,
        )
        return cls(container)

    @property
    def name(self) -> str:
        return self._container.name

    def poll(self) -> int | None:
        if self.returncode is None:
            self._container.reload()
            if self._container.status in ("exited", "dead"):
                self.returncode = self._container.attrs["State"]["ExitCode"]
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            self._container.kill(signal=signal.Signals(signum).name)

    def wait(self, timeout: float | None = None) -> int:
        import requests

        try:
            result = self._container.wait(timeout=timeout)
        # The SDK's read timeout: a Timeout over TCP, a ConnectionError over the unix socket.
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as error:
            raise subprocess.TimeoutExpired(self.name, timeout or 0) from error
        self.returncode = result["StatusCode"]
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            self._container.kill()

    def logs(self) -> str:
        return self._container.logs(tail=50).decode(errors="replace")

    def remove(self) -> None:
        self._container.remove(force=True)
