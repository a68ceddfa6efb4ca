"""The gRPC client of TF Serving's API: one grpc.aio channel per backend address."""

import grpc

from service import wire
from service.wire import methods

# Keep idle connections alive through proxies and notice a dead peer within seconds.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


class BackendError(Exception):
    """A call the model server answered with a non-OK status (code is the gRPC code's name)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TFServingBackend:
    def __init__(self, address: str, timeout_seconds: float) -> None:
        self.address = address
        self._timeout = timeout_seconds
        self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._predict = methods.PREDICT.bind(self._channel)
        self._metadata = methods.GET_MODEL_METADATA.bind(self._channel)
        self._status = methods.GET_MODEL_STATUS.bind(self._channel)

    async def predict(self, request: wire.PredictRequest) -> wire.PredictResponse:
        return await self._call(self._predict, request)

    async def model_metadata(self, model_spec: wire.ModelSpec) -> wire.GetModelMetadataResponse:
        request = wire.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.CopyFrom(model_spec)
        return await self._call(self._metadata, request)

    async def model_status(self, model_spec: wire.ModelSpec) -> wire.GetModelStatusResponse:
        request = wire.GetModelStatusRequest()
        request.model_spec.CopyFrom(model_spec)
        return await self._call(self._status, request)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method, request):
        try:
            return await method(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            message = error.details() or error.code().name
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                message = f"model server at {self.address} is unavailable: {message}"
            raise BackendError(error.code().name, message) from error
