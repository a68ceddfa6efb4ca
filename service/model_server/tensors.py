"""numpy <-> TensorProto on the model server, encoded as TF Serving encodes its answers.

TF Serving writes outputs into the typed value fields (`float_val`, `int64_val`, ...) unless
--enable_serialization_as_tensor_content is set, and clients read those fields directly
(`response.outputs["y"].float_val`), so answers must not come back as `tensor_content`.
"""

import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

from service.model_server.errors import invalid_argument

# dtype -> the TensorProto field TF's Tensor::AsProtoField fills for it.
_VALUE_FIELD_BY_DTYPE = {
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
    tf.float16: "half_val",  # the 16-bit patterns, widened to int32
}
# Keyed by numpy dtype and DataType number: per-request lookups skip tf.as_dtype.
_VALUE_FIELDS = {
    np.dtype(dtype.as_numpy_dtype): (dtype.as_datatype_enum, field)
    for dtype, field in _VALUE_FIELD_BY_DTYPE.items()
}
_FIXED_SIZE_DTYPES = {
    dtype.as_datatype_enum: np.dtype(dtype.as_numpy_dtype)
    for dtype in (*_VALUE_FIELD_BY_DTYPE, tf.complex64, tf.complex128)
}


def to_array(name: str, tensor: tensor_pb2.TensorProto) -> np.ndarray:
    dtype = _FIXED_SIZE_DTYPES.get(tensor.dtype)
    if dtype is not None and tensor.tensor_content:
        # What tf.make_ndarray does for this encoding, without its per-call dtype machinery.
        shape = [dim.size for dim in tensor.tensor_shape.dim]
        count = math.prod(shape)
        if min(shape, default=0) >= 0 and len(tensor.tensor_content) == dtype.itemsize * count:
            return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape).copy()
    try:
        return tf.make_ndarray(tensor)
    except Exception as error:
        raise invalid_argument(f"tensor parsing error: {name}: {error}") from error


def to_tensor_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    if value.dtype not in _VALUE_FIELDS:  # strings and complex: TensorFlow's own typed fields
        return tf.make_tensor_proto(value)
    dtype, field = _VALUE_FIELDS[value.dtype]
    tensor = tensor_pb2.TensorProto(dtype=dtype)
    tensor.tensor_shape.dim.extend(
        tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in value.shape
    )
    if value.dtype == np.float16:
        value = value.view(np.uint16)
    getattr(tensor, field).extend(value.ravel().tolist())
    return tensor
