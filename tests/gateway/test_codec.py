"""service.gateway.codec: TF Serving's REST JSON <-> wire tensors, without TensorFlow."""

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

import service.wire as wire
from service.gateway import codec
from service.gateway.codec import CodecError, SignatureInput
from service.gateway.errors import Limit

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = REPO_ROOT.parent / "shared" / "tfserving-testdata"
DT = wire.types_pb2

FLOAT_X = {"x": SignatureInput(DT.DT_FLOAT, (None, 1))}  # half_plus_two's serving_default


def tensor(dtype: int, shape: tuple[int, ...], **values) -> wire.TensorProto:
    proto = wire.TensorProto(dtype=dtype, **values)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def typed(array: np.ndarray, dtype: int) -> wire.TensorProto:
    """The typed *_val form, as TF Serving's gRPC answers carry outputs."""
    field = codec._VALUE_FIELDS[dtype]
    if dtype == DT.DT_HALF:
        values = array.view(np.uint16).astype(np.int32).ravel().tolist()
    elif dtype == DT.DT_STRING:
        values = list(array.ravel())
    else:
        values = array.ravel().tolist()
    return tensor(dtype, array.shape, **{field: values})


def content(array: np.ndarray, dtype: int) -> wire.TensorProto:
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    return tensor(dtype, array.shape, tensor_content=data)


def shape_of(proto: wire.TensorProto) -> list[int]:
    return [dim.size for dim in proto.tensor_shape.dim]


def decode(
    body: bytes | str, specs=FLOAT_X, max_values: Limit | None = None, **options
) -> codec.PredictInputs:
    return codec.predict_inputs(codec.parse_json(body, max_values), specs, **options)


# --- every dtype, both directions ----------------------------------------------------------

DTYPE_CASES = [
    (DT.DT_FLOAT, np.float32, [[0.1, -2.5], [3.0, 1e-7]]),
    (DT.DT_DOUBLE, np.float64, [[0.1, -2.5], [1e300, 5e-324]]),
    (DT.DT_HALF, np.float16, [0.1, -2.5, 65504.0, 6e-08]),
    (DT.DT_INT8, np.int8, [-128, 0, 127]),
    (DT.DT_INT16, np.int16, [-32768, 32767]),
    (DT.DT_INT32, np.int32, [[-(2**31)], [2**31 - 1]]),
    (DT.DT_INT64, np.int64, [-(2**63), 2**63 - 1]),
    (DT.DT_UINT8, np.uint8, [0, 255]),
    (DT.DT_UINT16, np.uint16, [0, 65535]),
    (DT.DT_UINT32, np.uint32, [0, 2**32 - 1]),
    (DT.DT_UINT64, np.uint64, [0, 2**64 - 1]),
    (DT.DT_BOOL, np.bool_, [[True, False], [False, True]]),
]
DTYPE_IDS = [codec.dtype_name(case[0]) for case in DTYPE_CASES]


@pytest.mark.parametrize(("dtype", "np_type", "values"), DTYPE_CASES, ids=DTYPE_IDS)
def test_numeric_dtype_round_trip(dtype: int, np_type, values):
    expected = np.array(values, dtype=np_type)
    inputs = decode(orjson.dumps({"inputs": values}), {"v": SignatureInput(dtype)})
    proto = inputs.tensors["v"]
    assert inputs.columnar
    assert proto.dtype == dtype
    assert shape_of(proto) == list(expected.shape)
    # Numbers travel as raw little-endian bytes, not as typed value lists.
    assert proto.tensor_content == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    assert not proto.float_val and not proto.int_val and not proto.int64_val
    np.testing.assert_array_equal(codec.tensor_to_array(proto), expected)

    for form in (typed, content):
        answer = orjson.loads(codec.predict_response_json({"v": form(expected, dtype)}, True))
        np.testing.assert_array_equal(np.array(answer["outputs"], dtype=np_type), expected)
        if expected.dtype.kind in "iub":  # exact JSON integers / booleans
            assert answer["outputs"] == values


@pytest.mark.parametrize(
    ("dtype", "np_type", "value", "text"),
    [
        (DT.DT_FLOAT, np.float32, 0.1, b"0.1"),
        (DT.DT_FLOAT, np.float32, 3.5, b"3.5"),
        (DT.DT_FLOAT, np.float32, 3.0, b"3.0"),
        (DT.DT_FLOAT, np.float32, 1 / 3, b"0.33333334"),
        (DT.DT_FLOAT, np.float32, 16777216.0, b"16777216.0"),
        (DT.DT_DOUBLE, np.float64, 0.1, b"0.1"),
        (DT.DT_DOUBLE, np.float64, 1 / 3, b"0.3333333333333333"),
        (DT.DT_HALF, np.float16, 0.1, b"0.1"),
        (DT.DT_HALF, np.float16, 65504.0, b"65500.0"),
        (DT.DT_INT64, np.int64, -(2**63), b"-9223372036854775808"),
        (DT.DT_UINT64, np.uint64, 2**64 - 1, b"18446744073709551615"),
        (DT.DT_BOOL, np.bool_, True, b"true"),
    ],
)
def test_number_text_is_the_shortest_that_reads_back(dtype, np_type, value, text):
    array = np.array([value], dtype=np_type)
    for form in (typed, content):
        body = codec.predict_response_json({"y": form(array, dtype)}, True)
        assert body == b'{"outputs":[' + text + b"]}"
        if array.dtype.kind == "f":
            assert np.array(float(text), dtype=np_type) == array[0]


def test_non_finite_floats_are_written_like_tf_serving():
    array = np.array([[np.nan, 1.5], [np.inf, -np.inf]], dtype=np.float32)
    for form in (typed, content):
        body = codec.predict_response_json({"y": form(array, DT.DT_FLOAT)}, False)
        assert body == b'{"predictions":[[NaN,1.5],[Infinity,-Infinity]]}'
    scalar = codec.predict_response_json({"y": typed(np.array(np.nan, np.float64), 2)}, True)
    assert scalar == b'{"outputs":NaN}'
    loaded = codec.tensor_to_json(content(array, DT.DT_FLOAT))
    assert np.isnan(loaded[0][0]) and loaded[1] == [float("inf"), float("-inf")]


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        ("text", [b"caf\xc3\xa9", b""], ["caf\u00e9", ""]),
        # TF Serving's rule: DT_STRING outputs named *_bytes are always base64.
        ("image_bytes", [b"caf\xc3\xa9", b"\x00"], [{"b64": "Y2Fmw6k="}, {"b64": "AA=="}]),
        # Not UTF-8: base64 rather than invalid JSON (TF Serving would emit the raw bytes).
        ("text", [b"ok", b"\xff\xfe"], ["ok", {"b64": "//4="}]),
    ],
)
def test_string_outputs(name: str, values: list[bytes], expected: list):
    proto = tensor(DT.DT_STRING, (len(values),), string_val=values)
    assert codec.tensor_to_json(proto, name) == expected
    body = orjson.loads(codec.predict_response_json({name: proto}, True))
    assert body == {"outputs": expected}


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("text", ["caf\u00e9", "", "\u2603 snow"]),
        ("raw_bytes", [{"b64": "AP8="}, {"b64": base64.b64encode(b"caf\xc3\xa9").decode()}]),
    ],
)
def test_string_round_trip(name: str, values: list):
    proto = decode(orjson.dumps({"inputs": {name: values}}), {name: SignatureInput(DT.DT_STRING)})
    answer = orjson.loads(codec.predict_response_json(proto.tensors, True))
    assert answer == {"outputs": values}


def test_string_inputs_text_and_base64():
    specs = {"s": SignatureInput(DT.DT_STRING)}
    raw = bytes(range(256))
    body = {"instances": [["caf\u00e9", {"b64": base64.b64encode(raw).decode()}], ["", "x"]]}
    proto = decode(orjson.dumps(body), specs).tensors["s"]
    assert proto.dtype == DT.DT_STRING and shape_of(proto) == [2, 2]
    assert list(proto.string_val) == ["caf\u00e9".encode(), raw, b"", b"x"]
    # Unpadded base64 is accepted, as absl::Base64Unescape does.
    unpadded = decode(b'{"inputs": {"b64": "YWI"}}', specs).tensors["s"]
    assert list(unpadded.string_val) == [b"ab"] and shape_of(unpadded) == []


# --- typed values vs tensor_content, cross-checked with TensorFlow ---------------------------

ENCODINGS = {
    "content": lambda a, dt: content(a, dt),
    "typed": lambda a, dt: typed(a, dt),
    "one_value_broadcast": lambda a, dt: typed(a.ravel()[:1], dt),
    "short_list_padded": lambda a, dt: typed(a.ravel()[:2], dt),
    "no_values_zeros": lambda a, dt: typed(a.ravel()[:0], dt),
}


def _reshape(proto: wire.TensorProto, shape: tuple[int, ...]) -> wire.TensorProto:
    del proto.tensor_shape.dim[:]
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize(("dtype", "np_type", "values"), DTYPE_CASES, ids=DTYPE_IDS)
def test_decoding_matches_tf_make_ndarray(encoding: str, dtype: int, np_type, values):
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    array = np.array(values, dtype=np_type).reshape(-1)
    array = np.concatenate([array, array[::-1]]).reshape(2, -1)  # at least 4 elements, 2-D
    ours = _reshape(ENCODINGS[encoding](array, dtype), array.shape)
    official = tensor_pb2.TensorProto.FromString(ours.SerializeToString())
    expected = tf.make_ndarray(official)
    decoded = codec.tensor_to_array(ours)
    assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("encoding", ["typed", "one_value_broadcast", "short_list_padded"])
def test_string_decoding_matches_tf_make_ndarray(encoding: str):
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    array = np.array([[b"a", b"bc"], [b"\xff", b""]], dtype=object)
    ours = _reshape(ENCODINGS[encoding](array, DT.DT_STRING), array.shape)
    expected = tf.make_ndarray(tensor_pb2.TensorProto.FromString(ours.SerializeToString()))
    assert codec.tensor_to_array(ours).tolist() == expected.tolist()


def test_tensors_we_build_are_what_tensorflow_reads():
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    specs = {
        "f": SignatureInput(DT.DT_FLOAT),
        "i": SignatureInput(DT.DT_INT8),
        "b": SignatureInput(DT.DT_BOOL),
        "s": SignatureInput(DT.DT_STRING),
    }
    body = {
        "instances": [
            {"f": [1, 2.5], "i": -3, "b": True, "s": "a"},
            {"f": [0.1, 7], "i": 4, "b": False, "s": {"b64": "/w=="}},
        ]
    }
    tensors = decode(orjson.dumps(body), specs).tensors
    read = {
        name: tf.make_ndarray(tensor_pb2.TensorProto.FromString(t.SerializeToString()))
        for name, t in tensors.items()
    }
    np.testing.assert_array_equal(read["f"], np.array([[1, 2.5], [0.1, 7]], np.float32))
    np.testing.assert_array_equal(read["i"], np.array([-3, 4], np.int8))
    np.testing.assert_array_equal(read["b"], [True, False])
    assert read["s"].tolist() == [b"a", b"\xff"]


# --- half_plus_two, as TF Serving answers it -----------------------------------------------


def _half_plus_two(proto: wire.TensorProto) -> wire.TensorProto:
    """What the model server would send back: y = 0.5 x + 2, as typed float_val."""
    x = codec.tensor_to_array(proto)
    return typed((x * np.float32(0.5) + np.float32(2)).astype(np.float32), DT.DT_FLOAT)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"instances": [2.0, 3.0, 4.0]}', b'{"predictions":[3.0,3.5,4.0]}'),
        (b'{"inputs": [2.0, 3.0, 4.0]}', b'{"outputs":[3.0,3.5,4.0]}'),
        (b'{"instances": [[1.0], [2.0], [5.0]]}', b'{"predictions":[[2.5],[3.0],[4.5]]}'),
        (b'{"instances": [{"x": [1.0]}, {"x": [2]}]}', b'{"predictions":[[2.5],[3.0]]}'),
        (b'{"inputs": {"x": [[1.0], [2.0]]}}', b'{"outputs":[[2.5],[3.0]]}'),
        (b'{"signature_name": "serving_default", "inputs": 2}', b'{"outputs":3.0}'),
    ],
)
def test_half_plus_two_predict(body: bytes, expected: bytes):
    inputs = decode(body)
    outputs = {"y": _half_plus_two(inputs.tensors["x"])}
    assert codec.predict_response_json(outputs, inputs.columnar) == expected


def test_shape_check_tolerates_size_1_dimensions_as_tf_serving_does():
    # TF Serving feeds a [3] tensor to the [-1, 1] input, so the check ignores size-1 dims.
    assert shape_of(decode(b'{"instances": [2.0, 3.0, 4.0]}', check_shapes=True).tensors["x"]) == [
        3
    ]
    ok = decode(b'{"instances": [[2.0], [3.0]]}', check_shapes=True).tensors["x"]
    assert shape_of(ok) == [2, 1]
    with pytest.raises(CodecError) as caught:
        decode(b'{"instances": [[2.0, 3.0], [4.0, 5.0]]}', check_shapes=True)
    assert "input 'x'" in caught.value.message and "[2, 2]" in caught.value.message
    assert "[-1, 1]" in caught.value.message


DIGIT_IMAGE = {"image": SignatureInput(DT.DT_FLOAT, (None, 8, 8, 1))}


@pytest.mark.parametrize(
    ("body", "specs", "restorable"),
    [
        (b'{"instances": [2.0, 3.0, 4.0]}', FLOAT_X, {"x": (3, 1)}),
        (b'{"instances": [[2.0], [3.0]]}', FLOAT_X, {}),
        (b'{"inputs": 2.0}', FLOAT_X, {"x": (1, 1)}),
        (orjson.dumps({"instances": [[[0.0] * 8] * 8]}), DIGIT_IMAGE, {"image": (1, 8, 8, 1)}),
        (orjson.dumps({"inputs": [[0.0] * 8] * 8}), DIGIT_IMAGE, {"image": (1, 8, 8, 1)}),
        (orjson.dumps({"instances": [[[0.0] * 8] * 8] * 2}), DIGIT_IMAGE, {"image": (2, 8, 8, 1)}),
        (orjson.dumps({"instances": [[[[0.0]] * 8] * 8]}), DIGIT_IMAGE, {}),
        (orjson.dumps({"inputs": [[[[[0.0]]] * 8] * 8]}), DIGIT_IMAGE, {"image": (1, 8, 8, 1)}),
        (b'{"inputs": ' + b"[" * 60 + b"1.0" + b"]" * 60 + b"}", FLOAT_X, {"x": (1, 1)}),
    ],
    ids=["3", "2x1", "scalar", "8x8-row", "8x8", "2x8x8", "1x8x8x1", "8x8x1x1", "60-dims"],
)
def test_a_shape_that_fits_once_size_1_dims_are_ignored_can_be_restored(
    body: bytes, specs, restorable: dict
):
    inputs = decode(body, specs, check_shapes=True)
    assert inputs.restorable == restorable
    for name, shape in restorable.items():
        codec.set_shape(inputs.tensors[name], shape)
        assert codec.tensor_to_array(inputs.tensors[name]).shape == shape


def test_half_plus_two_classify_and_regress():
    doc = codec.parse_json(b'{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}')
    assert codec.request_signature_name(doc) == "classify_x_to_y"
    model_input = codec.examples_to_input(doc)
    assert model_input.WhichOneof("kind") == "example_list"
    [example] = model_input.example_list.examples
    assert list(example.features.feature["x"].float_list.value) == [2.0]
    x = example.features.feature["x"].float_list.value[0]

    classified = wire.ClassificationResponse()
    classified.result.classifications.add().classes.add(label="", score=0.5 * x + 2)
    assert codec.classify_response_json(classified) == b'{"results":[[["",3.0]]]}'

    regressed = wire.RegressionResponse()
    regressed.result.regressions.add(value=0.5 * x + 2)
    assert codec.regress_response_json(regressed) == b'{"results":[3.0]}'


def test_input_specs_from_signature():
    signature = wire.SignatureDef(method_name="tensorflow/serving/predict")
    signature.inputs["x"].dtype = DT.DT_FLOAT
    signature.inputs["x"].tensor_shape.dim.add(size=-1)
    signature.inputs["x"].tensor_shape.dim.add(size=1)
    signature.inputs["examples"].dtype = DT.DT_STRING
    signature.inputs["examples"].tensor_shape.unknown_rank = True
    assert codec.signature_input_specs(signature) == {
        "x": SignatureInput(DT.DT_FLOAT, (None, 1)),
        "examples": SignatureInput(DT.DT_STRING, None),
    }


@pytest.mark.skipif(not TESTDATA.exists(), reason="../shared/tfserving-testdata is absent")
def test_input_specs_from_tf_serving_metadata():
    from google.protobuf import json_format

    metadata = json.loads((TESTDATA / "half_plus_two_model_metadata.json").read_text())
    signatures = json_format.ParseDict(
        metadata["metadata"]["signature_def"], wire.SignatureDefMap()
    )
    specs = codec.signature_input_specs(signatures.signature_def["serving_default"])
    assert specs == FLOAT_X
    classify = codec.signature_input_specs(signatures.signature_def["classify_x_to_y"])
    assert classify == {"inputs": SignatureInput(DT.DT_STRING, None)}


@pytest.mark.skipif(not TESTDATA.exists(), reason="../shared/tfserving-testdata is absent")
@pytest.mark.parametrize(
    "folder", ["saved_model_half_plus_two_cpu", "saved_model_half_plus_two_tf2_cpu"]
)
def test_real_half_plus_two_savedmodel(folder: str):
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    model = tf.saved_model.load(str(TESTDATA / folder / "00000123"))
    serving = model.signatures["serving_default"]
    inputs = decode(b'{"instances": [2.0, 3.0, 4.0]}')
    x = tf.make_ndarray(tensor_pb2.TensorProto.FromString(inputs.tensors["x"].SerializeToString()))
    y = serving(x=tf.constant(x))["y"].numpy()
    outputs = {"y": wire.TensorProto.FromString(tf.make_tensor_proto(y).SerializeToString())}
    assert codec.predict_response_json(outputs, inputs.columnar) == (
        b'{"predictions":[3.0,3.5,4.0]}'
    )


# --- more response shapes ------------------------------------------------------------------


def test_row_format_with_several_outputs_gives_an_object_per_instance():
    outputs = {
        "scores": typed(np.array([[0.1, 0.9], [0.8, 0.2]], np.float32), DT.DT_FLOAT),
        "class_id": typed(np.array([1, 0], np.int64), DT.DT_INT64),
        "label": typed(np.array([b"dog", b"cat"], dtype=object), DT.DT_STRING),
    }
    body = codec.predict_response_json(outputs, False)
    assert body == (
        b'{"predictions":[{"class_id":1,"label":"dog","scores":[0.1,0.9]},'
        b'{"class_id":0,"label":"cat","scores":[0.8,0.2]}]}'
    )
    columnar = orjson.loads(codec.predict_response_json(outputs, True))
    assert columnar == {
        "outputs": {"class_id": [1, 0], "label": ["dog", "cat"], "scores": [[0.1, 0.9], [0.8, 0.2]]}
    }


def test_tensor_to_json_agrees_with_the_response_body():
    array = np.array([[0.1, 1 / 3], [1e-8, 12345.678]], dtype=np.float32)
    for form in (typed, content):
        as_python = codec.tensor_to_json(form(array, DT.DT_FLOAT))
        assert as_python == [[0.1, 0.33333334], [1e-08, 12345.678]]
        body = codec.predict_response_json({"y": form(array, DT.DT_FLOAT)}, True)
        assert json.loads(body)["outputs"] == as_python


def test_empty_dimensions():
    inputs = decode(b'{"inputs": [[], []]}', {"v": SignatureInput(DT.DT_INT32)})
    assert shape_of(inputs.tensors["v"]) == [2, 0]
    out = tensor(DT.DT_FLOAT, (2, 0))
    assert codec.predict_response_json({"y": out}, False) == b'{"predictions":[[],[]]}'


def test_big_input_goes_through_in_bulk():
    array = np.random.default_rng(0).random((500, 784), dtype=np.float32)
    body = orjson.dumps({"instances": array}, option=orjson.OPT_SERIALIZE_NUMPY)
    proto = decode(body, {"image": SignatureInput(DT.DT_FLOAT, (None, 784))}).tensors["image"]
    np.testing.assert_array_equal(codec.tensor_to_array(proto), array)
    echoed = codec.predict_response_json({"image": proto}, False)
    np.testing.assert_array_equal(np.array(orjson.loads(echoed)["predictions"], np.float32), array)


# --- malformed requests: each error names its culprit --------------------------------------

TWO = {"a": SignatureInput(DT.DT_FLOAT), "b": SignatureInput(DT.DT_INT32)}
INT8 = {"n": SignatureInput(DT.DT_INT8)}
INT32 = {"n": SignatureInput(DT.DT_INT32)}
BOOL = {"flag": SignatureInput(DT.DT_BOOL)}
STRING = {"s": SignatureInput(DT.DT_STRING)}

MALFORMED = [
    # (body, specs, options, words the message must contain)
    (b"", FLOAT_X, {}, ["JSON Parse error", "empty"]),
    (
        b'{"inputs": [[1, 2], {"a": 3}]}',
        FLOAT_X,
        {"max_values": Limit(5, "NNSERVE_MAX_JSON_VALUES")},
        ["JSON body has 7 values", "limit of 5 (NNSERVE_MAX_JSON_VALUES)"],
    ),
    (b'{"inputs": [1, 2}', FLOAT_X, {}, ["JSON Parse error", "column"]),
    (b"[1, 2]", FLOAT_X, {}, ["[1,2]", "object"]),
    (b'{"inputs": [1.0, NaN]}', FLOAT_X, {}, ["NaN", "Infinity", "not valid JSON"]),
    (b'{"inputs": [-Infinity]}', FLOAT_X, {}, ["NaN", "Infinity", "column 13"]),
    (b'{"inputs": [1], "instances": [1]}', FLOAT_X, {}, ["'instances'", "'inputs'", "only one"]),
    (b'{"signature_name": "s"}', FLOAT_X, {}, ["'instances'", "'inputs'"]),
    (b'{"instances": {"x": 1}}', FLOAT_X, {}, ["'instances'", "must be a list", "object"]),
    (b'{"instances": []}', FLOAT_X, {}, ["'instances'", "empty"]),
    (b'{"signature_name": 3, "inputs": [1]}', FLOAT_X, {}, ["'signature_name'", "number"]),
    (b'{"instances": [[1, 2], [3]]}', FLOAT_X, {}, ["input 'x'", "instance 1", "[1]", "[2]"]),
    (b'{"inputs": [[1, 2], [3]]}', FLOAT_X, {}, ["input 'x'", "ragged", "dimension 1", "2 and 1"]),
    (b'{"inputs": [1, [2, 3]]}', FLOAT_X, {}, ["input 'x'", "ragged", "mixed in dimension 1"]),
    (b'{"inputs": [1.0, "abc"]}', FLOAT_X, {}, ["input 'x'", "DT_FLOAT", '"abc"', "string"]),
    (b'{"inputs": [1.0, true]}', FLOAT_X, {}, ["input 'x'", "DT_FLOAT", "true"]),
    (b'{"inputs": [1.0, null]}', FLOAT_X, {}, ["input 'x'", "DT_FLOAT", "null"]),
    (b'{"inputs": {"n": [1, 1.5]}}', INT32, {}, ["input 'n'", "DT_INT32", "1.5"]),
    (b'{"inputs": [1, true]}', INT32, {}, ["input 'n'", "DT_INT32", "true"]),
    (b'{"inputs": [true, 1]}', BOOL, {}, ["input 'flag'", "DT_BOOL", "number 1"]),
    (b'{"inputs": [1, 300]}', INT8, {}, ["input 'n'", "300", "DT_INT8", "127"]),
    (b'{"inputs": [9223372036854775808]}', INT32, {}, ["input 'n'", "9223372036854775808"]),
    (b'{"inputs": [1e39]}', FLOAT_X, {}, ["input 'x'", "1e+39", "DT_FLOAT"]),
    (b'{"inputs": [16777217]}', FLOAT_X, {}, ["input 'x'", "16777217", "precision"]),
    # Integers beyond 64 bits: orjson reads them as floats, the integer rules must still hold.
    (b'{"inputs": [18446744073709551616]}', FLOAT_X, {}, ["18446744073709551616", "precision"]),
    (b'{"inputs": [-9223372036854775809]}', FLOAT_X, {}, ["-9223372036854775809", "precision"]),
    (b'{"inputs": [18446744073709551616]}', INT32, {}, ["18446744073709551616", "DT_INT32"]),
    (
        b'{"inputs": ' + b"[" * 1000 + b"12345678901234567890" + b"]" * 1000 + b"}",
        FLOAT_X,
        {},
        ["JSON Parse error", "nested too deeply"],
    ),
    (b'{"inputs": ["a", 3]}', STRING, {}, ["input 's'", "DT_STRING", "number 3"]),
    (b'{"inputs": [{"b64": "not base64!"}]}', STRING, {}, ["input 's'", "base64", "not base64!"]),
    (b'{"inputs": [{"b64": "YQ==", "x": 1}]}', STRING, {}, ["input 's'", '"b64"', '"x":1']),
    (b'{"inputs": [{"b64": 12}]}', STRING, {}, ["input 's'", "b64", "12"]),
    (b'{"instances": [1.0, 2.0]}', TWO, {}, ["plain values", "2 inputs", "a, b"]),
    (b'{"inputs": [1.0, 2.0]}', TWO, {}, ["'inputs'", "2 inputs", "a, b"]),
    (b'{"instances": [{"a": 1, "b": 2}, {"a": 1}]}', TWO, {}, ["instance 1", "missing", "b"]),
    (b'{"instances": [{"a": 1, "b": 2, "c": 3}]}', TWO, {}, ["instance 0", "unknown", "c"]),
    (b'{"instances": [{"a": 1, "b": 2}, [1]]}', TWO, {}, ["instance 1", "list", "object"]),
    (b'{"instances": [1.0, {"x": 1.0}]}', FLOAT_X, {}, ["instance 1", "object", "a number"]),
    (
        b'{"instances": [{"a": 1, "b": 2}, {"b64": "YQ=="}]}',
        TWO,
        {},
        ["instance 1", '{"b64": ...} value'],
    ),
    (b'{"inputs": {"a": [1.0]}}', TWO, {}, ["'inputs'", "missing", "b"]),
    (b'{"inputs": {"a": [1.0], "b": [1.5]}}', TWO, {}, ["input 'b'", "DT_INT32", "1.5"]),
    (b'{"inputs": [1]}', {"c": SignatureInput(DT.DT_COMPLEX64)}, {}, ["input 'c'", "DT_COMPLEX64"]),
    (
        b'{"inputs": [[1, 2, 3], [4, 5, 6]]}',
        FLOAT_X,
        {"max_tensor_elements": Limit(5, "NNSERVE_MAX_TENSOR_ELEMENTS")},
        ["input 'x' has 6 elements (shape [2, 3])", "limit of 5 (NNSERVE_MAX_TENSOR_ELEMENTS)"],
    ),
    (
        b'{"inputs": {"a": [1, 2, 3], "b": [4, 5]}}',
        TWO,
        {
            "max_tensor_elements": Limit(3, "T"),
            "max_request_elements": Limit(4, "NNSERVE_MAX_REQUEST_ELEMENTS"),
        },
        ["5 elements together", "limit of 4 (NNSERVE_MAX_REQUEST_ELEMENTS)"],
    ),
    (
        b'{"instances": [{"a": [1, 2], "b": 1}, {"a": [3, 4], "b": 2}]}',
        TWO,
        {"max_request_elements": Limit(5, "R")},
        ["6 elements together", "limit of 5 (R)"],
    ),
    (
        b'{"inputs": [[1, 2], [3, 4]]}',
        FLOAT_X,
        {"check_shapes": True},
        ["input 'x'", "[2, 2]", "[-1, 1]"],
    ),
    (b'{"inputs": [1]}', {}, {}, ["no inputs"]),
]


@pytest.mark.parametrize(
    ("body", "specs", "options", "words"), MALFORMED, ids=[str(c[0])[:60] for c in MALFORMED]
)
def test_malformed_request_names_the_culprit(body: bytes, specs, options, words: list[str]):
    with pytest.raises(CodecError) as caught:
        decode(body, specs, **options)
    assert str(caught.value) == caught.value.message
    for word in words:
        assert word in caught.value.message


MALFORMED_EXAMPLES = [
    ({}, ["'examples'"]),
    ({"examples": {"x": 1}}, ["'examples'", "list", "object"]),
    ({"examples": []}, ["'examples'", "empty"]),
    ({"examples": [{"x": 1.0}, [1.0]]}, ["example 1", "object", "list"]),
    ({"examples": [{"x": [1, 2.5]}]}, ["feature 'x'", "example 0", "integers", "floats"]),
    ({"examples": [{"x": [[1.0]]}]}, ["feature 'x'", "nested lists"]),
    ({"examples": [{"x": None}]}, ["feature 'x'", "nulls"]),
    ({"examples": [{"x": {"a": 1}}]}, ["feature 'x'", "b64", '{"a":1}']),
    ({"examples": [{"x": {"b64": "%%%"}}]}, ["feature 'x'", "base64"]),
    ({"examples": [{"x": 1e39}]}, ["feature 'x'", "1e+39", "float32 range"]),
    ({"examples": [{"x": 2**63}]}, ["feature 'x'", "int64", str(2**63)]),
    ({"examples": [{"x": 1.0}], "context": [1]}, ["'context'", "object", "list"]),
]


@pytest.mark.parametrize(("doc", "words"), MALFORMED_EXAMPLES, ids=lambda v: str(v)[:50])
def test_malformed_examples_name_the_culprit(doc: dict, words: list[str]):
    with pytest.raises(CodecError) as caught:
        codec.examples_to_input(doc)
    for word in words:
        assert word in caught.value.message


def test_examples_feature_kinds_and_context():
    doc = {
        "context": {"user": "u1"},
        "examples": [
            {"f": 1.5, "fs": [0.5, 2.0], "i": 3, "flags": [True, False, 7], "s": "caf\u00e9"},
            {"b": {"b64": "AP8="}, "mixed_bytes": ["a", {"b64": "Yg=="}], "empty": []},
        ],
    }
    model_input = codec.examples_to_input(doc)
    assert model_input.WhichOneof("kind") == "example_list_with_context"
    listed = model_input.example_list_with_context
    assert list(listed.context.features.feature["user"].bytes_list.value) == [b"u1"]
    first, second = (e.features.feature for e in listed.examples)
    assert list(first["f"].float_list.value) == [1.5]
    assert list(first["fs"].float_list.value) == [0.5, 2.0]
    assert list(first["i"].int64_list.value) == [3]
    assert list(first["flags"].int64_list.value) == [1, 0, 7]
    assert list(first["s"].bytes_list.value) == ["caf\u00e9".encode()]
    assert list(second["b"].bytes_list.value) == [b"\x00\xff"]
    assert list(second["mixed_bytes"].bytes_list.value) == [b"a", b"b"]
    assert second["empty"].WhichOneof("kind") is None


def test_examples_cross_check_with_tensorflow():
    import tensorflow as tf
    from tensorflow_serving.apis import input_pb2

    model_input = codec.examples_to_input({"examples": [{"x": 2.0, "n": [1, 2], "s": "t"}]})
    official = input_pb2.Input.FromString(model_input.SerializeToString())
    [serialized] = [e.SerializeToString() for e in official.example_list.examples]
    parsed = tf.io.parse_single_example(
        serialized,
        {
            "x": tf.io.FixedLenFeature([1], tf.float32),
            "n": tf.io.FixedLenFeature([2], tf.int64),
            "s": tf.io.FixedLenFeature([], tf.string),
        },
    )
    assert parsed["x"].numpy().tolist() == [2.0]
    assert parsed["n"].numpy().tolist() == [1, 2]
    assert parsed["s"].numpy() == b"t"


MALFORMED_OUTPUTS = [
    ({}, False, ["no outputs"]),
    ({"y": tensor(DT.DT_FLOAT, (), float_val=[1.0])}, False, ["output 'y'", "scalar", "columnar"]),
    (
        {"a": tensor(DT.DT_FLOAT, (2,), float_val=[1, 2]), "b": tensor(DT.DT_FLOAT, (3,))},
        False,
        ["batch sizes", "'b' has 3", "'a' has 2"],
    ),
    ({"y": tensor(DT.DT_FLOAT, (2,), tensor_content=b"\0" * 7)}, True, ["7 bytes", "8"]),
    ({"y": tensor(DT.DT_FLOAT, (2,), float_val=[1, 2, 3])}, True, ["3 values", "[2]"]),
    ({"y": tensor(DT.DT_COMPLEX64, (1,), scomplex_val=[1, 2])}, True, ["DT_COMPLEX64"]),
    ({"y": tensor(DT.DT_FLOAT, (-1,))}, True, ["[-1]", "unknown"]),
    ({"y": wire.TensorProto(dtype=1, tensor_shape={"unknown_rank": True})}, True, ["rank"]),
    ({"s": tensor(DT.DT_STRING, (1,), tensor_content=b"\x01a")}, True, ["DT_STRING"]),
]


@pytest.mark.parametrize(("outputs", "columnar", "words"), MALFORMED_OUTPUTS)
def test_malformed_outputs_name_the_culprit(outputs, columnar: bool, words: list[str]):
    with pytest.raises(CodecError) as caught:
        codec.predict_response_json(outputs, columnar)
    for word in words:
        assert word in caught.value.message


def test_empty_classify_and_regress_results_are_errors():
    with pytest.raises(CodecError, match="no classifications"):
        codec.classify_response_json(wire.ClassificationResponse())
    with pytest.raises(CodecError, match="no regressions"):
        codec.regress_response_json(wire.RegressionResponse())


def test_classify_scores_use_float32_text():
    response = wire.ClassificationResponse()
    classes = response.result.classifications.add()
    classes.classes.add(label="cat", score=0.1)
    classes.classes.add(label="dog", score=float("nan"))
    response.result.classifications.add().classes.add(label="cat", score=0.9)
    assert codec.classify_response_json(response) == (
        b'{"results":[[["cat",0.1],["dog",NaN]],[["cat",0.9]]]}'
    )


def test_codec_import_leaves_tensorflow_out():
    probe = (
        "import json, sys; import service.gateway.codec; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []
