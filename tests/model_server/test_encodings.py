"""Predict takes every TensorProto encoding of every dtype and answers as TF Serving encodes."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from savedmodels import IDENTITY_DTYPES, write_identity
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from service.model_server.manager import ModelConfig, ModelManager

# TF Serving's answers (Tensor::AsProtoField) use the typed field of each dtype.
ANSWER_FIELDS = {
    "float16": "half_val",
    "float32": "float_val",
    "float64": "double_val",
    "int8": "int_val",
    "int16": "int_val",
    "int32": "int_val",
    "int64": "int64_val",
    "uint8": "int_val",
    "uint16": "int_val",
    "uint32": "uint32_val",
    "uint64": "uint64_val",
    "bool": "bool_val",
    "complex64": "scomplex_val",
    "complex128": "dcomplex_val",
    "string": "string_val",
}


@pytest.fixture(scope="module")
def predict(tmp_path_factory, serve):
    base_path = write_identity(tmp_path_factory.mktemp("identity"))
    with serve(ModelManager([ModelConfig("identity", base_path)])) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict


def sample(dtype: str) -> np.ndarray:
    values = np.arange(-3, 3).reshape(2, 3)
    if dtype == "string":
        return np.array([[b"a", b"\xff\x00", "é".encode()], [b"", b"x y", b"z"]], dtype=object)
    if dtype == "bool":
        return values > 0
    if dtype.startswith("complex"):
        return (values + 0.5j * values).astype(dtype)
    if dtype.startswith("uint"):
        return (values + 3).astype(dtype)
    return (values * 1.5 if dtype.startswith("float") else values).astype(dtype)


def typed_fields(value: np.ndarray) -> tensor_pb2.TensorProto:
    """The value in its typed field, as clients other than tf.make_tensor_proto send it."""
    tensor = tf.make_tensor_proto(value)
    if tensor.tensor_content:
        field = ANSWER_FIELDS[value.dtype.name]
        tensor.ClearField("tensor_content")
        bits = value.view(np.uint16) if value.dtype == np.float16 else value  # half_val holds bits
        getattr(tensor, field).extend(bits.ravel().tolist())
    return tensor


def content(value: np.ndarray) -> tensor_pb2.TensorProto:
    """The value as raw little-endian bytes in tensor_content."""
    tensor = tf.make_tensor_proto(value)
    for field in set(ANSWER_FIELDS.values()):
        tensor.ClearField(field)
    tensor.tensor_content = value.astype(value.dtype.newbyteorder("<")).tobytes()
    return tensor


def call(predict, dtype: str, tensor: tensor_pb2.TensorProto) -> tensor_pb2.TensorProto:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "identity"
    request.model_spec.signature_name = f"identity_{dtype}"
    request.inputs["x"].CopyFrom(tensor)
    return predict(request).outputs["y"]


@pytest.mark.parametrize(
    ("dtype", "encode"),
    # Strings have no tensor_content encoding.
    [(dtype, typed_fields) for dtype in IDENTITY_DTYPES]
    + [(dtype, content) for dtype in IDENTITY_DTYPES if dtype != "string"],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_every_dtype_in_every_encoding_comes_back_unchanged(predict, dtype, encode):
    value = sample(dtype)
    answer = call(predict, dtype, encode(value))
    np.testing.assert_array_equal(tf.make_ndarray(answer), value)
    assert tf.as_dtype(answer.dtype).name == dtype
    assert [dim.size for dim in answer.tensor_shape.dim] == [2, 3]
    assert not answer.tensor_content
    assert len(getattr(answer, ANSWER_FIELDS[dtype])) == (12 if "complex" in dtype else 6)


def test_tensor_content_of_the_wrong_size_is_invalid_argument(predict):
    tensor = content(sample("float32"))
    tensor.tensor_content = tensor.tensor_content[:-4]
    with pytest.raises(grpc.RpcError) as caught:
        call(predict, "float32", tensor)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor parsing error: x" in caught.value.details()
