"""The model server over real gRPC on 127.0.0.1, driven with TF Serving's official client stubs."""

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from savedmodels import write_half_plus_two
from support import SHARED_TESTDATA, free_port
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from service.model_server.manager import ModelConfig, ModelManager
from service.model_server.server import build_server
from service.ports import PortInUseError, listen

needs_shared = pytest.mark.skipif(
    not SHARED_TESTDATA.exists(), reason="../shared/tfserving-testdata is not beside the repo"
)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, trained_digits) -> dict[str, Path]:
    dirs = {
        "half_plus_two": write_half_plus_two(tmp_path_factory.mktemp("half_plus_two")),
        "digits-cnn": trained_digits.version_dir.parent,
    }
    if SHARED_TESTDATA.exists():
        dirs["default"] = SHARED_TESTDATA / "saved_model_half_plus_two_cpu"
    return dirs


@pytest.fixture(scope="module")
def manager(model_dirs) -> ModelManager:
    return ModelManager([ModelConfig(name, path) for name, path in model_dirs.items()])


def available_versions(manager: ModelManager, name: str) -> list[int]:
    return [s.version for s in manager.statuses(name) if s.state.value == "AVAILABLE"]


@pytest.fixture(scope="module")
def channel(manager):
    port = free_port()
    server = build_server(manager, "127.0.0.1", port)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    server.stop(0)


@pytest.fixture
def predict(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict


def predict_request(
    model: str, inputs: dict[str, np.ndarray], **model_spec
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in model_spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    return caught.value


X = np.array([[1.0], [2.0], [5.0]], np.float32)


@pytest.mark.parametrize("model", ["half_plus_two", pytest.param("default", marks=needs_shared)])
def test_predict_answers_as_tf_serving(predict, model):
    response = predict(predict_request(model, {"x": X}))
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [[2.5], [3.0], [4.5]])
    assert response.model_spec.name == model
    assert response.model_spec.version.value == 123
    # As TF Serving answers by default: typed values, which clients read directly.
    assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    assert not response.outputs["y"].tensor_content
    assert response.model_spec.signature_name == "serving_default"


@needs_shared
def test_predict_feeds_shapes_the_graph_accepts_as_tf_serving_does(predict):
    # The signature declares x as [-1, 1]; TF Serving still computes a [3] tensor.
    response = predict(predict_request("default", {"x": np.array([2.0, 3.0, 4.0], np.float32)}))
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [3.0, 3.5, 4.0])


def test_digits_model_returns_probabilities_and_class_ids(predict, trained_digits):
    images = np.zeros((2, 8, 8, 1), np.float32)
    response = predict(predict_request("digits-cnn", {"image": images}))
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    class_ids = tf.make_ndarray(response.outputs["class_id"])
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(class_ids, probabilities.argmax(axis=1))
    assert response.model_spec.version.value == trained_digits.version


def test_output_filter_returns_only_the_named_outputs(predict):
    request = predict_request("digits-cnn", {"image": np.zeros((1, 8, 8, 1), np.float32)})
    request.output_filter.append("class_id")
    assert list(predict(request).outputs) == ["class_id"]


@pytest.mark.parametrize(
    ("request_args", "code", "message"),
    [
        (
            ("nope", {"x": X}, {}),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        (
            ("half_plus_two", {"x": X}, {"version": 7}),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(half_plus_two, 7)",
        ),
        (
            ("half_plus_two", {"x": X}, {"version_label": "stable"}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: stable",
        ),
        (
            ("half_plus_two", {"x": X}, {"signature_name": "nope"}),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            ("half_plus_two", {"x": X, "z": X}, {}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Sent extra: {z}",
        ),
        (
            ("half_plus_two", {"w": X}, {}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Missing but required: {x}",
        ),
        (
            ("half_plus_two", {"x": X.astype(np.int32)}, {}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'x' has dtype int32 but the signature expects float32",
        ),
        (
            ("digits-cnn", {"image": np.zeros((2, 8, 8), np.float32)}, {}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'image' has shape [2, 8, 8] but the signature expects [-1, 8, 8, 1]",
        ),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "unknown-label",
        "unknown-signature",
        "extra-input",
        "missing-input",
        "wrong-dtype",
        "wrong-shape",
    ],
)
def test_bad_requests_get_tf_serving_codes_and_say_what_was_expected(
    predict, request_args, code, message
):
    model, inputs, model_spec = request_args
    error = rpc_error(predict, predict_request(model, inputs, **model_spec))
    assert error.code() == code
    assert message in error.details()


def test_unknown_output_filter_alias_is_invalid_argument(predict):
    request = predict_request("half_plus_two", {"x": X})
    request.output_filter.append("z")
    error = rpc_error(predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "z" in error.details() and "{y}" in error.details()


@needs_shared
def test_metadata_is_tf_servings_signature_def_map(channel):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "default"
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_defs)
    expected = json.loads((SHARED_TESTDATA / "half_plus_two_model_metadata.json").read_text())
    assert (
        json_format.MessageToDict(
            signature_defs,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        == expected["metadata"]["signature_def"]
    )
    assert response.model_spec.version.value == 123


def test_metadata_without_fields_is_invalid_argument(channel):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    error = rpc_error(stub.GetModelMetadata, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata_field" in error.details()


def test_model_status_lists_the_served_version(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half_plus_two"
    (status,) = stub.GetModelStatus(request).model_version_status
    assert (status.version, status.state) == (
        123,
        get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    )
    assert status.HasField("status") and status.status.error_code == 0

    request.model_spec.name = "nope"
    error = rpc_error(stub.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in error.details()


def test_a_newer_version_replaces_the_old_one_when_published(tmp_path):
    base_path = write_half_plus_two(tmp_path / "model")
    manager = ModelManager([ModelConfig("m", base_path)])
    assert available_versions(manager, "m") == [123]
    shutil.copytree(base_path / "00000123", base_path / "124")
    (base_path / "125").mkdir()  # an incomplete version is never loaded
    manager.poll_once()
    assert available_versions(manager, "m") == [124]
    states = {status.version: status.state.value for status in manager.statuses("m")}
    assert states == {124: "AVAILABLE", 123: "END"}


def test_a_version_that_fails_to_load_is_reported_and_the_old_one_kept(tmp_path):
    base_path = write_half_plus_two(tmp_path / "model")
    manager = ModelManager([ModelConfig("m", base_path)])
    (base_path / "200").mkdir()
    (base_path / "200" / "saved_model.pb").write_bytes(b"not a SavedModel")
    manager.poll_once()
    assert available_versions(manager, "m") == [123]
    failed = {status.version: status for status in manager.statuses("m")}[200]
    assert failed.state.value == "END" and "200" in failed.error


def test_a_taken_port_is_a_clear_error(manager):
    port = free_port()
    holder = listen("127.0.0.1", port)
    try:
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port}"):
            build_server(manager, "127.0.0.1", port)
    finally:
        holder.close()
