"""`nnserve model-server` supervises the process that serves: a crash is logged and survived,
SIGTERM stops both, and every line either writes is one JSON object."""

import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from support import free_port, nnserve, serving_pid, stop, wait_until
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from service.processes import child_pids

START_TIMEOUT = 120


class Lines:
    """A process's stderr lines, collected as they come."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]

    def wait_closed(self, timeout: float = 30) -> None:
        self._thread.join(timeout)


@contextmanager
def model_server(base_path, *flags: str) -> Iterator[tuple[subprocess.Popen, Lines, str]]:
    port = free_port()
    process = nnserve(
        "model-server",
        "--host=127.0.0.1",
        f"--port={port}",
        "--model_name=m",
        f"--model_base_path={base_path}",
        *flags,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = Lines(process.stderr)
    try:
        yield process, lines, f"127.0.0.1:{port}"
    finally:
        stop(process)


def answers(address: str) -> bool:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
    with grpc.insecure_channel(address) as channel:
        try:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request, timeout=5
            )
        except grpc.RpcError:
            return False
    return tf.make_ndarray(response.outputs["y"]).tolist() == [[3.0]]


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="finds the child through /proc")
def test_a_crash_of_the_serving_process_is_logged_and_survived(half_plus_two):
    with model_server(half_plus_two) as (process, lines, address):
        wait_until(lambda: answers(address), START_TIMEOUT, "the first answer", process)
        crashed = serving_pid(process)

        os.kill(crashed, signal.SIGABRT)  # what a TensorFlow CHECK failure does

        wait_until(
            lambda: child_pids(process.pid) not in ([], [crashed]),
            START_TIMEOUT,
            "a new serving process",
            process,
        )
        wait_until(lambda: answers(address), START_TIMEOUT, "an answer after the crash", process)
        assert process.poll() is None
        (death,) = [r for r in lines.records() if "died by" in r["message"]]
        assert death["level"] == "ERROR" and death["signal"] == "SIGABRT"
        assert death["pid"] == crashed and death["restart_in_seconds"] == 1
        serving = serving_pid(process)
    assert process.returncode == 0
    wait_until(lambda: not os.path.exists(f"/proc/{serving}"), 30, "the serving process to end")


def test_every_line_is_json_and_sigterm_stops_both_processes(half_plus_two):
    with model_server(half_plus_two) as (process, lines, address):
        wait_until(lambda: answers(address), START_TIMEOUT, "the first answer", process)
        serving = serving_pid(process)
        # A model name is the client's to choose: a newline in it must not start a log line.
        forged = 'x\n{"level": "ERROR", "message": "forged"}\n\x1b[31m'
        reload = model_management_pb2.ReloadConfigRequest()
        for name in ("m", forged):
            entry = reload.config.model_config_list.config.add()
            entry.name, entry.base_path, entry.model_platform = (
                name,
                str(half_plus_two),
                "tensorflow",
            )
        with grpc.insecure_channel(address) as channel:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(reload)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    lines.wait_closed()
    records = lines.records()  # fails on any line that is not JSON
    assert all(isinstance(record, dict) and record["message"] for record in records)
    assert not any(record["message"] == "forged" for record in records)
    assert any(forged in record["message"] for record in records)
    assert any(record["logger"] == "native" for record in records)  # TensorFlow's own lines
    assert _ended(serving)


def _ended(pid: int) -> bool:
    """Whether a process has exited (a zombie has: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_a_start_up_error_is_one_json_line_and_exit_code_2(half_plus_two):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with model_server(half_plus_two, f"--port={port}") as (process, lines, _):
            assert process.wait(START_TIMEOUT) == 2
    lines.wait_closed()
    (error,) = [r for r in lines.records() if r["logger"] == "nnserve.model_server"]
    assert error["message"].startswith(
        f"nnserve model-server: error: cannot listen on 127.0.0.1:{port}"
    )


def test_the_serving_process_dies_when_its_supervisor_is_killed(half_plus_two):
    supervisor = nnserve(
        "model-server",
        "--host=127.0.0.1",
        f"--port={free_port()}",
        "--model_name=m",
        f"--model_base_path={half_plus_two}",
        stderr=subprocess.DEVNULL,
    )
    try:
        serving = serving_pid(supervisor)
        os.kill(supervisor.pid, signal.SIGKILL)
        wait_until(lambda: _ended(serving), 60, "the serving process to end with its supervisor")
    finally:
        stop(supervisor)


@pytest.mark.parametrize(("given", "served_with"), [(None, "0"), ("1", "1"), ("0", "0")])
def test_the_serving_process_uses_tensorflows_default_kernels_unless_told(
    half_plus_two, monkeypatch, given, served_with
):
    if given is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", given)
    with model_server(half_plus_two) as (process, _, _):
        serving = serving_pid(process)
        environment = Path(f"/proc/{serving}/environ").read_bytes().split(b"\0")
    assert f"TF_ENABLE_ONEDNN_OPTS={served_with}".encode() in environment


@pytest.mark.parametrize("level", ["WARNING", "INFO"])
def test_the_settings_log_level_holds_and_neither_process_loads_pydantic(
    half_plus_two, monkeypatch, level
):
    monkeypatch.setenv("NNSERVE_LOG_LEVEL", level)
    with model_server(half_plus_two) as (process, lines, address):
        wait_until(lambda: answers(address), START_TIMEOUT, "the first answer", process)
        libraries = {
            "supervisor": Path(f"/proc/{process.pid}/maps").read_text(),
            "serving process": Path(f"/proc/{serving_pid(process)}/maps").read_text(),
        }
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    lines.wait_closed()
    # Both processes run as long as the server: what read the settings stays out of them.
    assert {name for name, maps in libraries.items() if "pydantic_core" in maps} == set()
    listening = [r for r in lines.records() if r["message"].startswith("model server listening")]
    assert len(listening) == (level == "INFO")
