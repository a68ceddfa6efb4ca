"""TF Serving's gRPC services, with its own protobufs, in front of the model manager."""

import contextlib
import logging
from collections.abc import Iterator

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from service.model_server import inference
from service.model_server.config import models_from_config
from service.model_server.errors import ServingError, capped, invalid_argument, shown
from service.model_server.manager import ModelManager
from service.model_server.servable import DEFAULT_SIGNATURE
from service.model_server.tensors import to_tensor_proto

log = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"
_STATE = get_model_status_pb2.ModelVersionStatus.State
# TensorFlow's error codes are gRPC's codes, number for number.
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


@contextlib.contextmanager
def _status_on_error(context: grpc.ServicerContext) -> Iterator[None]:
    """Turn failures into a gRPC status: TF Serving's code and message, never a traceback."""
    try:
        yield
    except ServingError as error:
        context.abort(error.code, capped(error.message))
    except tf.errors.OpError as error:
        code = _GRPC_CODES.get(error.error_code, grpc.StatusCode.UNKNOWN)
        context.abort(code, capped(error.message))
    except Exception as error:
        log.exception("unexpected failure serving a request")
        context.abort(grpc.StatusCode.INTERNAL, capped(f"{type(error).__name__}: {error}"))


def _lease(manager: ModelManager, request):
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    return manager.lease(request.model_spec)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def Predict(self, request, context):
        with _status_on_error(context), _lease(self._manager, request) as (version, servable):
            signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            outputs = servable.predict(signature_name, request.inputs, list(request.output_filter))
            response = predict_pb2.PredictResponse()
            _fill_model_spec(response.model_spec, request.model_spec.name, version, signature_name)
            for alias, value in outputs.items():
                response.outputs[alias].CopyFrom(to_tensor_proto(value))
            return response

    def GetModelMetadata(self, request, context):
        with _status_on_error(context):
            fields = list(request.metadata_field)
            if not fields:
                raise invalid_argument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for name in fields:
                if name != SIGNATURE_DEF_FIELD:
                    raise invalid_argument(f"Metadata field {shown(name)} is not supported")
            with _lease(self._manager, request) as (version, servable):
                signature_defs = get_model_metadata_pb2.SignatureDefMap()
                for key, signature in servable.signature_defs.items():
                    signature_defs.signature_def[key].CopyFrom(signature)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            _fill_model_spec(response.model_spec, request.model_spec.name, version, "")
            response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_defs)
            return response

    def Classify(self, request, context):
        return self._on_examples(
            request, context, inference.classify, classification_pb2.ClassificationResponse()
        )

    def Regress(self, request, context):
        return self._on_examples(
            request, context, inference.regress, regression_pb2.RegressionResponse()
        )

    def _on_examples(self, request, context, run, response):
        """Classify and Regress: run tf.Example inputs through a signature into `response`."""
        with _status_on_error(context), _lease(self._manager, request) as (version, servable):
            signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            response.result.CopyFrom(run(servable, signature_name, request.input))
            _fill_model_spec(response.model_spec, request.model_spec.name, version, signature_name)
            return response

    def MultiInference(self, request, context):
        with _status_on_error(context):
            model_spec = request.tasks[0].model_spec if request.tasks else None
            if model_spec is None or not model_spec.name:
                raise invalid_argument("ModelSpec has no name specified.")
            with self._manager.lease(model_spec) as (version, servable):
                results = inference.multi_inference(servable, request)
            response = inference_pb2.MultiInferenceResponse()
            for result in results:
                result.model_spec.version.value = version
                response.results.append(result)
            return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def GetModelStatus(self, request, context):
        with _status_on_error(context):
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            response = get_model_status_pb2.GetModelStatusResponse()
            for status in self._manager.statuses(spec.name, version):
                entry = response.model_version_status.add()
                entry.version = status.version
                entry.state = _STATE.Value(status.state.value)
                entry.status.SetInParent()  # TF Serving always sends a status, OK included
                if status.error:
                    entry.status.error_code = 2  # tensorflow.error.UNKNOWN
                    entry.status.error_message = status.error
            return response

    def HandleReloadConfigRequest(self, request, context):
        with _status_on_error(context):
            self._manager.reload(models_from_config(request.config))
            response = model_management_pb2.ReloadConfigResponse()
            response.status.SetInParent()
            return response


def _fill_model_spec(model_spec, name: str, version: int, signature_name: str) -> None:
    model_spec.name = name
    model_spec.version.value = version
    model_spec.signature_name = signature_name
