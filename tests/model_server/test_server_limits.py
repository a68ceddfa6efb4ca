"""The gRPC server's own limits and settings: message size, TF Serving's --grpc_channel_arguments
and --grpc_max_threads, and nnserve's element limits as flags."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from support import free_port, refused_start
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from service.model_server.channel_arguments import (
    DEFAULT_CHANNEL_ARGUMENTS,
    parse_channel_arguments,
)
from service.model_server.manager import ModelConfig, ModelManager
from service.model_server.server import build_server


def predict(channel: grpc.Channel, x: np.ndarray) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)


@pytest.fixture(scope="module")
def manager(half_plus_two) -> ModelManager:
    return ModelManager([ModelConfig("m", half_plus_two)])


def test_a_message_over_64_mib_is_refused_by_grpc_before_it_is_read(manager, serve):
    assert dict(DEFAULT_CHANNEL_ARGUMENTS)["grpc.max_receive_message_length"] == 64 * 1024 * 1024
    with serve(manager) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            predict(channel, np.zeros((17 * 1024 * 1024, 1), np.float32))  # 68 MB
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in caught.value.details()
        assert predict(channel, np.zeros((1, 1), np.float32)).outputs["y"].float_val == [2.0]


def test_channel_arguments_override_the_defaults(manager):
    port = free_port()
    server = build_server(
        manager, "127.0.0.1", port, 2, (("grpc.max_receive_message_length", 4096),)
    )
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as caught:
                predict(channel, np.zeros((2048, 1), np.float32))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert predict(channel, np.zeros((4, 1), np.float32)).outputs["y"].float_val
    finally:
        server.stop(0)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", ()),
        ("grpc.max_connection_age_ms=2000", (("grpc.max_connection_age_ms", 2000),)),
        (
            " a=1 , b=text,c=2147483648",  # beyond int32: a string, as TF Serving passes it
            (("a", 1), ("b", "text"), ("c", "2147483648")),
        ),
    ],
)
def test_channel_arguments_are_read_as_tf_serving_reads_them(text, parsed):
    assert parse_channel_arguments(text) == parsed


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--grpc_channel_arguments=grpc.max_connection_age_ms", "expected key=value items"),
        ("--grpc_max_threads=0", "expected a positive whole number"),
        ("--max_tensor_elements=-5", "expected a positive whole number"),
    ],
)
def test_bad_server_settings_are_refused_at_once(half_plus_two, flag, message):
    stderr = refused_start("model-server", f"--model_base_path={half_plus_two}", flag, timeout=30)
    assert message in stderr


def test_the_element_limits_are_flags(half_plus_two, model_server_process):
    with model_server_process(
        "--model_name=m", f"--model_base_path={half_plus_two}", "--max_tensor_elements=10"
    ) as (_, channel):
        assert predict(channel, np.zeros((10, 1), np.float32)).outputs["y"].float_val
        with pytest.raises(grpc.RpcError) as caught:
            predict(channel, np.zeros((11, 1), np.float32))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than the limit of 10 (--max_tensor_elements)" in caught.value.details()
