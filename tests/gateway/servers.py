"""Model server and gateways as real `nnserve` processes, for the gateway tests.

The model server reads a TF Serving model config file with three models: TF Serving's own
half_plus_two as `default` (its REST tests' name), the two-version half_plus_two as `two` with
version labels, and the digits model the suite trains once. `SlowModelServer` stands in for a
model server that answers slowly.
"""

import subprocess
import threading
import time
from concurrent import futures
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
    wait_until(lambda: answers(f"{url}/healthz"), START_TIMEOUT, "the gateway's /healthz", process)
    return Gateway(url, process, log_file)


def answers(url: str) -> bool:
    """Whether `url` answers 200 (False while nothing listens there)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class SlowModelServer:
    """A small real gRPC server in the test process that serves one model `m` with input `x`
    (DT_FLOAT, [-1]): GetModelMetadata at once, Predict after `delay` seconds, answering
    `{"y": [1.0]}`. `active` counts the Predict calls being answered."""

    def __init__(self, port: int, delay: float) -> None:
        self.delay = delay
        self.active = 0
        self._lock = threading.Lock()
        signatures = wire.SignatureDefMap()
        signature = signatures.signature_def["serving_default"]
        signature.inputs["x"].dtype = wire.types_pb2.DT_FLOAT
        signature.inputs["x"].tensor_shape.dim.add(size=-1)
        signature.outputs["y"].dtype = wire.types_pb2.DT_FLOAT
        self._signatures = wire.pack_any(signatures)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        self._server.add_generic_rpc_handlers(
            [
                _handlers(methods.GET_MODEL_METADATA, self._metadata),
                _handlers(methods.PREDICT, self._predict),
            ]
        )
        self._server.add_insecure_port(f"127.0.0.1:{port}")

    def __enter__(self) -> "SlowModelServer":
        self._server.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.stop(0)

    def _metadata(
        self, request: wire.GetModelMetadataRequest, context
    ) -> wire.GetModelMetadataResponse:
        response = wire.GetModelMetadataResponse(model_spec=request.model_spec)
        response.metadata["signature_def"].CopyFrom(self._signatures)
        return response

    def _predict(self, request: wire.PredictRequest, context) -> wire.PredictResponse:
        with self._lock:
            self.active += 1
        time.sleep(self.delay)
        with self._lock:
            self.active -= 1
        response = wire.PredictResponse()
        output = response.outputs["y"]
        output.dtype = wire.types_pb2.DT_FLOAT
        output.tensor_shape.dim.add(size=1)
        output.float_val.append(1.0)
        return response


def _handlers(method: methods.Method, behaviour) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        method.service,
        {
            method.name: grpc.unary_unary_rpc_method_handler(
                behaviour,
                request_deserializer=method.request_type.FromString,
                response_serializer=method.response_type.SerializeToString,
            )
        },
    )
