"""What a Predict may feed: every tensor is checked against the signature, and against what the
signature's graph can take, before TensorFlow sees it (service/model_server/feeds.py).

A rank-3 tensor for the digits CNN's [-1, 8, 8, 1] input aborted the whole process on CPUs where
TensorFlow picks oneDNN kernels; these tests run in the pytest process itself, so such a failure
would take the test run down with it.
"""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from support import SHARED_TESTDATA
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from service.model_server.errors import MAX_MESSAGE, MAX_NAME_SHOWN
from service.model_server.manager import ModelConfig, ModelManager

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DIGITS_SHAPE = "[-1, 8, 8, 1]"


@pytest.fixture(scope="module")
def channel(half_plus_two, trained_digits, serve):
    models = [
        ModelConfig("half_plus_two", half_plus_two),
        ModelConfig("digits", trained_digits.version_dir.parent),
    ]
    if SHARED_TESTDATA.exists():
        models.append(ModelConfig("tf1", SHARED_TESTDATA / "saved_model_half_plus_two_cpu"))
    with serve(ModelManager(models)) as channel:
        yield channel


@pytest.fixture
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def request(model: str, signature: str = "", **inputs) -> predict_pb2.PredictRequest:
    message = predict_pb2.PredictRequest()
    message.model_spec.name = model
    message.model_spec.signature_name = signature
    for name, value in inputs.items():
        tensor = value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
        message.inputs[name].CopyFrom(tensor)
    return message


def claimed(dims: list[int], dtype: int = types_pb2.DT_FLOAT, **values) -> tensor_pb2.TensorProto:
    """A TensorProto that claims a shape, whatever values it carries."""
    tensor = tensor_pb2.TensorProto(dtype=dtype, **values)
    tensor.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims)
    return tensor


def refusal(stub, message) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(message, timeout=60)
    return caught.value


# --- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        ((2, 8, 8), "Shape must be rank 4 but is rank 3"),  # aborted the server with oneDNN
        ((8, 8), "Shape must be rank 4 but is rank 2"),
        ((1, 1, 8, 8, 1), "Shape must be rank 4 but is rank 5"),
        ((2, 8, 8, 3), "Depth of output"),
    ],
)
def test_shapes_the_digits_graph_cannot_take_are_refused_before_it_runs(stub, shape, reason):
    error = refusal(stub, request("digits", image=np.zeros(shape, np.float32)))
    assert error.code() == INVALID
    details = error.details()
    assert f"input 'image' has shape {list(shape)} but the signature expects {DIGITS_SHAPE}" in (
        details
    )
    assert "the model's graph cannot take it" in details and reason in details


def test_the_declared_shape_is_answered(stub):
    response = stub.Predict(request("digits", image=np.zeros((3, 8, 8, 1), np.float32)))
    assert tf.make_ndarray(response.outputs["probabilities"]).shape == (3, 10)


@pytest.mark.parametrize("model", ["half_plus_two", "tf1"])
@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([2.0, 3.0, 4.0], [3.0, 3.5, 4.0]),  # TF Serving's own REST test: [3] for [-1, 1]
        ([[1.0, 2.0], [3.0, 4.0]], [[2.5, 3.0], [3.5, 4.0]]),  # [2, 2]: element by element
        (5.0, 4.5),  # a scalar
    ],
)
def test_shapes_an_elementwise_graph_takes_are_answered_as_tf_serving_does(stub, model, x, y):
    if model == "tf1" and not SHARED_TESTDATA.exists():
        pytest.skip("../shared/tfserving-testdata is not beside the repo")
    response = stub.Predict(request(model, x=np.array(x, np.float32)))
    assert tf.make_ndarray(response.outputs["y"]).tolist() == y


# --- what a TensorProto claims ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        # Names are checked before any tensor is decoded: this one claims 1e8 floats.
        ({"nope": claimed([10**8], float_val=[1.0])}, "Sent extra: {nope}"),
        (
            {"x": claimed([10**8], float_val=[1.0])},
            "input 'x' has 100000000 elements (shape [100000000]), more than the limit of "
            "16777216 (--max_tensor_elements)",
        ),
        (
            {"x": claimed([2 * 10**7], types_pb2.DT_STRING, string_val=[b"a"])},
            "input 'x' has dtype string but the signature expects float32",
        ),
        (
            {"x": claimed([0, 2**40], float_val=[])},
            "(a size of 0 counts as 1 here), more than the limit of 16777216",
        ),
        ({"x": claimed([-1], float_val=[1.0])}, "tensor parsing error: x: its shape [-1]"),
        (
            {
                "x": tensor_pb2.TensorProto(
                    dtype=1, float_val=[1.0, 2.0], tensor_shape={"unknown_rank": True}
                )
            },
            "tensor parsing error: x: its shape has unknown_rank set",
        ),
        ({"x": claimed([1] * 255, float_val=[1.0])}, "more than TensorFlow's 254"),
        ({"x": claimed([2], float_val=[1.0, 2.0, 3.0])}, "3 values for the shape [2] of 2"),
        (
            {"x": claimed([3], tensor_content=b"\0" * 8)},
            "tensor_content has 8 bytes, but the shape [3] of float32 needs 12",
        ),
        ({"x": claimed([3, 1], types_pb2.DT_INT32, int_val=[1])}, "has dtype int32"),
    ],
    ids=[
        "unknown-name-claiming-1e8",
        "1e8-floats-from-one-value",
        "2e7-strings-for-a-float",
        "zero-times-huge",
        "negative-dim",
        "unknown-rank-with-values",
        "rank-255",
        "more-values-than-elements",
        "short-tensor-content",
        "wrong-dtype",
    ],
)
def test_what_a_tensor_claims_is_checked_before_it_is_decoded(stub, inputs, expected):
    error = refusal(stub, request("half_plus_two", **inputs))
    assert error.code() == INVALID
    assert expected in error.details()


def test_a_string_input_has_a_lower_element_limit(stub):
    message = request(
        "half_plus_two", "classify_x_to_y", inputs=claimed([2 * 10**6], 7, string_val=[b"a"])
    )
    error = refusal(stub, message)
    assert error.code() == INVALID
    assert "more than the limit of 1048576 (--max_string_elements)" in error.details()


def test_fewer_values_than_elements_repeat_the_last_one_as_in_tensorflow(stub):
    response = stub.Predict(request("half_plus_two", x=claimed([3, 1], float_val=[1.0, 2.0])))
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[2.5], [3.0], [3.0]]


# --- messages ---------------------------------------------------------------------------------


def test_bytes_a_graph_cannot_parse_are_invalid_argument_with_the_graphs_message(stub):
    """A string input that is not UTF-8 made TensorFlow's own error message undecodable (500)."""
    message = request("half_plus_two", "classify_x_to_y", inputs=np.array([b"\xff"], dtype=object))
    error = refusal(stub, message)
    assert error.code() == INVALID
    assert "Could not parse example input, value: '\\xff'" in error.details()


@pytest.mark.parametrize("field", ["name", "signature_name", "version_label"])
def test_a_huge_name_is_answered_with_a_short_message_not_resource_exhausted(stub, field):
    message = request("half_plus_two", x=np.array([[1.0]], np.float32))
    setattr(message.model_spec, field, "n" * 20_000)
    error = refusal(stub, message)
    assert error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION, INVALID)
    assert "n" * MAX_NAME_SHOWN + "... (20000 characters)" in error.details()
    assert len(error.details()) < MAX_MESSAGE


def test_many_unknown_input_names_make_a_short_message(stub):
    names = {f"input_{i:05d}_{'z' * 50}": np.zeros(1, np.float32) for i in range(2000)}
    error = refusal(stub, request("half_plus_two", **names))
    assert error.code() == INVALID
    assert error.details().startswith("input size does not match signature: 2000!=1")
    assert len(error.details()) <= MAX_MESSAGE + 100


def test_a_huge_metadata_field_name_is_cut_in_the_message(channel):
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["f" * 30_000])
    metadata.model_spec.name = "half_plus_two"
    with pytest.raises(grpc.RpcError) as caught:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(metadata)
    assert caught.value.code() == INVALID
    assert len(caught.value.details()) < MAX_MESSAGE


def test_a_reload_request_naming_a_huge_model_is_answered_in_a_short_message(channel):
    reload = model_management_pb2.ReloadConfigRequest()
    entry = reload.config.model_config_list.config.add()
    entry.name, entry.base_path = "m" * 30_000, "relative/path"
    entry.model_platform = "tensorflow"
    service = model_service_pb2_grpc.ModelServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        service.HandleReloadConfigRequest(reload)
    assert caught.value.code() == INVALID
    assert "(30000 characters)" in caught.value.details()


def test_classify_of_unparseable_examples_is_invalid_argument(stub):
    examples = classification_pb2.ClassificationRequest()
    examples.model_spec.name, examples.model_spec.signature_name = (
        "half_plus_two",
        "classify_x_to_y",
    )
    examples.input.example_list.examples.add().features.feature["x"].bytes_list.value.append(
        b"\xff"
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.Classify(examples)
    assert caught.value.code() == INVALID
