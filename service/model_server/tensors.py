"""numpy <-> TensorProto on the model server, encoded as TF Serving encodes its answers.

TF Serving writes outputs into the typed value fields (`float_val`, `int64_val`, ...) unless
--enable_serialization_as_tensor_content is set, and clients read those fields directly
(`response.outputs["y"].float_val`), so answers must not come back as `tensor_content`.
"""

import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

from service import shapes
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
# Where each DataType keeps its values when not in tensor_content, and how many numbers make one
# value (a complex number is two).
_CARRIED_VALUES = {
    **{dtype.as_datatype_enum: (field, 1) for dtype, field in _VALUE_FIELD_BY_DTYPE.items()},
    tf.string.as_datatype_enum: ("string_val", 1),
    tf.complex64.as_datatype_enum: ("scomplex_val", 2),
    tf.complex128.as_datatype_enum: ("dcomplex_val", 2),
}


def values_problem(tensor: tensor_pb2.TensorProto, shape: tuple[int, ...]) -> str | None:
    """What is wrong with the values a tensor carries for its shape, if anything. Fewer values
    than elements are TensorFlow's shorthand (the last one repeats); more are not."""
    elements = math.prod(shape)
    dtype = _FIXED_SIZE_DTYPES.get(tensor.dtype)
    if tensor.tensor_content and dtype is not None:
        if len(tensor.tensor_content) != elements * dtype.itemsize:
            return (
                f"tensor_content has {len(tensor.tensor_content)} bytes, but the shape "
                f"{shapes.text(shape)} of {dtype.name} needs {elements * dtype.itemsize}"
            )
        return None
    if tensor.dtype not in _CARRIED_VALUES:
        return None  # a dtype decoding checks by itself
    field, numbers_per_value = _CARRIED_VALUES[tensor.dtype]
    count = len(getattr(tensor, field)) // numbers_per_value
    if count > elements:
        return f"{count} values for the shape {shapes.text(shape)} of {elements} elements"
    return None


def to_array(name: str, tensor: tensor_pb2.TensorProto, shape: tuple[int, ...]) -> np.ndarray:
    """A checked tensor (its `shape` read and `values_problem` found nothing) as an array."""
    dtype = _FIXED_SIZE_DTYPES.get(tensor.dtype)
    if dtype is not None and tensor.tensor_content:
        # What tf.make_ndarray does for this encoding, without its per-call dtype machinery.
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
