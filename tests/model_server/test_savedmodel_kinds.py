"""Every kind of SavedModel a user may hand to TF Serving, served by one `nnserve model-server`
(one --model_config_file lists them all) with one gateway in front, and called over gRPC and
HTTP on each of its signatures. The answers are worked out here, by hand or with the Keras model
in this process, not by the server's code."""

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from savedmodels import (
    TF1_BIAS,
    TF1_CLASSES,
    TF1_WEIGHTS,
    TF2_BIAS,
    TF2_WEIGHTS,
    VOCABULARY,
    small_keras_model,
    write_asset_lookup,
    write_keras_export,
    write_keras_export_archive,
    write_keras_in_module,
    write_several_signatures,
    write_text_stats,
    write_tf1_builder,
    write_tf2_module,
)
from support import free_port, is_available, model_server_and_gateway, wait_until
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc

FEATURES = np.array([[0.5, -1.0, 2.0, 0.25], [-3.0, 1.5, 0.0, 4.0], [1.0, 1.0, 1.0, 1.0]], "f4")
TEXTS = ["the cat sat", "  héllo   wörld  ", "", "one"]
WORDS = ["cat", "mat", "dog", "the", ""]

KERAS_IN_MODULE = "keras_in_module"  # the Keras-in-a-tf.Module layout no TF1-style loader can run


def _writers(keras_model) -> dict[str, Callable[[Path], Path]]:
    """The builder of each model, by model name."""
    return {
        "tf1_builder": write_tf1_builder,
        "tf2_module": write_tf2_module,
        KERAS_IN_MODULE: functools.partial(write_keras_in_module, keras_model),
        "keras_in_module_tracked": functools.partial(
            write_keras_in_module, keras_model, track_tf_variables=True
        ),
        "keras_export": functools.partial(write_keras_export, keras_model),
        "keras_export_archive": functools.partial(write_keras_export_archive, keras_model),
        "several_signatures": write_several_signatures,
        "text_stats": write_text_stats,
        "asset_lookup": write_asset_lookup,
    }


@dataclass(frozen=True)
class Call:
    """One Predict on one signature, and the outputs it must answer."""

    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    exact: bool = True  # False: float outputs of a Keras model, equal to float rounding


# (model, signature) of every Predict the tests make; the Call itself is built with the model.
PREDICTS = [
    ("tf1_builder", "serving_default"),
    ("tf2_module", "serving_default"),
    ("keras_in_module_tracked", "serving_default"),
    ("keras_export", "serving_default"),
    ("keras_export", "serve"),
    ("keras_export_archive", "serving_default"),
    ("keras_export_archive", "top_class"),
    ("keras_export_archive", "scaled"),
    ("several_signatures", "serving_default"),
    ("several_signatures", "sum_and_product"),
    ("several_signatures", "count_positive"),
    ("text_stats", "serving_default"),
    ("asset_lookup", "serving_default"),
]


def _calls(keras_model) -> dict[tuple[str, str], Call]:
    scores = keras_model(FEATURES, training=False).numpy()
    scale = np.array([[2.0], [0.5], [-1.0]], "f4")
    x_tf1 = np.array([[1.0, 2.0], [3.0, 4.0]], "f4")
    x_tf2 = np.array([[1.0, 2.0, 4.0], [0.0, 0.0, 0.0]], "f4")
    values = np.array([[1.0, -1.0, 2.0], [0.0, 0.0, 0.0], [-5.0, 3.0, 0.5]], "f4")
    a, b = np.array([2, 3, -4], "i8"), np.array([5, -1, 2**40], "i8")
    keras_scores = Call({"features": FEATURES}, {"scores": scores}, exact=False)
    keras_export = Call({"features": FEATURES}, {"output_0": scores}, exact=False)
    return {
        ("tf1_builder", "serving_default"): Call(
            {"x": x_tf1}, {"y": x_tf1 @ np.array(TF1_WEIGHTS, "f4") + np.array(TF1_BIAS, "f4")}
        ),
        ("tf2_module", "serving_default"): Call(
            {"x": x_tf2}, {"y": (x_tf2 * np.array(TF2_WEIGHTS, "f4")).sum(axis=1) + TF2_BIAS}
        ),
        ("keras_in_module_tracked", "serving_default"): keras_scores,
        ("keras_export", "serving_default"): keras_export,
        ("keras_export", "serve"): keras_export,
        ("keras_export_archive", "serving_default"): keras_scores,
        ("keras_export_archive", "top_class"): Call(
            {"features": FEATURES},
            {"class_id": scores.argmax(axis=1).astype("i8"), "score": scores.max(axis=1)},
            exact=False,
        ),
        ("keras_export_archive", "scaled"): Call(
            {"features": FEATURES, "scale": scale}, {"scores": scores * scale}, exact=False
        ),
        ("several_signatures", "serving_default"): Call(
            {"x": np.array([1.0, -2.5, 0.0], "f4")}, {"doubled": np.array([2.5, -4.5, 0.5], "f4")}
        ),
        ("several_signatures", "sum_and_product"): Call(
            {"a": a, "b": b}, {"sum": a + b, "product": a * b}
        ),
        ("several_signatures", "count_positive"): Call(
            {"values": values}, {"count": np.array([2, 0, 2], "i4")}
        ),
        ("text_stats", "serving_default"): Call(
            {"text": np.array(TEXTS, object)},
            {
                "words": np.array([len(text.split()) for text in TEXTS], "i8"),
                "utf8_bytes": np.array([len(text.encode()) for text in TEXTS], "i4"),
            },
        ),
        ("asset_lookup", "serving_default"): Call(
            {"words": np.array(WORDS, object)},
            {"ids": np.array([VOCABULARY.index(w) if w in VOCABULARY else -1 for w in WORDS])},
        ),
    }


@dataclass(frozen=True)
class Served:
    url: str  # the gateway's
    channel: grpc.Channel  # to the model server
    calls: dict[tuple[str, str], Call]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    repository = tmp_path_factory.mktemp("kinds")
    keras_model = small_keras_model()
    models = _writers(keras_model)
    for name, write in models.items():
        write(repository / name)
    config = repository / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{name}" base_path: "{repository / name}" '
            'model_platform: "tensorflow" }\n'
            for name in models
        )
        + "}\n"
    )
    grpc_port = free_port()
    with model_server_and_gateway(
        f"--model_config_file={config}",
        gateway_env={"NNSERVE_MODEL_CONFIG_FILE": str(config)},
        grpc_port=grpc_port,
    ) as (url, server, _):
        for name in models:
            wait_until(
                lambda name=name: is_available(f"{url}/v1/models/{name}"),
                300,
                f"{name} AVAILABLE through the gateway",
                server,
            )
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            yield Served(url, channel, _calls(keras_model))


def _assert_outputs(actual: dict[str, np.ndarray], call: Call) -> None:
    assert sorted(actual) == sorted(call.expected)
    for name, expected in call.expected.items():
        value = np.asarray(actual[name])
        assert value.shape == expected.shape, name
        if call.exact or expected.dtype.kind != "f":
            assert value.tolist() == expected.tolist(), name
        else:
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5, err_msg=name)


def _predict_request(model: str, signature: str, inputs: dict[str, np.ndarray]):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


@pytest.mark.parametrize(("model", "signature"), PREDICTS, ids=[f"{m}-{s}" for m, s in PREDICTS])
def test_grpc_predict_answers_each_signature(served, model, signature):
    call = served.calls[(model, signature)]
    stub = prediction_service_pb2_grpc.PredictionServiceStub(served.channel)
    response = stub.Predict(_predict_request(model, signature, call.inputs), timeout=60)
    assert response.model_spec.signature_name == signature
    outputs = {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}
    _assert_outputs(outputs, call)
    # gRPC keeps what JSON loses: each output's dtype.
    assert {k: v.dtype for k, v in outputs.items()} == {
        k: v.dtype for k, v in call.expected.items()
    }


@pytest.mark.parametrize(("model", "signature"), PREDICTS, ids=[f"{m}-{s}" for m, s in PREDICTS])
def test_http_predict_through_the_gateway_answers_each_signature(served, model, signature):
    call = served.calls[(model, signature)]
    body = {
        "signature_name": signature,
        "inputs": {name: value.tolist() for name, value in call.inputs.items()},
    }
    response = httpx.post(f"{served.url}/v1/models/{model}:predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    if len(call.expected) == 1:  # TF Serving's columnar answer: a lone output is not named
        outputs = {next(iter(call.expected)): outputs}
    _assert_outputs(outputs, call)


CLASSIFY_X = [[1.0, 2.0], [-2.0, 0.5]]


def _tf1_scores() -> np.ndarray:
    return np.array(CLASSIFY_X, "f4") @ np.array(TF1_WEIGHTS, "f4") + np.array(TF1_BIAS, "f4")


def test_grpc_classify_answers_the_tf1_classify_signature(served):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "tf1_builder"
    request.model_spec.signature_name = "classify"
    for x in CLASSIFY_X:
        request.input.example_list.examples.add().features.feature["x"].float_list.value[:] = x
    stub = prediction_service_pb2_grpc.PredictionServiceStub(served.channel)
    result = stub.Classify(request, timeout=60).result
    answered = [[(c.label, c.score) for c in row.classes] for row in result.classifications]
    labels = [label.decode() for label in TF1_CLASSES]
    assert answered == [list(zip(labels, row.tolist(), strict=True)) for row in _tf1_scores()]


def test_http_classify_through_the_gateway_answers_the_tf1_classify_signature(served):
    body = {"signature_name": "classify", "examples": [{"x": x} for x in CLASSIFY_X]}
    response = httpx.post(f"{served.url}/v1/models/tf1_builder:classify", json=body, timeout=60)
    assert response.status_code == 200, response.text
    labels = [label.decode() for label in TF1_CLASSES]
    assert response.json()["results"] == [
        [[label, score] for label, score in zip(labels, row.tolist(), strict=True)]
        for row in _tf1_scores()
    ]


# TensorFlow's C++ loader, which TF Serving runs, restores this layout's checkpoint into variables
# its signature does not read: the version loads, and every call fails with this error.
UNRESTORED = re.compile(r"Could not find variable \S+\. This could mean that the variable has")


def test_keras_in_a_tf_module_loads_and_fails_each_call_as_tf_serving_does(served):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(served.channel)
    request = _predict_request(KERAS_IN_MODULE, "serving_default", {"features": FEATURES})
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=60)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert UNRESTORED.search(raised.value.details()), raised.value.details()

    body = {"inputs": {"features": FEATURES.tolist()}}
    response = httpx.post(
        f"{served.url}/v1/models/{KERAS_IN_MODULE}:predict", json=body, timeout=60
    )
    assert response.status_code == 400, response.text
    assert UNRESTORED.search(response.json()["error"]), response.text
