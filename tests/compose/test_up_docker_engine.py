"""`nnserve up --engine docker` on a real engine, with the tensorflow/serving stand-in image as
NNSERVE_TFSERVING_IMAGE: the model server runs as a container on the host's repository, the
gateway in front of it answers, and Ctrl-C removes the container."""

import json
import signal
import subprocess

import httpx
from compose.helpers import docker
from support import free_port, nnserve, read_until, refused_start, stop

STANDIN = "nnserve-standin/tfserving:nnserve"
LABEL = "org.nnserve.up=model-server"
TINY_SPEC = (
    "name: tiny-digits\n"
    "dataset: {name: digits}\n"
    "model: {architecture: simple-cnn, conv_filters: [8], dense_units: 16}\n"
    "training: {epochs: 2}\n"
)


def up_containers() -> list[dict]:
    ids = docker("ps", "--all", "--quiet", "--filter", f"label={LABEL}").stdout.split()
    return json.loads(docker("inspect", *ids).stdout) if ids else []


def test_a_missing_image_is_a_clear_error(tmp_path):
    stderr = refused_start(
        "up",
        "--engine",
        "docker",
        "--grpc-port",
        str(free_port()),
        "--http-port",
        str(free_port()),
        env={
            "NNSERVE_TFSERVING_IMAGE": "nnserve-standin/no-such-image:1",
            "NNSERVE_MODEL_REPO": str(tmp_path / "models"),
        },
    )
    assert "the image nnserve-standin/no-such-image:1 is not on this Docker engine" in stderr
    assert "Traceback" not in stderr


def test_up_runs_the_model_server_container_and_removes_it_on_ctrl_c(tmp_path):
    spec = tmp_path / "tiny-digits.yaml"
    spec.write_text(TINY_SPEC)
    repo = tmp_path / "models"
    grpc_port, http_port = free_port(), free_port()
    up = nnserve(
        "up",
        "--engine",
        "docker",
        "--spec",
        str(spec),
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        stdout=subprocess.PIPE,
        text=True,
        env={
            "NNSERVE_TFSERVING_IMAGE": STANDIN,
            "NNSERVE_MODEL_REPO": str(repo),
            "NNSERVE_RUNS_DIR": str(tmp_path / "runs"),
        },
    )
    try:
        banner = read_until(up, "Press Ctrl-C to stop.")
        assert f"of {STANDIN}" in banner, banner
        (container,) = up_containers()
        assert container["Config"]["Image"] == STANDIN
        assert container["HostConfig"]["ReadonlyRootfs"]
        assert container["HostConfig"]["PortBindings"]["8500/tcp"] == [
            {"HostIp": "127.0.0.1", "HostPort": str(grpc_port)}
        ]
        example = repo / "tiny-digits" / "1" / "assets.extra" / "example_request.json"
        response = httpx.post(
            f"http://127.0.0.1:{http_port}/v1/models/tiny-digits:predict",
            content=example.read_bytes(),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        up.send_signal(signal.SIGINT)
        assert up.wait(90) == 0
        assert up_containers() == [], "the model server container is left behind"
    finally:
        stop(up, timeout=60)
        for container in up_containers():
            docker("rm", "--force", container["Id"])
