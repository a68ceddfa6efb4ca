"""The system under attack: a real `nnserve model-server` and a real `nnserve gateway` in front of
it, and the health check that follows every batch of hostile requests.

A case may kill the model server (a oneDNN kernel's CHECK aborts the whole process). The health
check then names the dead process and its exit status, and `ensure_running` starts it again on
the same port, so the cases after it still run against a server that answers.
"""

import json
import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
from gateway.servers import START_TIMEOUT, Gateway, available, start_gateway
from support import free_port, nnserve, stop, wait_until
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from service.processes import descendant_pids, resident_bytes

DIGITS = "digits-cnn"
HALF_PLUS_TWO = "half_plus_two"
MODELS = (DIGITS, HALF_PLUS_TWO)
MODEL_SERVER, GATEWAY = "model server", "gateway"
# Big enough for the largest answer a case asks for (a 48 MiB tensor in, as much out).
CLIENT_OPTIONS = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
# Seconds a call may take: generous, yet a server that works too long fails a case, not the run.
CALL_TIMEOUT = 120
# The memory bound, in both processes: RSS (over the process and its descendants) may grow to at
# most GROWTH_FACTOR times its value after warm-up plus GROWTH_SLACK. Measured on a two-core
# machine with both oneDNN settings, legitimate traffic alone (three rounds of 210 batches of 1 to
# 256 digits through each door, a 48 MiB tensor over gRPC, a 16 MB JSON body) took the model
# server from 827 MiB after warm-up to at most 1004 MiB (+177 MiB, x1.21) and the gateway from 93
# to at most 171 MiB (+78 MiB). The bounds this gives, 1290 and 372 MiB, leave 286 and 200 MiB
# above those peaks, and catch a process that keeps what a hostile request made it allocate
# (before the element limits, one claim of 1e8 floats left the model server at 1624 MiB).
GROWTH_FACTOR = 1.25
GROWTH_SLACK = 256 * 1024 * 1024
FATAL_LINE = re.compile(r"F\d{4} ")  # absl's FATAL severity, as TensorFlow writes it
HALF_PLUS_TWO_IN = [[1.0], [2.0], [5.0]]
HALF_PLUS_TWO_OUT = [[2.5], [3.0], [4.5]]


@dataclass(frozen=True)
class ServedModels:
    """What both servers serve: base path by model name, the model server's config file listing
    them, the gateway's model repository, and one known digit image."""

    base_paths: dict[str, Path]
    config_file: Path
    repository: Path  # NNSERVE_MODEL_REPO: empty, the models are found through the config file
    digit: list  # one 8x8x1 image, as the digits model's example request holds it


def model_server_config(base_paths: dict[str, Path]) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in base_paths.items():
        config.model_config_list.config.add(
            name=name, base_path=str(base_path), model_platform="tensorflow"
        )
    return config


def exit_status(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name} (status {returncode})"
    return f"exit status {returncode}"


def tensor(values: np.ndarray) -> tensor_pb2.TensorProto:
    """A float32 TensorProto in the typed value field, as TF Serving's own clients send it."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.extend(
        tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in values.shape
    )
    proto.float_val.extend(values.astype(np.float32).ravel().tolist())
    return proto


def predict_request(model: str, **inputs: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(value)
    return request


class Stack:
    """Model server and gateway for one TF_ENABLE_ONEDNN_OPTS setting."""

    def __init__(self, onednn: str, models: ServedModels, logs: Path) -> None:
        self.onednn = onednn
        self.models = models
        self.logs = logs
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.restarts: list[str] = []
        self.tally: Counter[str] = Counter()  # the generated requests' outcomes
        self.model_server: subprocess.Popen | None = None
        self.gateway: Gateway | None = None
        self.channel: grpc.Channel | None = None
        self.http: httpx.Client | None = None
        self.baseline_probabilities: np.ndarray | None = None
        self._server_log: Path | None = None
        self._server_children: set[int] = set()
        self._warm_rss: dict[str, int] = {}
        self._peak_rss: dict[str, int] = {}
        self._over_bound: set[str] = set()

    # --- processes ------------------------------------------------------------------------

    def start(self) -> None:
        self._start_model_server()
        self._start_gateway()
        self._warm_up(MODEL_SERVER, GATEWAY)

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.channel is not None:
            self.channel.close()
        if self.gateway is not None:
            stop(self.gateway.process)
        if self.model_server is not None:
            stop(self.model_server)

    def ensure_running(self) -> None:
        """Start again what an earlier case killed or left above its memory bound (so that each
        case is judged on its own), and say so in `restarts`."""
        restarted = []
        for name, process in self._processes():
            if process.poll() is not None:
                self.restarts.append(f"{name}: {exit_status(process.returncode)}")
            elif name in self._over_bound:
                self.restarts.append(f"{name}: RSS above its bound")
                stop(process)
            else:
                continue
            restarted.append(name)
        self._over_bound.clear()
        if MODEL_SERVER in restarted:
            self.channel.close()
            self._start_model_server()
            self._wait_for_gateway_readiness()
        if GATEWAY in restarted:
            self.http.close()
            self._start_gateway()
        if restarted:
            self._warm_up(*restarted)

    def predict(self, request, timeout: float = CALL_TIMEOUT):
        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel).Predict(
            request, timeout=timeout
        )

    def reload_config(self, request, timeout: float = CALL_TIMEOUT):
        return model_service_pb2_grpc.ModelServiceStub(self.channel).HandleReloadConfigRequest(
            request, timeout=timeout
        )

    def server_log_lines(self) -> list[str]:
        return self._server_log.read_text(errors="backslashreplace").splitlines()

    def gateway_log_lines(self) -> list[str]:
        return self.gateway.logs().splitlines()

    def _start_model_server(self) -> None:
        self._server_log = self.logs / f"model-server-{len(self.restarts)}.log"
        with self._server_log.open("wb") as log:
            self.model_server = nnserve(
                "model-server",
                "--host=127.0.0.1",
                f"--port={self.port}",
                f"--model_config_file={self.models.config_file}",
                "--file_system_poll_wait_seconds=0",
                env={"TF_ENABLE_ONEDNN_OPTS": self.onednn},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for model in MODELS:
            wait_until(
                lambda model=model: available(self.address, model),
                START_TIMEOUT,
                f"{model} AVAILABLE on the model server",
                self.model_server,
            )
        self.channel = grpc.insecure_channel(self.address, options=CLIENT_OPTIONS)
        self._server_children = set(descendant_pids(self.model_server.pid))

    def _start_gateway(self) -> None:
        self.gateway = start_gateway(
            self.address,
            self.logs / f"gateway-{len(self.restarts)}.log",
            model_config_file=str(self.models.config_file),
            model_repo=str(self.models.repository),
        )
        self.http = httpx.Client(base_url=self.gateway.url, timeout=CALL_TIMEOUT)
        self._wait_for_gateway_readiness()

    def _wait_for_gateway_readiness(self) -> None:
        def ready() -> bool:
            try:
                return httpx.get(f"{self.gateway.url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, START_TIMEOUT, "the gateway's /readyz", self.gateway.process)

    def _warm_up(self, *names: str) -> None:
        """A few good requests through both doors, then the memory the processes `names` start
        from."""
        for _ in range(5):
            problems = self._good_requests()
            assert not problems, problems
        pids = {MODEL_SERVER: self.model_server.pid, GATEWAY: self.gateway.process.pid}
        self._warm_rss.update(
            {name: resident_bytes(pids[name], descendants=True) for name in names}
        )

    # --- the health check -----------------------------------------------------------------

    def health_problems(self) -> list[str]:
        """What is wrong with the two processes after a batch of requests (empty: healthy)."""
        dead = self._deaths()
        if dead:
            return dead
        problems = self._replaced_children() + self._good_requests()
        if problems:
            # A crashed process can refuse connections a moment before it has finished exiting.
            dead = self._deaths(wait_seconds=15)
        return dead + problems + self._memory_problems()

    def _deaths(self, wait_seconds: float = 0) -> list[str]:
        """The dead processes, waiting up to `wait_seconds` for one to finish dying."""
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline and all(p.poll() is None for _, p in self._processes()):
            time.sleep(0.2)
        deaths = []
        for name, process in self._processes():
            if process.poll() is None:
                continue
            output = (
                f"; its last output: {self._last_output()}" if process is self.model_server else ""
            )
            deaths.append(
                f"{name} (pid {process.pid}, TF_ENABLE_ONEDNN_OPTS={self.onednn}) is dead: "
                f"{exit_status(process.returncode)}{output}"
            )
        return deaths

    def _processes(self) -> tuple[tuple[str, subprocess.Popen], ...]:
        return (MODEL_SERVER, self.model_server), (GATEWAY, self.gateway.process)

    def _replaced_children(self) -> list[str]:
        """A supervisor restarts a serving child that died: that is a crash all the same."""
        children = set(descendant_pids(self.model_server.pid))
        if self._server_children <= children:
            return []
        gone, new = (
            sorted(self._server_children - children),
            sorted(children - self._server_children),
        )
        self._server_children = children  # reported once
        return [
            f"the model server's serving process(es) {gone} died and were replaced by {new}; "
            f"its last output: {self._last_output()}"
        ]

    def _memory_problems(self) -> list[str]:
        problems = []
        for name, process in self._processes():
            if process.poll() is not None:
                continue
            warm, now = self._warm_rss[name], resident_bytes(process.pid, descendants=True)
            self._peak_rss[name] = max(self._peak_rss.get(name, 0), now)
            bound = int(warm * GROWTH_FACTOR) + GROWTH_SLACK
            if now > bound:
                self._over_bound.add(name)
                problems.append(
                    f"{name} RSS is {now / 2**20:.0f} MiB, above its bound of {bound / 2**20:.0f} "
                    f"MiB ({warm / 2**20:.0f} MiB after warm-up x {GROWTH_FACTOR} + "
                    f"{GROWTH_SLACK / 2**20:.0f} MiB)"
                )
        return problems

    def memory_report(self) -> str:
        return ", ".join(
            f"{name} {warm / 2**20:.0f} -> {self._peak_rss.get(name, 0) / 2**20:.0f}"
            for name, warm in self._warm_rss.items()
        )

    def _good_requests(self) -> list[str]:
        problems = []
        digit = np.array([self.models.digit], dtype=np.float32)
        try:
            response = self.predict(
                predict_request(DIGITS, image=tensor(digit)), timeout=CALL_TIMEOUT
            )
            probabilities = np.array(response.outputs["probabilities"].float_val)
            problems += self._probability_problems("gRPC", probabilities)
        except grpc.RpcError as error:
            problems.append(f"gRPC digits predict failed: {error.code().name} {error.details()}")
        try:
            response = self.predict(
                predict_request(HALF_PLUS_TWO, x=tensor(np.array(HALF_PLUS_TWO_IN))),
                timeout=CALL_TIMEOUT,
            )
            y = np.array(response.outputs["y"].float_val).reshape(-1, 1).tolist()
            if y != HALF_PLUS_TWO_OUT:
                problems.append(f"gRPC half_plus_two answered {y}, not {HALF_PLUS_TWO_OUT}")
        except grpc.RpcError as error:
            problems.append(
                f"gRPC half_plus_two predict failed: {error.code().name} {error.details()}"
            )
        try:
            response = self.http.post(
                f"/v1/models/{DIGITS}:predict", json={"instances": digit.tolist()}
            )
            if response.status_code != 200:
                problems.append(f"HTTP digits predict: {response.status_code} {response.text}")
            else:
                [prediction] = response.json()["predictions"]
                problems += self._probability_problems(
                    "HTTP", np.array(prediction["probabilities"])
                )
            response = self.http.post(
                f"/v1/models/{HALF_PLUS_TWO}:predict", json={"instances": HALF_PLUS_TWO_IN}
            )
            answer = response.json() if response.status_code == 200 else response.text
            if answer != {"predictions": HALF_PLUS_TWO_OUT}:
                problems.append(f"HTTP half_plus_two: {response.status_code} {answer}")
            response = self.http.get("/healthz")
            if response.status_code != 200:
                problems.append(f"/healthz: {response.status_code} {response.text}")
        except httpx.HTTPError as error:
            problems.append(f"the gateway did not answer: {type(error).__name__}: {error}")
        return problems

    def _probability_problems(self, door: str, probabilities: np.ndarray) -> list[str]:
        valid = (
            probabilities.shape == (10,)
            and bool(np.all((probabilities >= 0) & (probabilities <= 1)))
            and abs(float(probabilities.sum()) - 1) < 1e-4
        )
        if not valid:
            return [f"{door} digits predict: not a probability vector: {probabilities.tolist()}"]
        if self.baseline_probabilities is None:
            self.baseline_probabilities = probabilities
        elif not np.allclose(probabilities, self.baseline_probabilities, atol=1e-5):
            return [
                f"{door} digits predict: {probabilities.tolist()} for the known image, which "
                f"gave {self.baseline_probabilities.tolist()} after warm-up"
            ]
        return []

    def _last_output(self) -> str:
        """The model server's last fatal line (a failed CHECK names its cause), if any, and its
        last lines."""
        lines = self.server_log_lines()
        fatal = [line for line in lines if "Check failed" in line or FATAL_LINE.match(line)]
        return " | ".join(line[:300] for line in [*fatal[-1:], *lines[-2:]])


def read_digit(version_dir: Path) -> list:
    """The held-out digit of the trained model's example request (one 8x8x1 image)."""
    example = json.loads((version_dir / "assets.extra" / "example_request.json").read_text())
    [image] = example["instances"]
    return image
