"""The gRPC client of TF Serving's API: one grpc.aio channel per backend address.

Every call gets the request deadline; a call the server answers UNAVAILABLE (down, restarting,
overloaded) is retried a bounded number of times with exponential backoff, within that deadline.
"""

import asyncio
import time
from collections.abc import Callable

import grpc

from service import wire
from service.gateway.errors import GatewayError
from service.wire import methods


def channel_options(keepalive_seconds: float) -> list[tuple[str, int]]:
    """Keep idle connections alive through proxies, notice a dead peer within seconds, and
    reconnect quickly to a model server that comes back (gRPC's default backoff grows to two
    minutes).

    The model server answers pings more frequent than it permits with GOAWAY "too_many_pings":
    `keepalive_seconds` must not be below MODEL_SERVER_MIN_PING_INTERVAL_SECONDS (the
    settings refuse that).
    """
    return [
        ("grpc.keepalive_time_ms", round(keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC's client stops pinging after this many pings without data (default 2), which
        # would leave an idle connection unwatched; 0 keeps pinging.
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]


# Called after every backend call with the method's name, the status code's name and seconds.
CallObserver = Callable[[str, str, float], None]


class BackendError(GatewayError):
    """A call the model server answered with a non-OK status (code is the gRPC code's name)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TFServingBackend:
    def __init__(
        self,
        address: str,
        timeout_seconds: float,
        retries: int = 3,
        backoff_seconds: float = 0.05,
        keepalive_seconds: float = 30.0,
        observe: CallObserver | None = None,
    ) -> None:
        self.address = address
        self._timeout = timeout_seconds
        self._retries = retries
        self._backoff = backoff_seconds
        self._observe = observe
        self._channel = grpc.aio.insecure_channel(
            address, options=channel_options(keepalive_seconds)
        )
        self._predict = methods.PREDICT.bind(self._channel)
        self._classify = methods.CLASSIFY.bind(self._channel)
        self._regress = methods.REGRESS.bind(self._channel)
        self._metadata = methods.GET_MODEL_METADATA.bind(self._channel)
        self._status = methods.GET_MODEL_STATUS.bind(self._channel)

    async def predict(self, request: wire.PredictRequest) -> wire.PredictResponse:
        return await self._call("Predict", self._predict, request)

    async def classify(self, request: wire.ClassificationRequest) -> wire.ClassificationResponse:
        return await self._call("Classify", self._classify, request)

    async def regress(self, request: wire.RegressionRequest) -> wire.RegressionResponse:
        return await self._call("Regress", self._regress, request)

    async def signature_defs(
        self, model_spec: wire.ModelSpec
    ) -> tuple[wire.ModelSpec, wire.SignatureDefMap]:
        """GetModelMetadata: the model spec served and its signatures."""
        request = wire.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.CopyFrom(model_spec)
        response = await self._call("GetModelMetadata", self._metadata, request)
        signatures = wire.unpack_any(response.metadata["signature_def"], wire.SignatureDefMap)
        return response.model_spec, signatures

    async def model_status(self, model_spec: wire.ModelSpec) -> wire.GetModelStatusResponse:
        request = wire.GetModelStatusRequest()
        request.model_spec.CopyFrom(model_spec)
        return await self._call("GetModelStatus", self._status, request)

    async def reachable(self, timeout_seconds: float = 1.0) -> bool:
        """Whether a connection to the model server is up (or comes up within the timeout)."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout_seconds)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, name: str, method, request):
        started = time.perf_counter()
        deadline = started + self._timeout
        code = "CANCELLED"  # unless the call returns or fails below
        attempt = 0
        try:
            while True:
                try:
                    response = await method(request, timeout=max(deadline - time.perf_counter(), 0))
                    code = "OK"
                    return response
                except grpc.aio.AioRpcError as error:
                    pause = self._backoff * 2**attempt
                    retry = (
                        error.code() == grpc.StatusCode.UNAVAILABLE
                        and attempt < self._retries
                        and time.perf_counter() + pause < deadline
                    )
                    if not retry:
                        code = error.code().name
                        raise self._error(error, attempt + 1) from error
                await asyncio.sleep(pause)
                attempt += 1
        finally:
            if self._observe is not None:
                self._observe(name, code, time.perf_counter() - started)

    def _error(self, error: grpc.aio.AioRpcError, attempts: int) -> BackendError:
        code = error.code()
        message = error.details() or code.name
        if code == grpc.StatusCode.UNAVAILABLE:
            tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
            message = f"model server at {self.address} is unavailable ({tries}): {message}"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = (
                f"model server at {self.address} did not answer within the deadline of "
                f"{self._timeout:g} s"
            )
        return BackendError(code.name, message)
