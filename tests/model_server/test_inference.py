"""Classify, Regress and MultiInference with tf.Example inputs, as TF Serving answers them."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
MODELS = ["ours", "tf1", "tf2"]


@pytest.fixture
def stub(half_plus_two_channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(half_plus_two_channel)


@pytest.fixture(params=MODELS)
def model(request, half_plus_two_models):
    if request.param not in dict(half_plus_two_models):
        pytest.skip("../shared/tfserving-testdata is not beside the repo")
    return request.param


def examples(*values: float) -> input_pb2.Input:
    request_input = input_pb2.Input()
    for value in values:
        example = example_pb2.Example()
        example.features.feature["x"].float_list.value.append(value)
        request_input.example_list.examples.append(example)
    return request_input


def classification_request(model, signature, request_input):
    request = classification_pb2.ClassificationRequest(input=request_input)
    request.model_spec.name, request.model_spec.signature_name = model, signature
    return request


def regression_request(model, signature, request_input):
    request = regression_pb2.RegressionRequest(input=request_input)
    request.model_spec.name, request.model_spec.signature_name = model, signature
    return request


def test_classify_gives_one_unlabelled_class_per_example(stub, model):
    response = stub.Classify(classification_request(model, "classify_x_to_y", examples(2.0)))
    ((only_class,),) = [c.classes for c in response.result.classifications]
    assert (only_class.label, only_class.score) == ("", 3.0)
    assert response.model_spec.signature_name == "classify_x_to_y"
    assert response.model_spec.version.value == 123


@pytest.mark.parametrize(
    ("signature", "expected"), [("regress_x_to_y", 3.0), ("regress_x_to_y2", 4.0)]
)
def test_regress(stub, model, signature, expected):
    response = stub.Regress(regression_request(model, signature, examples(2.0)))
    assert [r.value for r in response.result.regressions] == [expected]


def test_a_regress_signature_on_tensors_answers_predict(stub, model):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, "regress_x2_to_y3"
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
    response = stub.Predict(request)
    assert tf.make_ndarray(response.outputs["outputs"]).tolist() == [[4.0]]


def test_examples_with_context_are_merged_into_each_example(stub, model):
    request_input = input_pb2.Input()
    with_context = request_input.example_list_with_context
    with_context.context.features.feature["x"].float_list.value.append(4.0)
    with_context.examples.add()  # takes x from the context
    response = stub.Regress(regression_request(model, "regress_x_to_y", request_input))
    assert [r.value for r in response.result.regressions] == [4.0]


def test_multi_inference_runs_every_task_in_order(stub, model):
    request = inference_pb2.MultiInferenceRequest(input=examples(2.0, 4.0))
    for signature, method in [("regress_x_to_y2", REGRESS), ("classify_x_to_y", CLASSIFY)]:
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = model, signature
    regression, classification = stub.MultiInference(request).results
    assert [r.value for r in regression.regression_result.regressions] == [4.0, 5.0]
    scores = [c.classes[0].score for c in classification.classification_result.classifications]
    assert scores == [3.0, 4.0]
    assert classification.model_spec.signature_name == "classify_x_to_y"
    assert classification.model_spec.version.value == 123


def multi(model, *tasks):
    request = inference_pb2.MultiInferenceRequest(input=examples(2.0))
    for name, signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = name, signature
    return request


@pytest.mark.parametrize(
    ("call", "build", "code", "message"),
    [
        (
            "Classify",
            lambda: classification_request("ours", "nope", examples(2.0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "No signature was found with the name: nope",
        ),
        (
            "Regress",
            lambda: regression_request("ours", "regress_x_to_y", input_pb2.Input()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Input is empty.",
        ),
        (
            "Regress",
            lambda: regression_request("ours", "serving_default", examples(2.0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "No regression inputs found in SignatureDef",
        ),
        (
            "Classify",
            lambda: classification_request("ours", "regress_x_to_y", examples(2.0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            'contain at least one of "classes" or "scores"',
        ),
        (
            "Classify",
            lambda: classification_request("nope", "classify_x_to_y", examples(2.0)),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "MultiInference",
            lambda: multi("ours", ("ours", "regress_x_to_y", "tensorflow/serving/predict")),
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        (
            "MultiInference",
            lambda: multi(
                "ours", ("ours", "regress_x_to_y", REGRESS), ("ours", "regress_x_to_y", REGRESS)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            "MultiInference",
            lambda: multi(
                "ours", ("ours", "regress_x_to_y", REGRESS), ("tf1", "regress_x_to_y2", REGRESS)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "must access the same model name",
        ),
        (
            "MultiInference",
            lambda: multi("ours"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ModelSpec has no name specified.",
        ),
    ],
    ids=[
        "unknown-signature",
        "no-examples",
        "not-a-regression-signature",
        "not-a-classification-signature",
        "unknown-model",
        "unsupported-method",
        "duplicate-signature",
        "two-models",
        "no-tasks",
    ],
)
def test_errors_are_tf_servings(stub, call, build, code, message):
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, call)(build())
    assert caught.value.code() == code
    assert message in caught.value.details()
