"""`nnserve up`: train the demo model if the repository has none, then run model server and gateway.

Each part runs in its own process, as it would in a deployment: training and the model server load
TensorFlow, the gateway does not.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pipeline
from pipeline.spec import SpecError, load_spec
from service import model_repository
from service.ports import ensure_free
from service.processes import dies_with_parent
from service.settings import get_settings

DEFAULT_SPEC = Path(pipeline.__file__).parent / "specs" / "digits-cnn.yaml"
HOST = "127.0.0.1"
READY_TIMEOUT_SECONDS = 180
STOP_TIMEOUT_SECONDS = 30


class UpError(RuntimeError):
    pass


def run(spec_path: Path, grpc_port: int, http_port: int) -> int:
    try:
        spec = load_spec(spec_path)
    except SpecError as error:
        raise UpError(str(error)) from error
    for port in (grpc_port, http_port):
        ensure_free(HOST, port)
    settings = get_settings()
    base_path = (settings.model_repo / spec.name).resolve()
    if not model_repository.complete_versions(base_path):
        print(f"no version of {spec.name} in {base_path}: training it first", flush=True)
        if subprocess.call(_nnserve("train", str(spec_path))) != 0:
            raise UpError(f"training {spec.name} failed; see the output above")

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    model_server = _start(
        "model-server",
        "--host",
        HOST,
        f"--port={grpc_port}",
        f"--model_name={spec.name}",
        f"--model_base_path={base_path}",
    )
    gateway = _start(
        "gateway",
        "--host",
        HOST,
        "--port",
        str(http_port),
        env={"NNSERVE_TFSERVING_ADDR": f"{HOST}:{grpc_port}"},
    )
    # Stopped in this order: the gateway stops taking requests before its backend goes away.
    children = {"gateway": gateway, "model server": model_server}
    try:
        gateway_url = f"http://{HOST}:{http_port}"
        _wait_until_available(gateway_url, spec.name, children, stop)
        if stop.is_set():
            return 0
        _print_banner(spec.name, grpc_port, gateway_url, base_path)
        while not stop.wait(0.5):
            if _any_died(children):
                raise UpError(_died(children))
        print("\nstopping gateway and model server", flush=True)
        return 0
    finally:
        _stop_all(children)


def _nnserve(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    # A session of its own: Ctrl-C reaches only this supervisor, which stops the parts in order.
    return subprocess.Popen(
        _nnserve(*args),
        env={**os.environ, **(env or {})},
        start_new_session=True,
        preexec_fn=dies_with_parent(signal.SIGTERM),
    )


def _wait_until_available(
    gateway_url: str, model_name: str, children: dict[str, subprocess.Popen], stop: threading.Event
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not stop.is_set():
        if _any_died(children):
            raise UpError(_died(children))
        if time.monotonic() > deadline:
            raise UpError(
                f"{model_name} was not available through {gateway_url} "
                f"within {READY_TIMEOUT_SECONDS} s"
            )
        if _is_available(f"{gateway_url}/v1/models/{model_name}"):
            return
        stop.wait(0.25)


def _is_available(status_url: str) -> bool:
    try:
        with urllib.request.urlopen(status_url, timeout=2) as response:
            statuses = json.load(response)["model_version_status"]
    except (OSError, ValueError, KeyError):
        return False
    return any(status["state"] == "AVAILABLE" for status in statuses)


def _print_banner(model_name: str, grpc_port: int, gateway_url: str, base_path: Path) -> None:
    latest = max(model_repository.complete_versions(base_path))
    example = base_path / str(latest) / "assets.extra" / "example_request.json"
    print(
        f"\nnnserve is up, serving {model_name} version {latest}\n"
        f"  model server (gRPC, TensorFlow Serving API): {HOST}:{grpc_port}\n"
        f"  gateway (HTTP):                              {gateway_url}\n\n"
        f"Predict:\n"
        f"  curl -s -X POST {gateway_url}/v1/models/{model_name}:predict \\\n"
        f"       -H 'Content-Type: application/json' -d @{example}\n\n"
        f"Press Ctrl-C to stop.",
        flush=True,
    )


def _any_died(children: dict[str, subprocess.Popen]) -> bool:
    return any(child.poll() is not None for child in children.values())


def _died(children: dict[str, subprocess.Popen]) -> str:
    dead = [
        f"{name} (exit code {child.returncode})"
        for name, child in children.items()
        if child.poll() is not None
    ]
    return f"{', '.join(dead)} stopped unexpectedly; see its output above"


def _stop_all(children: dict[str, subprocess.Popen]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
