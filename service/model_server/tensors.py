"""numpy <-> TensorProto on the model server, encoded as TF Serving encodes its answers.

TF Serving writes outputs into the typed value fields (`float_val`, `int64_val`, ...) unless
--enable_serialization_as_tensor_content is set, and clients read those fields directly
(`response.outputs["y"].float_val`), so answers must not come back as `tensor_content`.
"""

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

from service.model_server.errors import invalid_argument

# dtype -> the TensorProto field TF's Tensor::AsProtoField fills for it.
_VALUE_FIELDS = {
    tf.float32: "float_val",
    tf.float64: "double_val",
    tf.int32: "int_val",
    tf.int16: "int_val",
    tf.int8: "int_val",
    tf.uint8: "int_val",
    tf.uint16: "int_val",
    tf.int64: "int64_val",
    tf.uint32: "uint32_val",
    tf.uint64: "uint64_val",
    tf.bool: "bool_val",
}


def to_array(name: str, tensor: tensor_pb2.TensorProto) -> np.ndarray:
    try:
        return tf.make_ndarray(tensor)
    except Exception as error:
        raise invalid_argument(f"tensor parsing error: {name}: {error}") from error


def to_tensor_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    dtype = tf.as_dtype(value.dtype)
    field = _VALUE_FIELDS.get(dtype)
    if field is None:  # strings, half precision, complex: TensorFlow's own encoder
        return tf.make_tensor_proto(value)
    tensor = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    tensor.tensor_shape.dim.extend(
        tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in value.shape
    )
    getattr(tensor, field).extend(value.ravel().tolist())
    return tensor
