"""TensorFlow Serving's gRPC methods: real paths, paired with our wire message classes.

The protos in service/wire define no services on purpose: a service declared in our package
would be served under "/nnserve.wire.tensorflow.serving..." instead of the real path. Use:

    stub = methods.PREDICT.bind(channel)        # or by hand:
    channel.unary_unary(m.path, request_serializer=m.request_type.SerializeToString,
                        response_deserializer=m.response_type.FromString)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from service.wire.gen.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


@dataclass(frozen=True)
class Method(Generic[RequestT, ResponseT]):
    """One unary gRPC method: its full path and its request / response classes."""

    path: str
    request_type: type[RequestT]
    response_type: type[ResponseT]

    @property
    def service(self) -> str:
        return self.path.split("/")[1]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    def bind(self, channel: Any) -> Any:
        """A callable for this method on a `grpc.Channel` (or `grpc.aio.Channel`)."""
        return channel.unary_unary(
            self.path,
            request_serializer=self.request_type.SerializeToString,
            response_deserializer=self.response_type.FromString,
        )


def _method(
    service: str, name: str, request_type: type[RequestT], response_type: type[ResponseT]
) -> Method[RequestT, ResponseT]:
    return Method(f"/{service}/{name}", request_type, response_type)


PREDICT = _method(
    PREDICTION_SERVICE, "Predict", predict_pb2.PredictRequest, predict_pb2.PredictResponse
)
CLASSIFY = _method(
    PREDICTION_SERVICE,
    "Classify",
    classification_pb2.ClassificationRequest,
    classification_pb2.ClassificationResponse,
)
REGRESS = _method(
    PREDICTION_SERVICE,
    "Regress",
    regression_pb2.RegressionRequest,
    regression_pb2.RegressionResponse,
)
MULTI_INFERENCE = _method(
    PREDICTION_SERVICE,
    "MultiInference",
    inference_pb2.MultiInferenceRequest,
    inference_pb2.MultiInferenceResponse,
)
GET_MODEL_METADATA = _method(
    PREDICTION_SERVICE,
    "GetModelMetadata",
    get_model_metadata_pb2.GetModelMetadataRequest,
    get_model_metadata_pb2.GetModelMetadataResponse,
)
GET_MODEL_STATUS = _method(
    MODEL_SERVICE,
    "GetModelStatus",
    get_model_status_pb2.GetModelStatusRequest,
    get_model_status_pb2.GetModelStatusResponse,
)
HANDLE_RELOAD_CONFIG_REQUEST = _method(
    MODEL_SERVICE,
    "HandleReloadConfigRequest",
    model_management_pb2.ReloadConfigRequest,
    model_management_pb2.ReloadConfigResponse,
)

ALL_METHODS: tuple[Method[Any, Any], ...] = (
    PREDICT,
    CLASSIFY,
    REGRESS,
    MULTI_INFERENCE,
    GET_MODEL_METADATA,
    GET_MODEL_STATUS,
    HANDLE_RELOAD_CONFIG_REQUEST,
)
