"""service.wire.methods: real gRPC paths, exercised against TF Serving's official servicers."""

from collections.abc import Iterator
from concurrent import futures

import grpc
import numpy as np
import pytest

import service.wire as wire
from service.wire import methods


@pytest.fixture(scope="module")
def official_services():
    from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

    return [
        *prediction_service_pb2.DESCRIPTOR.services_by_name.values(),
        *model_service_pb2.DESCRIPTOR.services_by_name.values(),
    ]


def test_every_official_method_has_a_constant(official_services):
    by_path = {m.path: m for m in methods.ALL_METHODS}
    official_paths = set()
    for service in official_services:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            official_paths.add(path)
            ours = by_path[path]
            assert ours.name == method.name and ours.service == service.full_name
            assert wire.upstream_name(ours.request_type) == method.input_type.full_name
            assert wire.upstream_name(ours.response_type) == method.output_type.full_name
            assert not method.client_streaming and not method.server_streaming
    assert official_paths == set(by_path)


def test_constants_spell_the_paths_out():
    assert methods.PREDICT.path == "/tensorflow.serving.PredictionService/Predict"
    assert methods.GET_MODEL_STATUS.path == "/tensorflow.serving.ModelService/GetModelStatus"
    assert methods.HANDLE_RELOAD_CONFIG_REQUEST.path == (
        "/tensorflow.serving.ModelService/HandleReloadConfigRequest"
    )
    assert methods.PREDICT.request_type is wire.PredictRequest
    assert methods.PREDICT.response_type is wire.PredictResponse


def _half_plus_two(example) -> float:
    return 0.5 * example.features.feature["x"].float_list.value[0] + 2.0


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    """An in-process gRPC server running TF Serving's own generated servicers."""
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        inference_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
        regression_pb2,
    )

    class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            assert isinstance(request, predict_pb2.PredictRequest)
            x = tf.make_ndarray(request.inputs["x"])
            response = predict_pb2.PredictResponse(model_spec=request.model_spec)
            response.outputs["y"].CopyFrom(tf.make_tensor_proto(x * 0.5 + 2.0))
            return response

        def Classify(self, request, context):
            response = classification_pb2.ClassificationResponse()
            for example in request.input.example_list.examples:
                classes = response.result.classifications.add()
                classes.classes.add(label="", score=_half_plus_two(example))
            response.model_spec.CopyFrom(request.model_spec)
            return response

        def Regress(self, request, context):
            response = regression_pb2.RegressionResponse()
            examples = request.input.example_list_with_context.examples
            for example in examples:
                response.result.regressions.add(value=_half_plus_two(example))
            return response

        def MultiInference(self, request, context):
            response = inference_pb2.MultiInferenceResponse()
            for task in request.tasks:
                result = response.results.add(model_spec=task.model_spec)
                for example in request.input.example_list.examples:
                    result.regression_result.regressions.add(value=_half_plus_two(example))
            return response

        def GetModelMetadata(self, request, context):
            signatures = get_model_metadata_pb2.SignatureDefMap()
            signatures.signature_def["serving_default"].method_name = "tensorflow/serving/predict"
            response = get_model_metadata_pb2.GetModelMetadataResponse(
                model_spec=request.model_spec
            )
            response.metadata[request.metadata_field[0]].Pack(signatures)
            return response

    class Models(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):
            response = get_model_status_pb2.GetModelStatusResponse()
            response.model_version_status.add(
                version=request.model_spec.version.value,
                state=get_model_status_pb2.ModelVersionStatus.AVAILABLE,
            )
            return response

        def HandleReloadConfigRequest(self, request, context):
            response = model_management_pb2.ReloadConfigResponse()
            names = [c.name for c in request.config.model_config_list.config]
            response.status.error_message = ",".join(names)
            response.metric.add(name=request.metric_names[0], int64_value_increase=len(names))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(Models(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    server.stop(grace=None)


def _examples(*xs: float) -> list:
    return [wire.Example(features={"feature": {"x": {"float_list": {"value": [x]}}}}) for x in xs]


def test_predict(channel):
    request = wire.PredictRequest(model_spec=wire.ModelSpec(name="default"))
    x = request.inputs["x"]
    x.dtype = wire.DataType.Value("DT_FLOAT")
    x.tensor_shape.dim.add(size=3)
    x.tensor_content = np.array([2.0, 3.0, 4.0], dtype="<f4").tobytes()
    response = methods.PREDICT.bind(channel)(request, timeout=10)
    assert isinstance(response, wire.PredictResponse)
    assert response.model_spec.name == "default"
    y = response.outputs["y"]
    assert y.dtype == wire.DataType.Value("DT_FLOAT")
    values = np.frombuffer(y.tensor_content, "<f4") if y.tensor_content else list(y.float_val)
    np.testing.assert_array_equal(values, [3.0, 3.5, 4.0])


def test_classify(channel):
    request = wire.ClassificationRequest(model_spec=wire.ModelSpec(name="m", signature_name="c"))
    request.input.example_list.examples.extend(_examples(2.0))
    response = methods.CLASSIFY.bind(channel)(request, timeout=10)
    assert isinstance(response, wire.ClassificationResponse)
    assert response.model_spec.signature_name == "c"
    [classes] = response.result.classifications
    assert [(c.label, c.score) for c in classes.classes] == [("", 3.0)]


def test_regress(channel):
    request = wire.RegressionRequest()
    request.input.example_list_with_context.examples.extend(_examples(2.0, 4.0))
    response = methods.REGRESS.bind(channel)(request, timeout=10)
    assert [r.value for r in response.result.regressions] == [3.0, 4.0]


def test_multi_inference(channel):
    request = wire.MultiInferenceRequest()
    request.tasks.add(model_spec=wire.ModelSpec(name="m"), method_name="tensorflow/serving/regress")
    request.input.example_list.examples.extend(_examples(6.0))
    response = methods.MULTI_INFERENCE.bind(channel)(request, timeout=10)
    [result] = response.results
    assert result.model_spec.name == "m"
    assert result.WhichOneof("result") == "regression_result"
    assert [r.value for r in result.regression_result.regressions] == [5.0]


def test_get_model_metadata(channel):
    request = wire.GetModelMetadataRequest(model_spec=wire.ModelSpec(name="default"))
    request.metadata_field.append("signature_def")
    response = methods.GET_MODEL_METADATA.bind(channel)(request, timeout=10)
    signatures = wire.unpack_any(response.metadata["signature_def"], wire.SignatureDefMap)
    assert signatures.signature_def["serving_default"].method_name == "tensorflow/serving/predict"


def test_get_model_status(channel):
    request = wire.GetModelStatusRequest(model_spec=wire.ModelSpec(name="default"))
    request.model_spec.version.value = 123
    response = methods.GET_MODEL_STATUS.bind(channel)(request, timeout=10)
    [status] = response.model_version_status
    assert status.version == 123
    assert status.state == wire.ModelVersionStatus.AVAILABLE


def test_handle_reload_config_request(channel):
    request = wire.ReloadConfigRequest(metric_names=["reloads"])
    for name in ("a", "b"):
        request.config.model_config_list.config.add(name=name, base_path=f"/models/{name}")
    response = methods.HANDLE_RELOAD_CONFIG_REQUEST.bind(channel)(request, timeout=10)
    assert response.status.error_message == "a,b"
    assert [(m.name, m.int64_value_increase) for m in response.metric] == [("reloads", 2)]


def test_a_wrong_path_is_unimplemented(channel):
    # Control: the server really dispatches on the path, so the paths above are doing the work.
    wrong = methods.Method(
        "/nnserve.wire.tensorflow.serving.PredictionService/Predict",
        wire.PredictRequest,
        wire.PredictResponse,
    )
    with pytest.raises(grpc.RpcError) as caught:
        wrong.bind(channel)(wire.PredictRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
