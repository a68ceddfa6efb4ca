"""Versions come and go under load without a failed request; warm-up; start-up and shutdown."""

import shutil
import signal
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from support import refused_start, wait_until
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc

from service import model_repository
from service.model_server.manager import ModelConfig, ModelManager
from service.model_server.warmup import load_and_warm_up

CLIENTS = 8
MAX_REQUESTS_PER_CLIENT = 5000


def predict_request(model: str = "m") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [2.0]], np.float32)))
    return request


def test_publishing_and_removing_versions_under_load_fails_no_request(
    tmp_path, half_plus_two, serve
):
    base = tmp_path / "m"
    shutil.copytree(half_plus_two / "00000123", base / "1")
    manager = ModelManager([ModelConfig("m", base)])
    manager.start_polling(0.05)
    failures: list[str] = []
    versions_seen: list[int] = []
    stop = threading.Event()

    def client(channel) -> None:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set():
                return
            try:
                versions_seen.append(
                    stub.Predict(predict_request(), timeout=30).model_spec.version.value
                )
            except grpc.RpcError as error:
                failures.append(f"{error.code()}: {error.details()}")

    try:
        with serve(manager) as channel:
            clients = [threading.Thread(target=client, args=(channel,)) for _ in range(CLIENTS)]
            for thread in clients:
                thread.start()
            wait_until(lambda: len(versions_seen) > 50, 60, "load on version 1")
            assert model_repository.publish(half_plus_two / "00000123", base) == 2
            wait_until(lambda: versions_seen[-1] == 2, 60, "traffic on version 2")
            shutil.rmtree(base / "1")
            served_before = len(versions_seen)
            wait_until(lambda: len(versions_seen) > served_before + 50, 60, "more load on v2")
            stop.set()
            for thread in clients:
                thread.join(timeout=60)
    finally:
        stop.set()
        manager.stop()
    assert failures == []
    assert set(versions_seen) == {1, 2}
    first_on_2 = versions_seen.index(2)
    assert versions_seen[first_on_2 + CLIENTS :].count(1) == 0  # no way back once switched


def write_warmup_records(version_dir, requests) -> None:
    path = version_dir / model_repository.WARMUP_REQUESTS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            record = prediction_log_pb2.PredictionLog()
            record.predict_log.request.CopyFrom(request)
            writer.write(record.SerializeToString())


def test_a_version_replays_its_warmup_records_before_serving(tmp_path, half_plus_two, serve):
    version_dir = tmp_path / "m" / "1"
    shutil.copytree(half_plus_two / "00000123", version_dir)
    write_warmup_records(version_dir, [predict_request()] * 3)
    servable = load_and_warm_up(version_dir)
    assert servable.warmup_calls == 3


def test_a_version_whose_warmup_fails_is_not_served(tmp_path, half_plus_two):
    base = tmp_path / "m"
    shutil.copytree(half_plus_two / "00000123", base / "1")
    manager = ModelManager([ModelConfig("m", base)], load=load_and_warm_up)
    shutil.copytree(half_plus_two / "00000123", base / "2")
    bad = predict_request()
    bad.inputs["nope"].CopyFrom(bad.inputs["x"])
    write_warmup_records(base / "2", [bad])
    manager.poll_once()
    statuses = {s.version: s for s in manager.statuses("m")}
    assert statuses[1].state.value == "AVAILABLE"
    assert statuses[2].state.value == "END" and "Sent extra: {nope}" in statuses[2].error


def test_start_up_is_refused_when_a_configured_model_fails_to_load(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"garbage")
    stderr = refused_start(
        "model-server", "--port=0", "--model_name=m", f"--model_base_path={tmp_path / 'm'}"
    )
    assert "1 servable(s) did not become available: {name: m version: 1 due to error:" in stderr


def test_sigterm_finishes_calls_in_flight_and_exits_0(
    tmp_path, half_plus_two, model_server_process
):
    # A batch that waits 5 s for company keeps a call in flight while SIGTERM arrives. The call
    # reaches the server within milliseconds; SIGTERM follows 1.5 s later, well inside the 5 s.
    parameters = tmp_path / "batching.config"
    parameters.write_text("max_batch_size { value: 64 } batch_timeout_micros { value: 5000000 }")
    with model_server_process(
        "--model_name=m",
        f"--model_base_path={half_plus_two}",
        "--enable_batching",
        f"--batching_parameters_file={parameters}",
    ) as (server, channel):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        in_flight = stub.Predict.future(predict_request(), timeout=60)
        time.sleep(1.5)
        assert not in_flight.done()
        server.send_signal(signal.SIGTERM)
        response = in_flight.result(timeout=60)
        assert tf.make_ndarray(response.outputs["y"]).tolist() == [[2.5], [3.0]]
        assert server.wait(60) == 0


@pytest.mark.parametrize("flag", ["--enable_batching=maybe"])
def test_bad_flag_values_are_usage_errors(flag, half_plus_two):
    stderr = refused_start("model-server", f"--model_base_path={half_plus_two}", flag, timeout=60)
    assert "expected true or false, got 'maybe'" in stderr
