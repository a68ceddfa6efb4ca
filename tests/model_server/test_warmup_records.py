"""A real `nnserve model-server` replays an export's warm-up records when it loads the version,
before the version takes traffic, and a version whose records fail is not loaded (TF Serving's
rule): the version already served goes on answering."""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from support import free_port, nnserve, stop, wait_until
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc

from service import model_repository
from service.model_status import AVAILABLE, END, ModelStatusClient

MODEL = "digits-cnn"
START_TIMEOUT = 120


@dataclass(frozen=True)
class Served:
    base_path: Path
    address: str
    log: Path
    process: subprocess.Popen

    def warmed_up(self) -> dict[str, int]:
        """Calls made at warm-up, by version folder, from the server's JSON log lines."""
        found = {}
        for line in self.log.read_text().splitlines():
            message = json.loads(line)["message"]
            if match := re.fullmatch(r"warmed up (\S+) with (\d+) call\(s\)", message):
                found[match[1]] = int(match[2])
        return found

    def statuses(self) -> dict[int, tuple[str, str]]:
        with ModelStatusClient(self.address) as client:
            return {s.version: (s.state, s.error) for s in client.statuses(MODEL)}


def records_of(version_dir: Path) -> list[prediction_log_pb2.PredictionLog]:
    path = str(version_dir / model_repository.WARMUP_REQUESTS_PATH)
    return [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(path)
    ]


@pytest.fixture(scope="module")
def served(trained_digits, tmp_path_factory) -> Iterator[Served]:
    """The digits export as version 1 of a repository that a model server polls."""
    root = tmp_path_factory.mktemp("warmup")
    base_path = root / MODEL
    shutil.copytree(trained_digits.version_dir, base_path / "1")
    port = free_port()
    log = root / "model-server.log"
    with log.open("w") as stderr:
        process = nnserve(
            "model-server",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--model_name={MODEL}",
            f"--model_base_path={base_path}",
            "--file_system_poll_wait_seconds=0.2",
            stderr=stderr,
        )
    server = Served(base_path, f"127.0.0.1:{port}", log, process)
    try:
        # The server listens once its models are loaded and warmed up.
        with grpc.insecure_channel(server.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
        yield server
    finally:
        assert stop(process) == 0


def predict(address: str, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(request, timeout=30)


def test_every_record_of_an_export_is_replayed_before_the_version_serves(served):
    records = records_of(served.base_path / "1")
    assert served.warmed_up() == {str(served.base_path / "1"): len(records)}
    # What was replayed is what a client sends: the first record, sent again, is answered.
    request = records[0].predict_log.request
    response = predict(served.address, request)
    assert response.model_spec.version.value == 1
    assert tf.make_ndarray(response.outputs["probabilities"]).shape == (1, 10)


def test_a_version_whose_records_fail_is_not_loaded_and_the_served_one_stays(served, tmp_path):
    # The records of a model whose input is named otherwise: TF Serving fails such a load.
    export = tmp_path / "export"
    shutil.copytree(served.base_path / "1", export)
    records = records_of(export)
    for record in records:
        inputs = record.predict_log.request.inputs
        inputs["pixels"].CopyFrom(inputs.pop("image"))
    with tf.io.TFRecordWriter(str(export / model_repository.WARMUP_REQUESTS_PATH)) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    assert model_repository.publish(export, served.base_path) == 2

    wait_until(
        lambda: served.statuses().get(2, ("",))[0] in (AVAILABLE, END),
        60,
        "version 2 to be tried",
        served.process,
    )
    state, error = served.statuses()[2]
    assert state == END
    assert "Sent extra: {pixels}. Missing but required: {image}." in error
    assert served.statuses()[1] == (AVAILABLE, "")
    assert str(served.base_path / "2") not in served.warmed_up()
    request = records_of(served.base_path / "1")[0].predict_log.request
    assert predict(served.address, request).model_spec.version.value == 1
