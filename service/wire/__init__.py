"""TensorFlow Serving's protobuf messages, wire-compatible, without importing TensorFlow.

Every message and enum in `service.wire.gen` has the same field names, numbers, types, labels,
oneofs and enum values as its TensorFlow / TensorFlow Serving namesake, so bytes move freely
between the two. Only the proto package differs: our full name is ``"nnserve.wire."`` + the real
one (``nnserve.wire.tensorflow.serving.PredictRequest``), so both sets can live in one process.

The names only matter where they travel inside a message, i.e. in `google.protobuf.Any` type
URLs (GetModelMetadataResponse.metadata): use `pack_any` / `unpack_any`, which speak the real
names. Sources: service/wire/protos; regenerate with ``python scripts/generate_wire.py``.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import any_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor
from google.protobuf.message import Message

from service.wire.gen.tensorflow.core.example import example_pb2, feature_pb2
from service.wire.gen.tensorflow.core.framework import (
    resource_handle_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from service.wire.gen.tensorflow.core.protobuf import meta_graph_pb2, struct_pb2
from service.wire.gen.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
    status_pb2,
)
from service.wire.gen.tensorflow_serving.config import (
    file_system_storage_path_source_pb2,
    log_collector_config_pb2,
    logging_config_pb2,
    model_server_config_pb2,
)
from service.wire.gen.xla.tsl.protobuf import error_codes_pb2

WIRE_PREFIX = "nnserve.wire."
TYPE_URL_PREFIX = "type.googleapis.com/"

# Every generated module, in dependency order.
GENERATED_MODULES = (
    types_pb2,
    tensor_shape_pb2,
    resource_handle_pb2,
    tensor_pb2,
    error_codes_pb2,
    struct_pb2,
    meta_graph_pb2,
    feature_pb2,
    example_pb2,
    model_pb2,
    predict_pb2,
    status_pb2,
    get_model_status_pb2,
    get_model_metadata_pb2,
    input_pb2,
    classification_pb2,
    regression_pb2,
    inference_pb2,
    log_collector_config_pb2,
    logging_config_pb2,
    file_system_storage_path_source_pb2,
    model_server_config_pb2,
    model_management_pb2,
)

# The classes a gateway uses most, under their upstream short names.
DataType = types_pb2.DataType
TensorProto = tensor_pb2.TensorProto
TensorShapeProto = tensor_shape_pb2.TensorShapeProto
TensorInfo = meta_graph_pb2.TensorInfo
SignatureDef = meta_graph_pb2.SignatureDef
Example = example_pb2.Example
Features = feature_pb2.Features
Feature = feature_pb2.Feature
BytesList = feature_pb2.BytesList
FloatList = feature_pb2.FloatList
Int64List = feature_pb2.Int64List
ModelSpec = model_pb2.ModelSpec
PredictRequest = predict_pb2.PredictRequest
PredictResponse = predict_pb2.PredictResponse
Input = input_pb2.Input
ExampleList = input_pb2.ExampleList
ExampleListWithContext = input_pb2.ExampleListWithContext
ClassificationRequest = classification_pb2.ClassificationRequest
ClassificationResponse = classification_pb2.ClassificationResponse
RegressionRequest = regression_pb2.RegressionRequest
RegressionResponse = regression_pb2.RegressionResponse
MultiInferenceRequest = inference_pb2.MultiInferenceRequest
MultiInferenceResponse = inference_pb2.MultiInferenceResponse
GetModelStatusRequest = get_model_status_pb2.GetModelStatusRequest
GetModelStatusResponse = get_model_status_pb2.GetModelStatusResponse
ModelVersionStatus = get_model_status_pb2.ModelVersionStatus
StatusProto = status_pb2.StatusProto
GetModelMetadataRequest = get_model_metadata_pb2.GetModelMetadataRequest
GetModelMetadataResponse = get_model_metadata_pb2.GetModelMetadataResponse
SignatureDefMap = get_model_metadata_pb2.SignatureDefMap
ReloadConfigRequest = model_management_pb2.ReloadConfigRequest
ReloadConfigResponse = model_management_pb2.ReloadConfigResponse
ModelServerConfig = model_server_config_pb2.ModelServerConfig

M = TypeVar("M", bound=Message)


def upstream_name(item: Message | type[Message] | Descriptor | EnumDescriptor) -> str:
    """The real TensorFlow full name of one of our messages / enums (prefix removed)."""
    descriptor = item if isinstance(item, Descriptor | EnumDescriptor) else item.DESCRIPTOR
    name = descriptor.full_name
    if not name.startswith(WIRE_PREFIX):
        raise ValueError(f"{name} is not an nnserve wire type")
    return name[len(WIRE_PREFIX) :]


def type_url(message_type: Message | type[Message]) -> str:
    """The Any type URL TensorFlow Serving uses for this message (real name, not ours)."""
    return TYPE_URL_PREFIX + upstream_name(message_type)


def pack_any(message: Message) -> any_pb2.Any:
    """Pack like the real server: an Any a TensorFlow process can unpack."""
    return any_pb2.Any(type_url=type_url(message), value=message.SerializeToString())


def unpack_any(packed: any_pb2.Any, message_type: type[M]) -> M:
    """Unpack an Any written by TensorFlow Serving (or by `pack_any`) into our class.

    `Any.Unpack` would refuse: it compares the URL with our prefixed full name.
    """
    accepted = {type_url(message_type), TYPE_URL_PREFIX + message_type.DESCRIPTOR.full_name}
    # Type URLs may use any host; only the part after the last "/" names the type.
    name = packed.type_url.rsplit("/", 1)[-1]
    if TYPE_URL_PREFIX + name not in accepted:
        raise ValueError(f"Any holds {packed.type_url!r}, expected {type_url(message_type)!r}")
    return message_type.FromString(packed.value)
