"""A Predict request's tensors, checked against the signature before any of them is decoded.

In this order, each step before anything costs memory: input names; dtypes; each TensorProto's
shape (a negative size or an unknown rank cannot be fed) and its element count against the limits
(TensorProto lets a few bytes claim any shape, the last value repeating); the values it carries;
the shape against what the signature's graph can take; and only then the decoding.
"""

import math
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from service import shapes
from service.model_server.errors import ServingError, invalid_argument, shown
from service.model_server.graph_shapes import GraphShapes
from service.model_server.limits import FeedLimits
from service.model_server.tensors import to_array, values_problem

MAX_RANK = 254  # TensorFlow's TensorShape::MaxDimensions


def decode_inputs(
    signature_name: str,
    signature: meta_graph_pb2.SignatureDef,
    tensors: Mapping[str, tensor_pb2.TensorProto],
    limits: FeedLimits,
    graph_shapes: GraphShapes,
) -> dict[str, np.ndarray]:
    """The request's inputs as arrays the signature's graph can take, or INVALID_ARGUMENT."""
    check_input_names(signature, tensors.keys())
    request_elements = 0
    sent_shapes = {}
    for alias, tensor in tensors.items():
        info = signature.inputs[alias]
        if tensor.dtype != info.dtype:
            raise dtype_error(alias, dtype_name(tensor.dtype), info.dtype)
        shape = _claimed_shape(alias, tensor)
        size = _size(shape)
        if size > limits.max_tensor_elements:
            raise _over_limit(alias, shape, size, limits.max_tensor_elements, "tensor")
        if tensor.dtype == types_pb2.DT_STRING and size > limits.max_string_elements:
            raise _over_limit(alias, shape, size, limits.max_string_elements, "string")
        request_elements += size
        if request_elements > limits.max_request_elements:
            raise invalid_argument(
                f"the request's inputs hold more than {limits.max_request_elements} elements "
                f"together, the limit (--max_request_elements); input '{shown(alias)}' has "
                f"shape {shapes.text(shape)}"
            )
        problem = values_problem(tensor, shape)
        if problem:
            raise invalid_argument(f"tensor parsing error: {shown(alias)}: {problem}")
        sent_shapes[alias] = shape
    _check_shapes(signature_name, sent_shapes, graph_shapes)
    return {
        alias: to_array(shown(alias), tensor, sent_shapes[alias])
        for alias, tensor in tensors.items()
    }


def check_input_names(signature: meta_graph_pb2.SignatureDef, sent_names) -> None:
    """TF Serving's message for inputs the signature does not name, or names and lacks."""
    expected, sent = set(signature.inputs), set(sent_names)
    if expected != sent:
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({_names(sent)}) != len({_names(expected)}). "
            f"Sent extra: {_names(sent - expected)}. "
            f"Missing but required: {_names(expected - sent)}."
        )


def dtype_error(alias: str, sent: str, expected: int) -> ServingError:
    return invalid_argument(
        f"input '{shown(alias)}' has dtype {sent} but the signature expects {dtype_name(expected)}"
    )


def dtype_name(datatype: int) -> str:
    try:
        return tf.dtypes.as_dtype(datatype).name
    except TypeError:
        return f"DataType({datatype})"


def _claimed_shape(alias: str, tensor: tensor_pb2.TensorProto) -> tuple[int, ...]:
    sizes = tuple([dim.size for dim in tensor.tensor_shape.dim])
    problem = None
    if tensor.tensor_shape.unknown_rank:
        problem = "its shape has unknown_rank set; a tensor sent to a model needs a known shape"
    elif len(sizes) > MAX_RANK:
        problem = f"its shape has {len(sizes)} dimensions, more than TensorFlow's {MAX_RANK}"
    elif sizes and min(sizes) < 0:
        problem = f"its shape {shapes.text(sizes)} has a negative size"
    if problem:
        raise invalid_argument(f"tensor parsing error: {shown(alias)}: {problem}")
    return sizes


def _size(shape: tuple[int, ...]) -> int:
    """Elements, counting a size of 0 as 1: a tensor with no elements could otherwise claim
    any other size, and a kernel may still loop over it (an RNN over its time steps)."""
    return math.prod(max(size, 1) for size in shape)


def _over_limit(alias: str, shape: tuple[int, ...], size: int, limit: int, what: str):
    zero = " (a size of 0 counts as 1 here)" if 0 in shape else ""
    return invalid_argument(
        f"input '{shown(alias)}' has {size} elements (shape {shapes.text(shape)}){zero}, more "
        f"than the limit of {limit} (--max_{what}_elements)"
    )


def _check_shapes(
    signature_name: str,
    sent_shapes: Mapping[str, tuple[int, ...]],
    graph_shapes: GraphShapes,
) -> None:
    """Shapes the signature declares are fed; any other only if the graph takes it."""
    declared = graph_shapes.declared(signature_name)
    undeclared = {
        alias: shape
        for alias, shape in sent_shapes.items()
        if declared[alias] is None or not shapes.compatible(shape, declared[alias])
    }
    if not undeclared:
        return
    keys = {alias: shapes.check_key(shape, declared[alias]) for alias, shape in undeclared.items()}
    reason = graph_shapes.refusal(signature_name, keys)
    if reason is None:
        return
    mismatches = "; ".join(
        f"input '{shown(alias)}' has shape {shapes.text(shape)} but the signature expects "
        f"{shapes.text(declared[alias])}"
        for alias, shape in sorted(undeclared.items())
    )
    raise invalid_argument(f"{mismatches}, and the model's graph cannot take it: {reason}")


def _names(names) -> str:
    return "{" + ", ".join(sorted(shown(name) for name in names)) + "}"
