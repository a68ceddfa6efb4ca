"""Model server and gateways as real `nnserve` processes, for the gateway tests.

The model server reads a TF Serving model config file with three models: TF Serving's own
half_plus_two as `default` (its REST tests' name), the two-version half_plus_two as `two` with
version labels, and the digits model the suite trains once.
"""

import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from support import SHARED_TESTDATA, free_port, nnserve, wait_until

from service import wire
from service.wire import methods

HALF_PLUS_TWO = SHARED_TESTDATA / "saved_model_half_plus_two_cpu"
TWO_VERSIONS = SHARED_TESTDATA / "saved_model_half_plus_two_2_versions"
LABELS = {"stable": 123, "canary": 124}
START_TIMEOUT = 120


def model_config(digits_base_path: Path) -> str:
    """TF Serving's model config text: the test models that exist here, and digits."""
    labels = "".join(f"version_labels {{ key: '{k}' value: {v} }} " for k, v in LABELS.items())
    entries = [
        ("default", HALF_PLUS_TWO, ""),
        ("two", TWO_VERSIONS, f"model_version_policy {{ all {{}} }} {labels}"),
        ("digits-cnn", digits_base_path, ""),
    ]
    configs = "".join(
        f"  config {{ name: '{name}' base_path: '{path}' model_platform: 'tensorflow' {extra}}}\n"
        for name, path, extra in entries
        if path.is_dir()
    )
    return f"model_config_list {{\n{configs}}}\n"


def available(address: str, model: str) -> bool:
    """Whether the model server at `address` has an AVAILABLE version of `model`."""
    with grpc.insecure_channel(address) as channel:
        request = wire.GetModelStatusRequest(model_spec=wire.ModelSpec(name=model))
        try:
            response = methods.GET_MODEL_STATUS.bind(channel)(request, timeout=5)
        except grpc.RpcError:
            return False
    available = wire.ModelVersionStatus.State.Value("AVAILABLE")
    return any(status.state == available for status in response.model_version_status)


@dataclass
class ModelServer:
    address: str
    port: int
    config_file: Path
    process: subprocess.Popen


def start_model_server(config_file: Path, port: int) -> subprocess.Popen:
    return nnserve(
        "model-server",
        "--host",
        "127.0.0.1",
        f"--port={port}",
        f"--model_config_file={config_file}",
        "--allow_version_labels_for_unavailable_models",
        "--file_system_poll_wait_seconds=0",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen
    log_file: Path

    def logs(self) -> str:
        return self.log_file.read_text()


def start_gateway(backend: str, log_file: Path, **settings: str) -> Gateway:
    """`nnserve gateway` on a free port; `settings` are NNSERVE_* variables without the prefix."""
    port = free_port()
    env = {
        "NNSERVE_TFSERVING_ADDR": backend,
        **{f"NNSERVE_{k.upper()}": v for k, v in settings.items()},
    }
    with log_file.open("ab") as log:
        process = nnserve("gateway", "--port", str(port), env=env, stderr=log)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(f"{url}/healthz"), START_TIMEOUT, "the gateway's /healthz", process)
    return Gateway(url, process, log_file)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
