"""The data plane: REST bodies in, model server calls, REST bodies out. Knows no HTTP.

TF Serving's REST layer reads JSON values as the dtypes the signature declares, so each predict
needs the signature: it is fetched with GetModelMetadata and cached for a few seconds per model
target, and forgotten whenever the model server rejects a request made with it.
"""

import time
from dataclasses import dataclass

import orjson
from google.protobuf import json_format

from service import wire
from service.gateway import codec
from service.gateway.backend import BackendError, TFServingBackend

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class ModelTarget:
    """The model a URL names: `/v1/models/{name}[/versions/{version}|/labels/{label}]`."""

    name: str
    version: int | None = None
    label: str | None = None

    def model_spec(self, signature_name: str = "") -> wire.ModelSpec:
        spec = wire.ModelSpec(name=self.name, signature_name=signature_name)
        if self.version is not None:
            spec.version.value = self.version
        elif self.label is not None:
            spec.version_label = self.label
        return spec


class DataPlane:
    def __init__(self, backend: TFServingBackend, signature_ttl_seconds: float = 5.0) -> None:
        self._backend = backend
        self._ttl = signature_ttl_seconds
        self._signatures: dict[ModelTarget, tuple[float, wire.SignatureDefMap]] = {}

    async def predict(self, target: ModelTarget, body: bytes) -> bytes:
        document = codec.parse_json(body)
        signature_name = codec.request_signature_name(document) or DEFAULT_SIGNATURE
        signature = await self._signature(target, signature_name)
        inputs = codec.predict_inputs(document, codec.signature_input_specs(signature))
        request = wire.PredictRequest(model_spec=target.model_spec(signature_name))
        for name, tensor in inputs.tensors.items():
            request.inputs[name].CopyFrom(tensor)
        try:
            response = await self._backend.predict(request)
        except BackendError:
            self._signatures.pop(target, None)
            raise
        return codec.predict_response_json(response.outputs, inputs.columnar)

    async def model_status(self, target: ModelTarget) -> bytes:
        response = await self._backend.model_status(target.model_spec())
        return orjson.dumps(_to_dict(response))

    async def model_metadata(self, target: ModelTarget) -> bytes:
        response = await self._backend.model_metadata(target.model_spec())
        signature_defs = wire.unpack_any(response.metadata["signature_def"], wire.SignatureDefMap)
        return orjson.dumps(
            {
                "model_spec": _to_dict(response.model_spec),
                "metadata": {"signature_def": _to_dict(signature_defs)},
            }
        )

    async def _signature(self, target: ModelTarget, signature_name: str) -> wire.SignatureDef:
        cached = self._signatures.get(target)
        if cached is None or cached[0] < time.monotonic():
            response = await self._backend.model_metadata(target.model_spec())
            signature_defs = wire.unpack_any(
                response.metadata["signature_def"], wire.SignatureDefMap
            )
            cached = (time.monotonic() + self._ttl, signature_defs)
            self._signatures[target] = cached
        signature_defs = cached[1].signature_def
        if signature_name not in signature_defs:
            raise BackendError(
                "INVALID_ARGUMENT",
                f'Serving signature name: "{signature_name}" not found in signature def',
            )
        return signature_defs[signature_name]


def _to_dict(message) -> dict:
    # TF Serving's REST layer prints protos with their field names and every field, defaults too.
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
