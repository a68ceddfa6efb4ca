"""Our wire messages against the official TensorFlow / TensorFlow Serving ones.

Two independent guards: a descriptor walk (every field of every official message exists in ours
with the same number, type, label, oneof, options, and nothing extra), and byte-level round
trips of fully populated messages in both directions.
"""

import importlib

import numpy as np
import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    text_format,
    unknown_fields,
)
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

import service.wire as wire

PREFIX = wire.WIRE_PREFIX
GEN_FILE_PREFIX = "service/wire/gen/"

OFFICIAL_MODULES = (
    "tensorflow.core.framework.types_pb2",
    "tensorflow.core.framework.tensor_shape_pb2",
    "tensorflow.core.framework.resource_handle_pb2",
    "tensorflow.core.framework.tensor_pb2",
    "tensorflow.core.protobuf.struct_pb2",
    "tensorflow.core.protobuf.meta_graph_pb2",
    "tensorflow.core.example.feature_pb2",
    "tensorflow.core.example.example_pb2",
    "tensorflow_serving.apis.model_pb2",
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.status_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.input_pb2",
    "tensorflow_serving.apis.classification_pb2",
    "tensorflow_serving.apis.regression_pb2",
    "tensorflow_serving.apis.inference_pb2",
    "tensorflow_serving.apis.model_management_pb2",
    "tensorflow_serving.config.model_server_config_pb2",
)

# Upstream messages of mirrored files that are left out on purpose: they describe whole graphs
# (meta_graph.proto) and never cross the serving API.
NOT_MIRRORED = {"tensorflow.MetaGraphDef", "tensorflow.CollectionDef", "tensorflow.AssetFileDef"}

# What the gateway relies on, by real name: dropping one must fail loudly.
REQUIRED = [
    "tensorflow.DataType",
    "tensorflow.TensorShapeProto",
    "tensorflow.TensorProto",
    "tensorflow.ResourceHandleProto",
    "tensorflow.VariantTensorDataProto",
    "tensorflow.TensorInfo",
    "tensorflow.TensorInfo.CooSparse",
    "tensorflow.TensorInfo.CompositeTensor",
    "tensorflow.TypeSpecProto",
    "tensorflow.StructuredValue",
    "tensorflow.SignatureDef",
    "tensorflow.Example",
    "tensorflow.Features",
    "tensorflow.Feature",
    "tensorflow.BytesList",
    "tensorflow.FloatList",
    "tensorflow.Int64List",
    "tensorflow.error.Code",
    "tensorflow.serving.ModelSpec",
    "tensorflow.serving.PredictRequest",
    "tensorflow.serving.PredictResponse",
    "tensorflow.serving.GetModelStatusRequest",
    "tensorflow.serving.GetModelStatusResponse",
    "tensorflow.serving.ModelVersionStatus",
    "tensorflow.serving.ModelVersionStatus.State",
    "tensorflow.serving.StatusProto",
    "tensorflow.serving.GetModelMetadataRequest",
    "tensorflow.serving.GetModelMetadataResponse",
    "tensorflow.serving.SignatureDefMap",
    "tensorflow.serving.Input",
    "tensorflow.serving.ExampleList",
    "tensorflow.serving.ExampleListWithContext",
    "tensorflow.serving.ClassificationRequest",
    "tensorflow.serving.ClassificationResponse",
    "tensorflow.serving.ClassificationResult",
    "tensorflow.serving.Classifications",
    "tensorflow.serving.Class",
    "tensorflow.serving.RegressionRequest",
    "tensorflow.serving.RegressionResponse",
    "tensorflow.serving.RegressionResult",
    "tensorflow.serving.Regression",
    "tensorflow.serving.MultiInferenceRequest",
    "tensorflow.serving.MultiInferenceResponse",
    "tensorflow.serving.InferenceTask",
    "tensorflow.serving.InferenceResult",
    "tensorflow.serving.ReloadConfigRequest",
    "tensorflow.serving.ReloadConfigResponse",
    "tensorflow.serving.ModelServerConfig",
]


def _nested(desc: Descriptor):
    yield desc
    for nested in desc.nested_types:
        yield from _nested(nested)


OUR_MESSAGES: dict[str, Descriptor] = {
    d.full_name: d
    for module in wire.GENERATED_MODULES
    for top in module.DESCRIPTOR.message_types_by_name.values()
    for d in _nested(top)
}
OUR_ENUMS: dict[str, EnumDescriptor] = {
    **{
        e.full_name: e
        for module in wire.GENERATED_MODULES
        for e in module.DESCRIPTOR.enum_types_by_name.values()
    },
    **{e.full_name: e for d in OUR_MESSAGES.values() for e in d.enum_types},
}
# Map entries are checked through their map fields and the descriptor walk, not populated alone.
POPULATABLE = sorted(n for n, d in OUR_MESSAGES.items() if not d.GetOptions().map_entry)


def upstream(name: str) -> str:
    assert name.startswith(PREFIX), name
    return name[len(PREFIX) :]


@pytest.fixture(scope="module")
def pool() -> descriptor_pool.DescriptorPool:
    """The default pool, with TensorFlow's and TF Serving's official messages loaded."""
    for module in OFFICIAL_MODULES:
        importlib.import_module(module)
    return descriptor_pool.Default()


# --- descriptor walk -------------------------------------------------------------------------


def _type_name(name: str, strip: str) -> str:
    return "." + name[1 + len(strip) :] if strip and name.startswith("." + strip) else name


def message_facts(desc: Descriptor, strip: str = "") -> dict:
    """Everything about a message that decides its wire format (and its generated API)."""
    proto = descriptor_pb2.DescriptorProto()
    desc.CopyToProto(proto)
    fields = {}
    for f in proto.field:
        fields[f.name] = {
            "number": f.number,
            "label": descriptor_pb2.FieldDescriptorProto.Label.Name(f.label),
            "type": descriptor_pb2.FieldDescriptorProto.Type.Name(f.type),
            "type_name": _type_name(f.type_name, strip),
            "oneof": proto.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None,
            "proto3_optional": f.proto3_optional,
            "json_name": f.json_name,
            "options": text_format.MessageToString(f.options, as_one_line=True),
        }
    for field in desc.fields:  # effective semantics, as the runtime sees them
        fields[field.name]["packed"] = field.is_packed
        fields[field.name]["has_presence"] = field.has_presence
        fields[field.name]["repeated"] = field.is_repeated
    return {
        "fields": fields,
        "oneofs": {o.name: sorted(f.name for f in o.fields) for o in desc.oneofs},
        "nested_types": sorted(n.name for n in desc.nested_types),
        "enums": sorted(e.name for e in desc.enum_types),
        "options": text_format.MessageToString(desc.GetOptions(), as_one_line=True),
    }


def enum_facts(desc: EnumDescriptor) -> dict:
    return {
        "values": {
            v.name: (v.number, text_format.MessageToString(v.GetOptions(), as_one_line=True))
            for v in desc.values
        },
        "options": text_format.MessageToString(desc.GetOptions(), as_one_line=True),
    }


def fact_differences(ours: dict, theirs: dict) -> list[tuple]:
    """(field, attribute, ours, theirs) for every disagreement; empty when the mirror is exact."""
    diffs: list[tuple] = []
    for name in sorted(set(ours["fields"]) | set(theirs["fields"])):
        a, b = ours["fields"].get(name), theirs["fields"].get(name)
        if a is None or b is None:
            diffs.append((name, "missing in ours" if a is None else "extra in ours"))
            continue
        diffs += [(name, key, a[key], b[key]) for key in sorted(a) if a[key] != b[key]]
    diffs += [
        (key, ours[key], theirs[key])
        for key in sorted(ours)
        if key != "fields" and ours[key] != theirs[key]
    ]
    return diffs


def test_walk_found_everything():
    # Guards the parametrization below against silently testing nothing.
    assert len(OUR_MESSAGES) > 60
    assert len(OUR_ENUMS) >= 8


@pytest.mark.parametrize("name", sorted(OUR_MESSAGES))
def test_message_matches_upstream(name: str, pool: descriptor_pool.DescriptorPool):
    official = pool.FindMessageTypeByName(upstream(name))
    ours = message_facts(OUR_MESSAGES[name], strip=PREFIX)
    assert fact_differences(ours, message_facts(official)) == []


@pytest.mark.parametrize("name", sorted(OUR_ENUMS))
def test_enum_matches_upstream(name: str, pool: descriptor_pool.DescriptorPool):
    official = pool.FindEnumTypeByName(upstream(name))
    assert enum_facts(OUR_ENUMS[name]) == enum_facts(official)


@pytest.mark.parametrize("module", wire.GENERATED_MODULES, ids=lambda m: m.__name__)
def test_file_mirrors_upstream_file(module, pool: descriptor_pool.DescriptorPool):
    ours = module.DESCRIPTOR
    assert ours.name.startswith(GEN_FILE_PREFIX)
    official = pool.FindFileByName(ours.name[len(GEN_FILE_PREFIX) :])
    assert ours.package == PREFIX + official.package
    # A service in our package would have the wrong gRPC path: see service/wire/methods.py.
    assert not ours.services_by_name
    our_messages = {upstream(d.full_name) for d in ours.message_types_by_name.values()}
    their_messages = {d.full_name for d in official.message_types_by_name.values()}
    assert our_messages == their_messages - NOT_MIRRORED
    our_enums = {upstream(e.full_name) for e in ours.enum_types_by_name.values()}
    assert our_enums == {e.full_name for e in official.enum_types_by_name.values()}


@pytest.mark.parametrize("name", REQUIRED)
def test_required_type_is_mirrored(name: str):
    assert PREFIX + name in OUR_MESSAGES or PREFIX + name in OUR_ENUMS


def _file_proto(module) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    return proto


def _pool_with_altered_tensor_proto(alter) -> descriptor_pool.DescriptorPool:
    fresh = descriptor_pool.DescriptorPool()
    for module in (wire.types_pb2, wire.tensor_shape_pb2, wire.resource_handle_pb2):
        fresh.Add(_file_proto(module))
    tensor_file = _file_proto(wire.tensor_pb2)
    alter(next(m for m in tensor_file.message_type if m.name == "TensorProto"))
    fresh.Add(tensor_file)
    return fresh


def _renumber_float_val(msg: descriptor_pb2.DescriptorProto) -> None:
    next(f for f in msg.field if f.name == "float_val").number = 50


def _drop_uint64_val(msg: descriptor_pb2.DescriptorProto) -> None:
    keep = [f for f in msg.field if f.name != "uint64_val"]
    del msg.field[:]
    msg.field.extend(keep)


def _unpack_int_val(msg: descriptor_pb2.DescriptorProto) -> None:
    next(f for f in msg.field if f.name == "int_val").options.packed = False


def _make_version_number_int64(msg: descriptor_pb2.DescriptorProto) -> None:
    field = next(f for f in msg.field if f.name == "version_number")
    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_INT64


@pytest.mark.parametrize(
    ("alter", "culprit"),
    [
        (_renumber_float_val, "float_val"),
        (_drop_uint64_val, "uint64_val"),
        (_unpack_int_val, "int_val"),
        (_make_version_number_int64, "version_number"),
    ],
)
def test_descriptor_walk_catches_a_broken_mirror(alter, culprit: str, pool):
    official = message_facts(pool.FindMessageTypeByName("tensorflow.TensorProto"))
    altered = _pool_with_altered_tensor_proto(alter)
    broken = altered.FindMessageTypeByName(PREFIX + "tensorflow.TensorProto")
    diffs = fact_differences(message_facts(broken, strip=PREFIX), official)
    assert diffs and {d[0] for d in diffs} == {culprit}
    # ...while the unaltered copy compares equal, so the difference is the alteration.
    intact = _pool_with_altered_tensor_proto(lambda msg: None)
    same = intact.FindMessageTypeByName(PREFIX + "tensorflow.TensorProto")
    assert fact_differences(message_facts(same, strip=PREFIX), official) == []


# --- populated round trips -------------------------------------------------------------------

MAX_DEPTH = 3
_T = FieldDescriptor


def scalar(field: FieldDescriptor, i: int):
    """A non-default value for a field, the same for ours and the official twin."""
    n = field.number
    t = field.type
    if t == _T.TYPE_DOUBLE:
        return n + i + 0.25
    if t == _T.TYPE_FLOAT:
        return n + i + 0.5  # exact in float32
    if t in (_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64):
        return -(2**40) - 10 * n - i
    if t in (_T.TYPE_UINT64, _T.TYPE_FIXED64):
        return 2**63 + n + i
    if t in (_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32):
        return -1000 - n - i
    if t in (_T.TYPE_UINT32, _T.TYPE_FIXED32):
        return 2**31 + n + i
    if t == _T.TYPE_BOOL:
        return i % 2 == 0
    if t == _T.TYPE_STRING:
        return f"{field.name}-{i}-\u00fc"
    if t == _T.TYPE_BYTES:
        return bytes([0, 255, n % 256, i])
    if t == _T.TYPE_ENUM:
        numbers = sorted(v.number for v in field.enum_type.values if v.number != 0) or [0]
        return numbers[(n + i) % len(numbers)]
    raise AssertionError(f"unhandled type {t} for {field.full_name}")


def populate(msg: Message, variant: int, depth: int = 0) -> Message:
    """Set every field (one member per oneof, picked by `variant`) to a non-default value."""
    desc = msg.DESCRIPTOR
    if desc.full_name == "google.protobuf.Any":
        # Anything the default pool knows under its real name, so MessageToDict can render it.
        msg.type_url = "type.googleapis.com/tensorflow.TensorShapeProto"
        msg.value = wire.TensorShapeProto(dim=[{"size": 7, "name": "n"}]).SerializeToString()
        return msg
    chosen = {o.full_name: o.fields[variant % len(o.fields)] for o in desc.oneofs}
    for field in desc.fields:
        oneof = field.containing_oneof
        if oneof is not None and chosen[oneof.full_name] is not field:
            continue
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            for i in range(2):
                key = scalar(key_field, i)
                if value_field.message_type is None:
                    value[key] = scalar(value_field, i)
                elif depth < MAX_DEPTH:
                    populate(value[key], variant + i, depth + 1)
        elif field.message_type is not None:
            if field.is_repeated:
                if depth < MAX_DEPTH:
                    for i in range(2):
                        populate(value.add(), variant + i, depth + 1)
            elif depth < MAX_DEPTH:
                value.SetInParent()  # presence even for empty messages (NoneValue, All)
                populate(value, variant, depth + 1)
        elif field.is_repeated:
            value.extend(scalar(field, i) for i in range(3))
        else:
            setattr(msg, field.name, scalar(field, variant))
    return msg


def variants(desc: Descriptor) -> int:
    return max([len(o.fields) for o in desc.oneofs] or [1])


def as_dict(msg: Message) -> dict:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def unknown_field_paths(msg: Message, path: str = "") -> list[str]:
    """Paths of (sub)messages holding fields their class does not know."""
    found = [path or "<root>"] if len(unknown_fields.UnknownFieldSet(msg)) else []
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is None:
                continue
            items = [(f"{path}.{field.name}[{k!r}]", v) for k, v in value.items()]
        elif field.is_repeated:
            items = [(f"{path}.{field.name}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(f"{path}.{field.name}", value)]
        for sub_path, sub in items:
            found += unknown_field_paths(sub, sub_path)
    return found


def classes(name: str, pool: descriptor_pool.DescriptorPool):
    ours = message_factory.GetMessageClass(OUR_MESSAGES[name])
    theirs = message_factory.GetMessageClass(pool.FindMessageTypeByName(upstream(name)))
    return ours, theirs


@pytest.mark.parametrize("name", POPULATABLE)
def test_populated_message_round_trips_both_ways(name: str, pool):
    ours_cls, theirs_cls = classes(name, pool)
    fields_set: set[str] = set()
    for variant in range(variants(OUR_MESSAGES[name])):
        ours = populate(ours_cls(), variant)
        theirs = populate(theirs_cls(), variant)
        fields_set |= {f.name for f, _ in ours.ListFields()}
        ours_bytes = ours.SerializeToString(deterministic=True)
        theirs_bytes = theirs.SerializeToString(deterministic=True)
        # Built independently from the same recipe: the bytes must be identical.
        assert ours_bytes == theirs_bytes

        parsed_by_them = theirs_cls.FromString(ours_bytes)
        assert unknown_field_paths(parsed_by_them) == []
        assert as_dict(parsed_by_them) == as_dict(ours)
        assert parsed_by_them == theirs

        parsed_by_us = ours_cls.FromString(theirs_bytes)
        assert unknown_field_paths(parsed_by_us) == []
        assert as_dict(parsed_by_us) == as_dict(theirs)
        assert parsed_by_us == ours
    # "Fully populated": every field was exercised by at least one variant.
    assert fields_set == {f.name for f in OUR_MESSAGES[name].fields}


def test_populate_really_fills_nested_values(pool):
    request = populate(wire.PredictRequest(), 0)
    tensor = next(iter(request.inputs.values()))
    assert tensor.dtype != 0 and list(tensor.float_val) and tensor.tensor_shape.dim
    assert request.HasField("client_id") and request.request_options.HasField("handshake")


def test_round_trip_detects_missing_field(pool):
    # Control: a field unknown to the receiver shows up as an unknown field and in the dicts.
    _, theirs_cls = classes(PREFIX + "tensorflow.TensorProto", pool)
    theirs = theirs_cls(dtype=1, float_val=[1.5])
    parsed = wire.TensorShapeProto.FromString(theirs.SerializeToString())
    assert unknown_field_paths(parsed) == ["<root>"]


# --- realistic payloads ------------------------------------------------------------------------

NUMPY_CASES = [
    np.array([[1.5, -2.25], [3.0, 4.0]], dtype=np.float32),
    np.array([1e300, -0.0], dtype=np.float64),
    np.array([1, -2, 3], dtype=np.int8),
    np.array([[7]], dtype=np.int64),
    np.array([2**64 - 1], dtype=np.uint64),
    np.array([True, False]),
    np.array([b"a\x00b", "\u00fc".encode()], dtype=object),
    np.array(3.5, dtype=np.float16),
]


@pytest.mark.parametrize("array", NUMPY_CASES, ids=lambda a: str(a.dtype))
def test_tf_made_tensor_protos_cross_over(array):
    import tensorflow as tf

    official = tf.make_tensor_proto(array)
    data = official.SerializeToString(deterministic=True)
    ours = wire.TensorProto.FromString(data)
    assert unknown_field_paths(ours) == []
    assert ours.SerializeToString(deterministic=True) == data
    assert as_dict(ours) == as_dict(official)
    back = type(official).FromString(ours.SerializeToString())
    np.testing.assert_array_equal(tf.make_ndarray(back), array)


def test_predict_request_built_by_us_is_read_by_tensorflow(pool):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    ours = wire.PredictRequest(model_spec=wire.ModelSpec(name="default", signature_name="sig"))
    ours.model_spec.version.value = 123
    x = ours.inputs["x"]
    x.dtype = wire.DataType.Value("DT_FLOAT")
    x.tensor_shape.dim.add(size=2)
    x.tensor_shape.dim.add(size=1)
    x.tensor_content = np.array([[2.0], [3.0]], dtype="<f4").tobytes()
    ours.output_filter.append("y")

    theirs = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    assert theirs.model_spec.name == "default"
    assert theirs.model_spec.WhichOneof("version_choice") == "version"
    assert theirs.model_spec.version.value == 123
    np.testing.assert_array_equal(tf.make_ndarray(theirs.inputs["x"]), [[2.0], [3.0]])
    assert list(theirs.output_filter) == ["y"]


def test_metadata_any_uses_real_type_urls(pool):
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    signature.inputs["x"].name = "x:0"
    signature.inputs["x"].dtype = 1
    theirs_map = get_model_metadata_pb2.SignatureDefMap()
    theirs_map.signature_def["serving_default"].CopyFrom(signature)
    theirs = get_model_metadata_pb2.GetModelMetadataResponse()
    theirs.model_spec.name = "default"
    theirs.metadata["signature_def"].Pack(theirs_map)

    ours = wire.GetModelMetadataResponse.FromString(theirs.SerializeToString())
    packed = ours.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    ours_map = wire.unpack_any(packed, wire.SignatureDefMap)
    assert ours_map.signature_def["serving_default"].inputs["x"].name == "x:0"
    with pytest.raises(ValueError, match="SignatureDefMap"):
        wire.unpack_any(packed, wire.TensorShapeProto)

    # And the other way: what we pack, TensorFlow's Any.Unpack accepts.
    echoed = get_model_metadata_pb2.GetModelMetadataResponse()
    echoed.metadata["signature_def"].CopyFrom(wire.pack_any(ours_map))
    unpacked = get_model_metadata_pb2.SignatureDefMap()
    assert echoed.metadata["signature_def"].Unpack(unpacked)
    assert unpacked == theirs_map


def test_upstream_name_and_type_url():
    assert wire.upstream_name(wire.PredictRequest) == "tensorflow.serving.PredictRequest"
    assert wire.upstream_name(wire.DataType.DESCRIPTOR) == "tensorflow.DataType"
    assert wire.type_url(wire.ModelSpec()) == "type.googleapis.com/tensorflow.serving.ModelSpec"
    from google.protobuf import wrappers_pb2

    with pytest.raises(ValueError, match="not an nnserve wire type"):
        wire.upstream_name(wrappers_pb2.Int64Value)
