"""TF Serving's REST JSON <-> wire protobufs, as tensorflow_serving/util/json_tensor.cc does it.

Pure functions: no HTTP, no gRPC, no TensorFlow. Numbers go through numpy in bulk (an object
array for shape and type checks, one cast, `tensor_content` bytes); only strings are handled
element by element, because every one of them has to be encoded or decoded anyway.

Where this module knowingly differs from TF Serving:
- Float text: we print the shortest decimal that reads back as the same float32 / float64
  (`0.1`, `3.1415927`); TF Serving prints `%g` and falls back to 9 / 17 digits (`3.14159274`).
  The numbers are identical once parsed. Output JSON is compact (TF Serving pretty-prints).
- DT_HALF and DT_UINT16 are accepted and returned; TF Serving's REST input side refuses them.
- Strings that are not valid UTF-8 come back as {"b64": ...} instead of invalid JSON.
- Object keys in responses are sorted by output name (TF Serving's order is arbitrary).
- NaN / Infinity in requests are refused (orjson, like the JSON spec, has no such numbers);
  TF Serving parses them. In responses both write NaN / Infinity / -Infinity tokens.
- Ragged lists and out-of-range integers are rejected here with the input's name; TF Serving
  rejects the former with a terser message and silently truncates the latter.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service import shapes
from service.gateway.errors import GatewayError, Limit
from service.wire import (
    classification_pb2,
    example_pb2,
    feature_pb2,
    input_pb2,
    meta_graph_pb2,
    regression_pb2,
    tensor_pb2,
    types_pb2,
)

TensorProto = tensor_pb2.TensorProto

DT_FLOAT = types_pb2.DT_FLOAT
DT_DOUBLE = types_pb2.DT_DOUBLE
DT_HALF = types_pb2.DT_HALF
DT_INT8 = types_pb2.DT_INT8
DT_INT16 = types_pb2.DT_INT16
DT_INT32 = types_pb2.DT_INT32
DT_INT64 = types_pb2.DT_INT64
DT_UINT8 = types_pb2.DT_UINT8
DT_UINT16 = types_pb2.DT_UINT16
DT_UINT32 = types_pb2.DT_UINT32
DT_UINT64 = types_pb2.DT_UINT64
DT_BOOL = types_pb2.DT_BOOL
DT_STRING = types_pb2.DT_STRING

# Element types JSON can carry, and where TensorProto keeps them when not in tensor_content.
_NUMPY_TYPES: dict[int, np.dtype] = {
    DT_FLOAT: np.dtype(np.float32),
    DT_DOUBLE: np.dtype(np.float64),
    DT_HALF: np.dtype(np.float16),
    DT_INT8: np.dtype(np.int8),
    DT_INT16: np.dtype(np.int16),
    DT_INT32: np.dtype(np.int32),
    DT_INT64: np.dtype(np.int64),
    DT_UINT8: np.dtype(np.uint8),
    DT_UINT16: np.dtype(np.uint16),
    DT_UINT32: np.dtype(np.uint32),
    DT_UINT64: np.dtype(np.uint64),
    DT_BOOL: np.dtype(np.bool_),
}
_VALUE_FIELDS: dict[int, str] = {
    DT_FLOAT: "float_val",
    DT_DOUBLE: "double_val",
    DT_HALF: "half_val",
    DT_INT8: "int_val",
    DT_INT16: "int_val",
    DT_INT32: "int_val",
    DT_UINT8: "int_val",
    DT_UINT16: "int_val",
    DT_INT64: "int64_val",
    DT_UINT32: "uint32_val",
    DT_UINT64: "uint64_val",
    DT_BOOL: "bool_val",
    DT_STRING: "string_val",
}
# What each numeric value field holds (reading a field as its own type keeps uint64 exact).
_FIELD_ELEMENT_TYPES = {
    "float_val": np.float32,
    "double_val": np.float64,
    "half_val": np.int32,
    "int_val": np.int32,
    "int64_val": np.int64,
    "uint32_val": np.uint32,
    "uint64_val": np.uint64,
    "bool_val": np.bool_,
}
# Largest integer each float type holds exactly: TF Serving refuses JSON integers beyond it.
_EXACT_INT_LIMIT = {DT_HALF: 2**11 - 1, DT_FLOAT: 2**24 - 1, DT_DOUBLE: 2**53 - 1}
_LARGEST_FLOAT = {
    dtype: float(np.finfo(_NUMPY_TYPES[dtype]).max) for dtype in (DT_HALF, DT_FLOAT, DT_DOUBLE)
}
_JSON_TYPES = {
    DT_FLOAT: "JSON numbers",
    DT_DOUBLE: "JSON numbers",
    DT_HALF: "JSON numbers",
    DT_BOOL: "true/false",
    DT_STRING: 'JSON strings or {"b64": "..."} objects',
}
_ALLOWED_LEAVES: dict[int, frozenset[type]] = {
    DT_FLOAT: frozenset({int, float}),
    DT_DOUBLE: frozenset({int, float}),
    DT_HALF: frozenset({int, float}),
    DT_BOOL: frozenset({bool}),
    DT_STRING: frozenset({str, dict}),
}
_INT_LEAVES = frozenset({int})

# TF Serving base64-encodes DT_STRING outputs whose name ends with this (json_tensor.cc,
# kBytesTensorNameSuffix, borrowed from Cloud ML Engine); others are returned as text.
BYTES_SUFFIX = "_bytes"
B64_KEY = "b64"

_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class CodecError(GatewayError):
    """The request or response cannot be converted; `message` says what and where."""


@dataclass(frozen=True)
class SignatureInput:
    """What the signature declares for one input (from TensorInfo).

    `dtype` is a wire DataType number; `shape` uses None (or -1) for unknown dimensions and is
    None altogether for unknown rank.
    """

    dtype: int
    shape: tuple[int | None, ...] | None = None

    @classmethod
    def from_tensor_info(cls, info: meta_graph_pb2.TensorInfo) -> SignatureInput:
        shape = info.tensor_shape
        if shape.unknown_rank:
            return cls(dtype=info.dtype, shape=None)
        return cls(info.dtype, tuple(None if dim.size < 0 else dim.size for dim in shape.dim))


def signature_input_specs(signature: meta_graph_pb2.SignatureDef) -> dict[str, SignatureInput]:
    """What a SignatureDef (as GetModelMetadata returns it) declares for each input."""
    return {name: SignatureInput.from_tensor_info(info) for name, info in signature.inputs.items()}


@dataclass
class PredictInputs:
    """A decoded :predict body: what goes into PredictRequest, and how to shape the answer.

    `restorable` holds, for each tensor whose shape fits the signature only once size-1
    dimensions are ignored, the declared shape with its size-1 dimensions put back (the same
    elements, so `set_shape` may give it to the tensor as it is).
    """

    signature_name: str
    tensors: dict[str, TensorProto]
    columnar: bool
    restorable: dict[str, tuple[int, ...]] = field(default_factory=dict)


# --- helpers ---------------------------------------------------------------------------------


def dtype_name(dtype: int) -> str:
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return f"DataType({dtype})"


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _describe(value: Any) -> str:
    """The value's JSON kind with an article, for messages: "an object", "a list", ..."""
    if _is_b64_object(value):
        return 'a {"b64": ...} value'
    kind = _json_kind(value)
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _show(value: Any, limit: int = 60) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_b64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64_KEY), str)


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64_object(value)


def _b64decode(value: Any, where: str) -> bytes:
    if not _is_b64_object(value):
        raise CodecError(
            f'{where}: object {_show(value)} is not a base64 value {{"b64": "<base64 string>"}}'
        )
    text = value[B64_KEY]
    # Padding is optional, as in absl::Base64Unescape.
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise CodecError(f"{where}: invalid base64 in {_show(value)}: {error}") from None


# --- request parsing -------------------------------------------------------------------------


# orjson reads an integer literal outside [-2**63, 2**64 - 1] as a float, which would hide the
# loss of precision the integer rules refuse. Such a literal has at least 19 digits; a body with
# a run of 19 digits (found by mapping every digit to "0": 1 us for a digits request, 50 ms for
# 16 MB) is read again by the json module, which keeps integers exact.
_DIGITS_AS_ZERO = bytes(ord("0") if b in b"0123456789" else ord(" ") for b in range(256))
_LONGEST_EXACT_RUN = b"0" * 19


def parse_json(
    body: bytes | bytearray | memoryview | str, max_values: Limit | None = None
) -> dict[str, Any]:
    """Parse a request body that must be a JSON object.

    `max_values` bounds the JSON values (each array, object and scalar) before parsing: parsed,
    each costs 8 to 200 bytes of memory, far more than its text (a 14 MB body of empty lists
    took 345 MB). Every value but the first follows a ',', '[' or '{', so counting those bytes
    is a bound that is exact when strings hold none of them.
    """
    data = body.encode() if isinstance(body, str) else bytes(body)
    if max_values is not None:
        values = data.count(b",") + data.count(b"[") + data.count(b"{") + 1
        if values > max_values.value:
            raise CodecError(
                f"the JSON body has {values} values (counted by ',', '[' and '{{'), more than "
                f"the limit of {max_values}"
            )
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        text = error.doc if isinstance(error.doc, str) else ""
        if text.startswith(("NaN", "Infinity"), error.pos):
            # orjson points after a leading "-"; point at the token's start instead.
            column = error.colno - (text[error.pos - 1 : error.pos] == "-")
            raise CodecError(
                f"JSON Parse error: NaN and Infinity are not valid JSON numbers "
                f"(line {error.lineno} column {column})"
            ) from None
        raise CodecError(f"JSON Parse error: {error}") from None
    if _LONGEST_EXACT_RUN in data.translate(_DIGITS_AS_ZERO):
        try:
            doc = json.loads(data)
        except RecursionError:
            raise CodecError(
                "JSON Parse error: nested too deeply to read its long integers exactly"
            ) from None
    if not isinstance(doc, dict):
        raise CodecError(f"JSON Value: {_show(doc)} Is not object: the body must be a JSON object")
    return doc


def request_signature_name(doc: Mapping[str, Any]) -> str:
    """The optional "signature_name" of a request ("" when absent: the server's default)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise CodecError(f"'signature_name' must be a string, got {_json_kind(name)} {_show(name)}")
    return name


def predict_inputs(
    doc: Mapping[str, Any],
    input_specs: Mapping[str, SignatureInput],
    *,
    check_shapes: bool = False,
    max_tensor_elements: Limit | None = None,
    max_request_elements: Limit | None = None,
) -> PredictInputs:
    """Decode a :predict body, row ("instances") or columnar ("inputs") format.

    `check_shapes` additionally enforces the signature's shapes, up to size-1 dimensions (TF
    Serving checks no shapes and feeds a [3] tensor to half_plus_two's [-1, 1] input), and fills
    in `restorable`. Element limits are checked against the shape each input's first elements
    describe, before anything is converted.
    """
    signature_name = request_signature_name(doc)
    if not input_specs:
        raise CodecError(f"signature '{signature_name or 'serving_default'}' has no inputs")
    has_rows, has_columns = "instances" in doc, "inputs" in doc
    if has_rows and has_columns:
        raise CodecError("request has both 'instances' and 'inputs': send only one of them")
    if not has_rows and not has_columns:
        raise CodecError(
            "request needs an 'instances' (row format) or 'inputs' (columnar format) key"
        )
    if has_rows:
        columns = _columns_from_instances(doc["instances"], input_specs)
    else:
        columns = _columns_from_inputs(doc["inputs"], input_specs)
    _check_element_counts(columns, max_tensor_elements, max_request_elements)
    inputs = PredictInputs(signature_name, {}, has_columns)
    for name, value in columns.items():
        inputs.tensors[name], restored = _tensor_from_json(
            name, value, input_specs[name], has_rows, check_shapes
        )
        if restored is not None:
            inputs.restorable[name] = restored
    return inputs


def _claimed_shape(value: Any) -> tuple[int, ...]:
    """The shape a nested list claims by its first elements (its true one unless it is ragged)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _check_element_counts(
    columns: Mapping[str, Any], tensor_limit: Limit | None, request_limit: Limit | None
) -> None:
    total = 0
    for name, value in columns.items():
        shape = _claimed_shape(value)
        count = math.prod(shape)
        if tensor_limit is not None and count > tensor_limit.value:
            raise CodecError(
                f"input '{name}' has {count} elements (shape {shapes.text(shape)}), more than "
                f"the limit of {tensor_limit} per input"
            )
        total += count
    if request_limit is not None and total > request_limit.value:
        raise CodecError(
            f"the request's inputs have {total} elements together, more than the limit of "
            f"{request_limit} per request"
        )


def _columns_from_instances(
    instances: Any, specs: Mapping[str, SignatureInput]
) -> dict[str, list[Any]]:
    if not isinstance(instances, list):
        raise CodecError(f"'instances' must be a list, got {_json_kind(instances)}")
    if not instances:
        raise CodecError("'instances' is an empty list: send at least one instance")
    names = sorted(specs)
    if not _is_named_object(instances[0]):
        if len(names) > 1:
            raise CodecError(
                f"'instances' holds plain values, but the signature has {len(names)} inputs "
                f"({', '.join(names)}): each instance must be an object keyed by input name"
            )
        for index, instance in enumerate(instances):
            if _is_named_object(instance):
                raise CodecError(
                    f"instance {index} of 'instances' is an object, but instance 0 is "
                    f"{_describe(instances[0])}: use one form for all instances"
                )
        return {names[0]: instances}
    wanted = set(names)
    for index, instance in enumerate(instances):
        if not _is_named_object(instance):
            raise CodecError(
                f"instance {index} of 'instances' is {_describe(instance)}, but instance 0 "
                f"is an object: use one form for all instances"
            )
        if instance.keys() != wanted:
            missing = sorted(wanted - instance.keys())
            unknown = sorted(instance.keys() - wanted)
            detail = "; ".join(
                part
                for part in (
                    f"missing input(s): {', '.join(missing)}" if missing else "",
                    f"unknown input(s): {', '.join(unknown)}" if unknown else "",
                )
                if part
            )
            raise CodecError(
                f"instance {index} of 'instances' must have exactly the keys "
                f"{', '.join(names)} ({detail})"
            )
    return {name: [instance[name] for instance in instances] for name in names}


def _columns_from_inputs(inputs: Any, specs: Mapping[str, SignatureInput]) -> dict[str, Any]:
    names = sorted(specs)
    if not _is_named_object(inputs):
        if len(names) > 1:
            raise CodecError(
                f"'inputs' is a plain value, but the signature has {len(names)} inputs "
                f"({', '.join(names)}): send an object keyed by input name"
            )
        return {names[0]: inputs}
    missing = [name for name in names if name not in inputs]
    if missing:
        raise CodecError(
            f"'inputs' object is missing input(s): {', '.join(missing)} "
            f"(the signature takes {', '.join(names)})"
        )
    # Like TF Serving, keys the signature does not name are ignored.
    return {name: inputs[name] for name in names}


def _ragged_detail(value: Any, batched: bool) -> str:
    """Where a nested list stops being rectangular (error path only)."""
    if batched:
        instance_shapes = [np.shape(np.array(item, dtype=object)) for item in value]
        for index, shape in enumerate(instance_shapes):
            if shape != instance_shapes[0]:
                return (
                    f"instance {index} has shape {shapes.text(shape)} but instance 0 has "
                    f"shape {shapes.text(instance_shapes[0])}"
                )
    # The outermost list is dimension 0; the lists inside it give dimension 1's length, etc.
    level, depth = [value], 0
    while level:
        lists = [item for item in level if isinstance(item, list)]
        if not lists:
            break
        if len(lists) != len(level):
            return f"values and lists are mixed in dimension {depth}"
        first = len(lists[0])
        other = next((len(item) for item in lists if len(item) != first), None)
        if other is not None:
            return f"lists in dimension {depth} have different lengths {first} and {other}"
        level, depth = [x for item in lists for x in item], depth + 1
    return "lists are nested too deeply"


def _tensor_from_json(
    name: str,
    value: Any,
    spec: SignatureInput,
    batched: bool,
    check_shapes: bool,
) -> tuple[TensorProto, tuple[int, ...] | None]:
    """The tensor, and its declared shape with size-1 dimensions put back when it needs one."""
    where = f"input '{name}'"
    dtype = spec.dtype
    if dtype != DT_STRING and dtype not in _NUMPY_TYPES:
        raise CodecError(f"{where}: dtype {dtype_name(dtype)} cannot be sent as JSON")
    try:
        # An object array gives the shape and the raw JSON leaves without converting them.
        leaves_array = np.array(value, dtype=object)
    except ValueError:
        raise CodecError(f"{where}: ragged list: {_ragged_detail(value, batched)}") from None
    leaves = leaves_array.ravel()
    leaf_types = set(map(type, leaves))
    if list in leaf_types:
        raise CodecError(f"{where}: ragged list: {_ragged_detail(value, batched)}")
    allowed = _ALLOWED_LEAVES.get(dtype, _INT_LEAVES)
    if not leaf_types <= allowed:
        bad = next(leaf for leaf in leaves if type(leaf) not in allowed)
        expected = _JSON_TYPES.get(dtype, "JSON integers")
        raise CodecError(
            f"{where}: expected {dtype_name(dtype)} ({expected}), "
            f"got {_json_kind(bad)} {_show(bad)}"
        )
    shape = leaves_array.shape
    restored = None
    if check_shapes and spec.shape is not None and not shapes.compatible(shape, spec.shape):
        restored = shapes.restored(shape, spec.shape)
        if restored is None:
            raise CodecError(
                f"{where}: shape {shapes.text(shape)} does not match the signature's "
                f"{shapes.text(spec.shape)}"
            )

    tensor = TensorProto(dtype=dtype)
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    if dtype == DT_STRING:
        # Bytes go to string_val one by one: there is no bulk encoding for them.
        tensor.string_val.extend(
            leaf.encode() if type(leaf) is str else _b64decode(leaf, where) for leaf in leaves
        )
        return tensor, restored
    array = _numeric(where, leaves_array, leaf_types, dtype)
    tensor.tensor_content = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return tensor, restored


def _numeric(where: str, leaves: np.ndarray, leaf_types: set[type], dtype: int) -> np.ndarray:
    target = _NUMPY_TYPES[dtype]
    if leaves.size == 0:
        return np.zeros(leaves.shape, dtype=target)
    if dtype == DT_BOOL:
        return leaves.astype(target)
    if target.kind in "iu":
        info = np.iinfo(target)
        try:
            wide = leaves.astype(np.uint64 if target == np.uint64 else np.int64)
        except OverflowError:
            wide = None
        if wide is None or wide.min() < info.min or wide.max() > info.max:
            bad = next(leaf for leaf in leaves.ravel() if not info.min <= leaf <= info.max)
            raise CodecError(
                f"{where}: {bad} is out of range for {dtype_name(dtype)} ([{info.min}, {info.max}])"
            ) from None
        return wide.astype(target)
    try:
        wide = leaves.astype(np.float64)
    except OverflowError:  # an integer beyond even float64
        wide = None
    limit = _LARGEST_FLOAT[dtype]
    if wide is None or not (np.abs(wide) <= limit).all():  # NaN too, though JSON has none
        outside = None if wide is None else ~(np.abs(wide.ravel()) <= limit)
        flat = leaves.ravel()
        bad = max(flat, key=abs) if outside is None else flat[np.argmax(outside)]
        raise CodecError(
            f"{where}: cannot convert {_show(bad)} to {dtype_name(dtype)} without loss of "
            f"precision (out of range)"
        )
    if int in leaf_types:
        exact = _EXACT_INT_LIMIT[dtype]
        suspects = leaves.ravel()[np.abs(wide.ravel()) > exact]
        lossy = [leaf for leaf in suspects if type(leaf) is int]
        if lossy:
            raise CodecError(
                f"{where}: cannot convert integer {lossy[0]} to {dtype_name(dtype)} without "
                f"loss of precision (|value| must be at most {exact})"
            )
    return wide.astype(target)


def set_shape(tensor: TensorProto, shape: Sequence[int]) -> None:
    """Give `tensor` another shape with the same number of elements (see `restorable`)."""
    del tensor.tensor_shape.dim[:]
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)


def array_to_tensor(array: np.ndarray) -> TensorProto:
    """A numeric numpy array as a TensorProto in tensor_content form."""
    dtype = next((dt for dt, np_type in _NUMPY_TYPES.items() if np_type == array.dtype), None)
    if dtype is None:
        raise CodecError(f"numpy dtype {array.dtype} has no TensorFlow equivalent here")
    tensor = TensorProto(dtype=dtype)
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.tensor_content = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return tensor


# --- tensors to JSON -------------------------------------------------------------------------


def tensor_to_array(tensor: TensorProto) -> np.ndarray:
    """Decode a TensorProto (tensor_content or typed values) into a numpy array.

    DT_STRING gives an object array of bytes. Like tf.make_ndarray, a value list shorter than
    the shape is padded with its last value (so one value fills the shape) and an empty one
    gives zeros. The array may be read-only.
    """
    dtype = tensor.dtype
    if tensor.tensor_shape.unknown_rank:
        raise CodecError(f"{dtype_name(dtype)} tensor has an unknown rank")
    shape = tuple([dim.size for dim in tensor.tensor_shape.dim])
    if min(shape, default=0) < 0:
        raise CodecError(f"tensor shape {shapes.text(shape)} has unknown dimensions")
    count = math.prod(shape)
    if dtype == DT_STRING:
        if tensor.tensor_content:
            raise CodecError("DT_STRING tensors in tensor_content form are not supported")
        values = np.empty(len(tensor.string_val), dtype=object)
        values[:] = list(tensor.string_val)
        return _fill(values, count, shape, b"")
    target = _NUMPY_TYPES.get(dtype)
    if target is None:
        raise CodecError(f"dtype {dtype_name(dtype)} cannot be converted to JSON")
    if tensor.tensor_content:
        content = tensor.tensor_content
        if len(content) != count * target.itemsize:
            raise CodecError(
                f"{dtype_name(dtype)} tensor_content has {len(content)} bytes, but shape "
                f"{shapes.text(shape)} needs {count * target.itemsize}"
            )
        array = np.frombuffer(content, dtype=target.newbyteorder("<"))
        return array.astype(target, copy=False).reshape(shape)
    # A list first: numpy reads one about three times faster than the repeated field itself.
    field = _VALUE_FIELDS[dtype]
    raw = np.array(getattr(tensor, field)[:], dtype=_FIELD_ELEMENT_TYPES[field])
    if dtype == DT_HALF:
        # half_val holds the 16-bit patterns, widened to int32.
        values = raw.astype(np.uint16).view(np.float16)
    else:
        values = raw.astype(target, copy=False)
    return _fill(values, count, shape, target.type(0))


def _fill(values: np.ndarray, count: int, shape: tuple[int, ...], zero: Any) -> np.ndarray:
    if values.size == count:
        return values.reshape(shape)
    if values.size > count:
        raise CodecError(
            f"tensor has {values.size} values but shape {shapes.text(shape)} holds {count}"
        )
    if values.size == 0:
        filled = np.empty(count, dtype=values.dtype)
        filled[:] = zero
        return filled.reshape(shape)
    return np.pad(values, (0, count - values.size), mode="edge").reshape(shape)


def _nonfinite_fragment(array: np.ndarray) -> orjson.Fragment:
    """Float JSON with NaN / Infinity / -Infinity tokens, as TF Serving writes them.

    orjson writes null for those; in a numeric array "null" means nothing else, so each one
    is replaced, in order, by the token for the matching value.
    """
    flat = array.ravel()
    bad = flat[~np.isfinite(flat)]
    tokens = np.where(np.isnan(bad), "NaN", np.where(bad > 0, "Infinity", "-Infinity"))
    if array.ndim == 0:
        return orjson.Fragment(str(tokens[0]).encode())
    parts = orjson.dumps(array, option=_DUMPS_OPTIONS).split(b"null")
    out = [parts[0]]
    for token, part in zip(tokens.tolist(), parts[1:], strict=True):
        out += [token.encode(), part]
    return orjson.Fragment(b"".join(out))


def _utf8_or_b64(value: bytes) -> str | dict[str, str]:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {B64_KEY: base64.b64encode(value).decode("ascii")}


def _json_ready(array: np.ndarray, as_b64: bool) -> Any:
    """Something orjson (OPT_SERIALIZE_NUMPY) writes as TF Serving would write `array`."""
    if array.dtype == object:
        flat = array.ravel().tolist()
        if as_b64:
            items: list[Any] = [{B64_KEY: base64.b64encode(b).decode("ascii")} for b in flat]
        else:
            try:
                items = [b.decode("utf-8") for b in flat]
            except UnicodeDecodeError:
                items = [_utf8_or_b64(b) for b in flat]
        nested = np.empty(len(items), dtype=object)
        nested[:] = items
        return nested.reshape(array.shape).tolist()
    if array.dtype == np.float16:
        # Shortest text that reads back as the same float16 (orjson would print float32 digits).
        array = array.astype(str).astype(np.float32)
    # orjson only writes C-contiguous arrays (np.ascontiguousarray would turn 0-d into 1-d).
    if not array.flags.c_contiguous:
        array = array.copy(order="C")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return _nonfinite_fragment(array)
    return array[()] if array.ndim == 0 else array


def _is_bytes_output(name: str, tensor: TensorProto) -> bool:
    return tensor.dtype == DT_STRING and name.endswith(BYTES_SUFFIX)


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # NaN / Infinity tokens, which orjson refuses


def tensor_to_json(tensor: TensorProto, name: str = "") -> Any:
    """A tensor as TF Serving's REST API shows it: nested lists of Python values.

    DT_STRING elements are text, or {"b64": ...} when `name` ends with "_bytes" (TF Serving's
    rule) or the bytes are not UTF-8. float32 values come out as the Python float of their
    shortest decimal (0.1, not 0.10000000149011612); NaN / infinities as float nan / inf.
    """
    ready = _json_ready(tensor_to_array(tensor), _is_bytes_output(name, tensor))
    return _loads(orjson.dumps(ready, option=_DUMPS_OPTIONS))


def predict_response_json(outputs: Mapping[str, TensorProto], columnar: bool) -> bytes:
    """The :predict response body: {"predictions": ...} (row) or {"outputs": ...} (columnar)."""
    if not outputs:
        raise CodecError("the model returned no outputs")
    names = sorted(outputs)
    arrays = {name: tensor_to_array(outputs[name]) for name in names}
    as_b64 = {name: _is_bytes_output(name, outputs[name]) for name in names}
    if columnar:
        if len(names) == 1:
            body: dict[str, Any] = {"outputs": _json_ready(arrays[names[0]], as_b64[names[0]])}
        else:
            body = {"outputs": {name: _json_ready(arrays[name], as_b64[name]) for name in names}}
        return orjson.dumps(body, option=_DUMPS_OPTIONS)
    batch = None
    for name in names:
        array = arrays[name]
        if array.ndim == 0:
            raise CodecError(
                f"output '{name}' is a scalar, but the row format ('instances') needs a batch "
                f"dimension: use the columnar format ('inputs')"
            )
        if batch is not None and array.shape[0] != batch[1]:
            raise CodecError(
                f"outputs have different batch sizes: '{name}' has {array.shape[0]}, "
                f"'{batch[0]}' has {batch[1]}; use the columnar format ('inputs')"
            )
        batch = batch or (name, array.shape[0])
    if len(names) == 1:
        body = {"predictions": _json_ready(arrays[names[0]], as_b64[names[0]])}
    else:
        body = {"predictions": _instances(arrays, as_b64, batch[1] if batch else 0)}
    return orjson.dumps(body, option=_DUMPS_OPTIONS)


def _instances(
    arrays: Mapping[str, np.ndarray], as_b64: Mapping[str, bool], count: int
) -> list[dict[str, Any]]:
    """One object per instance, of each output's row."""
    whole = {name: _json_ready(array, as_b64[name]) for name, array in arrays.items()}
    if not any(isinstance(ready, orjson.Fragment) for ready in whole.values()):
        # Row i of an output made ready whole is what its row i made ready alone would be (a
        # 1-d output's row is its numpy scalar), for a third of the time.
        return [{name: ready[i] for name, ready in whole.items()} for i in range(count)]
    # NaN and infinities are written into a fragment of JSON, which has no rows to take.
    # `[i, ...]` keeps even a single element an array.
    return [
        {name: _json_ready(array[i, ...], as_b64[name]) for name, array in arrays.items()}
        for i in range(count)
    ]


# --- classify / regress ----------------------------------------------------------------------


_FEATURE_KINDS = {
    int: "integers",
    float: "floats",
    bool: "booleans",
    str: "strings",
    dict: "objects",
    list: "nested lists",
    type(None): "nulls",
}


def _feature(name: str, where: str, content: Any) -> feature_pb2.Feature:
    values = content if isinstance(content, list) else [content]
    feature = feature_pb2.Feature()
    if not values:
        return feature  # TF Serving keeps an empty feature with no kind
    kinds = set(map(type, values))
    if kinds <= {str, dict}:
        for value in values:
            if isinstance(value, dict) and not _is_b64_object(value):
                raise CodecError(
                    f"{where}: feature '{name}' has an object that is not "
                    f'{{"b64": "<base64 string>"}}: {_show(value)}'
                )
        feature.bytes_list.value.extend(
            v.encode() if type(v) is str else _b64decode(v, f"{where}: feature '{name}'")
            for v in values
        )
    elif kinds == {float}:
        floats = np.asarray(values, dtype=np.float64)
        outside = ~(np.abs(floats) <= np.finfo(np.float32).max)
        if outside.any():
            raise CodecError(
                f"{where}: feature '{name}': cannot convert {_show(float(floats[outside][0]))} "
                f"to float without loss of precision (out of float32 range)"
            )
        feature.float_list.value.extend(floats.astype(np.float32).tolist())
    elif kinds <= {int, bool}:
        # JSON true / false become 1 / 0 in int64_list, as in TF Serving.
        try:
            ints = np.asarray(values, dtype=np.int64)
        except OverflowError:
            bad = next(v for v in values if not -(2**63) <= v < 2**63)
            raise CodecError(
                f"{where}: feature '{name}': {bad} does not fit int64 (only int64 is supported)"
            ) from None
        feature.int64_list.value.extend(ints.tolist())
    else:
        found = ", ".join(sorted({_FEATURE_KINDS.get(kind, kind.__name__) for kind in kinds}))
        raise CodecError(
            f"{where}: feature '{name}' holds {found}; a feature takes only floats "
            f"(float_list), only integers / booleans (int64_list), or only strings / "
            f'{{"b64": ...}} objects (bytes_list)'
        )
    return feature


def _example(value: Any, where: str) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise CodecError(f"{where} must be a JSON object, got {_json_kind(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        example.features.feature[name].CopyFrom(_feature(name, where, content))
    return example


def examples_to_input(doc: Mapping[str, Any]) -> input_pb2.Input:
    """The tf.Example input of a :classify / :regress body ({"examples": [...], "context"?})."""
    if "examples" not in doc:
        raise CodecError("classify/regress request needs an 'examples' key (a list of objects)")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise CodecError(f"'examples' must be a list of objects, got {_json_kind(examples)}")
    if not examples:
        raise CodecError("'examples' is an empty list: send at least one example")
    result = input_pb2.Input()
    if "context" in doc:
        target = result.example_list_with_context
        target.context.CopyFrom(_example(doc["context"], "'context'"))
    else:
        target = result.example_list
    target.examples.extend(
        _example(example, f"example {index} of 'examples'")
        for index, example in enumerate(examples)
    )
    return result


def _float32_json(value: float) -> Any:
    single = np.float32(value)
    return single if np.isfinite(single) else _nonfinite_fragment(np.asarray(single))


def classify_response_json(response: classification_pb2.ClassificationResponse) -> bytes:
    """{"results": [[[label, score], ...] per example]} as TF Serving writes it."""
    classifications = response.result.classifications
    if not classifications:
        raise CodecError("the model returned no classifications")
    results = [
        [[item.label, _float32_json(item.score)] for item in entry.classes]
        for entry in classifications
    ]
    return orjson.dumps({"results": results}, option=_DUMPS_OPTIONS)


def regress_response_json(response: regression_pb2.RegressionResponse) -> bytes:
    """{"results": [value per example]} as TF Serving writes it."""
    regressions = response.result.regressions
    if not regressions:
        raise CodecError("the model returned no regressions")
    values = np.array([item.value for item in regressions], dtype=np.float32)
    return orjson.dumps({"results": _json_ready(values, False)}, option=_DUMPS_OPTIONS)
