"""A real `nnserve model-server` serving from a model config file, an `nnserve gateway` reading the
same file, and clients that keep calling both while the file changes.

The model versions are our half_plus_two with different offsets: version N of a model answers
x = 1.0 with 0.5 + its offset, so an answer tells which version gave it.
"""

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from support import free_port, nnserve, stop, wait_until

from service import serving_config, wire
from service.wire import methods

START_TIMEOUT = 120
# The model server re-reads its config file this often (TF Serving's flag takes whole seconds).
CONFIG_POLL_SECONDS = 1


def answer_of(offset: float) -> float:
    return 0.5 + offset


@dataclass
class Stack:
    repo: Path
    config_file: Path
    grpc_address: str
    gateway_url: str
    model_server: subprocess.Popen
    gateway: subprocess.Popen
    saved_models: dict[float, Path]  # a half_plus_two SavedModel version folder by offset

    def add_model(self, model: str, offsets: list[float]) -> Path:
        """`model` with version i + 1 answering with offsets[i]; returns its base path."""
        base = self.repo / model
        for version, offset in enumerate(offsets, start=1):
            shutil.copytree(self.saved_models[offset], base / str(version))
        return base

    def env(self) -> dict[str, str]:
        """The settings `nnserve promote / rollback / models` need to work on this stack."""
        return {
            "NNSERVE_MODEL_REPO": str(self.repo),
            "NNSERVE_TFSERVING_ADDR": self.grpc_address,
        }

    def grpc_predict(self, model: str, **version) -> tuple[int, float]:
        """(version, answer) of a Predict of x = 1.0 straight to the model server."""
        with grpc.insecure_channel(self.grpc_address) as channel:
            return predict(methods.PREDICT.bind(channel), model, **version)

    def http_predict(self, path: str) -> float:
        """The answer to x = 1.0 through the gateway at /v1/models/{path}:predict."""
        response = httpx.post(
            f"{self.gateway_url}/v1/models/{path}:predict", json={"instances": [[1.0]]}, timeout=30
        )
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0][0]

    def wait_for_label(self, model: str, label: str, version: int) -> float:
        """Wait until the model server routes `label` to `version`; returns when it saw it."""
        return self._wait_for(model, version, f"label {label}", version_label=label)

    def wait_for_default(self, model: str, version: int) -> float:
        """Wait until a gRPC request without a version gets `version`; returns when it did."""
        return self._wait_for(model, version, "highest version served")

    def _wait_for(self, model: str, version: int, what: str, **spec) -> float:
        def routed() -> bool:
            try:
                return self.grpc_predict(model, **spec)[0] == version
            except grpc.RpcError:
                return False

        wait_until(routed, 60, f"{model}'s {what} to be version {version}", self.model_server)
        return time.monotonic()


def predict(call, model: str, **version) -> tuple[int, float]:
    request = wire.PredictRequest(model_spec=wire.ModelSpec(name=model, **_version(version)))
    x = request.inputs["x"]
    x.dtype = wire.types_pb2.DT_FLOAT
    x.tensor_shape.dim.add(size=1)
    x.tensor_shape.dim.add(size=1)
    x.float_val.append(1.0)
    response = call(request, timeout=30)
    return response.model_spec.version.value, response.outputs["y"].float_val[0]


def _version(version: dict) -> dict:
    if "version" in version:
        return {"version": {"value": version["version"]}}
    return version


def start_stack(root: Path, saved_models: dict[float, Path]) -> Stack:
    repo = root / "models"
    repo.mkdir()
    config_file = repo / "models.config"
    serving_config.update(config_file, lambda config: config)  # no model yet
    port, http_port = free_port(), free_port()
    model_server = nnserve(
        "model-server",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--model_config_file={config_file}",
        f"--model_config_file_poll_wait_seconds={CONFIG_POLL_SECONDS}",
        # As TF Serving: the flag lets a server start from a config with labels; it never lets a
        # label move to a version that is not loaded.
        "--allow_version_labels_for_unavailable_models=true",
        stderr=(root / "model-server.log").open("wb"),
    )
    gateway = nnserve(
        "gateway",
        "--port",
        str(http_port),
        env={
            "NNSERVE_TFSERVING_ADDR": f"127.0.0.1:{port}",
            "NNSERVE_MODEL_CONFIG_FILE": str(config_file),
            "NNSERVE_MODEL_REPO": str(repo),
        },
        stderr=(root / "gateway.log").open("wb"),
    )
    stack = Stack(
        repo,
        config_file,
        f"127.0.0.1:{port}",
        f"http://127.0.0.1:{http_port}",
        model_server,
        gateway,
        saved_models,
    )
    try:
        with grpc.insecure_channel(stack.grpc_address) as channel:
            grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
        wait_until(
            lambda: _answers(f"{stack.gateway_url}/healthz"), START_TIMEOUT, "the gateway", gateway
        )
    except BaseException:
        stop(gateway)
        stop(model_server)
        raise
    return stack


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# Load


@dataclass(frozen=True)
class Answer:
    client: str
    started: float  # time.monotonic()
    finished: float
    value: float | None = None
    version: int | None = None  # gRPC answers name it; the gateway's REST answers do not
    error: str | None = None


@dataclass
class Load:
    """Clients that each send x = 1.0 for `model` in a loop, with no version: `http_clients`
    through the gateway's default route, `grpc_clients` straight to the model server. Other
    models get `http_body` through the gateway, `answer_value` reading what they answer."""

    stack: Stack
    model: str
    http_clients: int = 3
    grpc_clients: int = 2
    http_body: dict = field(default_factory=lambda: {"instances": [[1.0]]})
    answer_value: Callable[[dict], float] = lambda answer: answer["predictions"][0][0]
    max_requests_per_client: int = 5000
    pause_seconds: float = 0.005  # between a client's requests, so loading a version gets CPU
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> "Load":
        clients = [(f"http-{i}", self._http) for i in range(self.http_clients)]
        clients += [(f"grpc-{i}", self._grpc) for i in range(self.grpc_clients)]
        for name, loop in clients:
            thread = threading.Thread(target=loop, args=(name,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait_for_answers_started_after(self, moment: float, count: int) -> None:
        """Until every client has `count` answers to requests it began after `moment`."""

        def enough() -> bool:
            after = [answer.client for answer in list(self.answers) if answer.started > moment]
            return all(after.count(thread.name) >= count for thread in self._threads)

        wait_until(enough, 60, f"{count} answers per client", self.stack.model_server)

    def by_client(self) -> dict[str, list[Answer]]:
        clients: dict[str, list[Answer]] = {}
        for answer in self.answers:
            clients.setdefault(answer.client, []).append(answer)
        return clients

    def _http(self, name: str) -> None:
        url = f"{self.stack.gateway_url}/v1/models/{self.model}:predict"
        with httpx.Client(timeout=30) as client:
            for _ in range(self.max_requests_per_client):
                if self._stop.is_set():
                    return
                started = time.monotonic()
                try:
                    response = client.post(url, json=self.http_body)
                except httpx.HTTPError as error:
                    self._record(Answer(name, started, time.monotonic(), error=repr(error)))
                    continue
                if response.status_code == 200:
                    value = self.answer_value(response.json())
                    self._record(Answer(name, started, time.monotonic(), value=value))
                else:
                    problem = f"{response.status_code} {response.text}"
                    self._record(Answer(name, started, time.monotonic(), error=problem))

    def _grpc(self, name: str) -> None:
        with grpc.insecure_channel(self.stack.grpc_address) as channel:
            call = methods.PREDICT.bind(channel)
            for _ in range(self.max_requests_per_client):
                if self._stop.is_set():
                    return
                started = time.monotonic()
                try:
                    version, value = predict(call, self.model)
                except grpc.RpcError as error:
                    problem = f"{error.code().name}: {error.details()}"
                    self._record(Answer(name, started, time.monotonic(), error=problem))
                    continue
                self._record(Answer(name, started, time.monotonic(), value, version))

    def _record(self, answer: Answer) -> None:
        self.answers.append(answer)  # list.append is atomic under the GIL
        time.sleep(self.pause_seconds)
