"""A small synchronous client of the model server's GetModelStatus: which versions are loaded.

Promotion asks it whether a staged version is AVAILABLE before a label moves to it. Built on
`service.wire` and grpc alone, so that it runs where TensorFlow is not installed.
"""

from dataclasses import dataclass

import grpc

from service import wire
from service.wire import methods

AVAILABLE = "AVAILABLE"
END = "END"
# Codes meaning "no model server answers there (now)" rather than "it answered no".
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ModelServerUnavailable(ConnectionError):
    """No model server answers at the address (down, restarting, or nothing listens there)."""


class ModelServerError(RuntimeError):
    """The model server answered GetModelStatus with an error other than NOT_FOUND."""


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # TF Serving's ModelVersionStatus.State name: LOADING, AVAILABLE, END, ...
    error: str = ""  # why a version that failed to load did


class ModelStatusClient:
    def __init__(self, address: str, timeout_seconds: float = 5.0) -> None:
        self.address = address
        self._timeout = timeout_seconds
        self._channel = grpc.insecure_channel(address)
        self._status = methods.GET_MODEL_STATUS.bind(self._channel)

    def statuses(self, model: str) -> list[VersionStatus]:
        """Every version of `model` the model server knows, newest first; [] if it knows none."""
        request = wire.GetModelStatusRequest(model_spec=wire.ModelSpec(name=model))
        try:
            response = self._status(request, timeout=self._timeout)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return []
            if error.code() in _UNREACHABLE:
                raise ModelServerUnavailable(
                    f"no model server answers at {self.address}: {error.details()}"
                ) from None
            raise ModelServerError(
                f"the model server at {self.address} answered GetModelStatus for {model} with "
                f"{error.code().name}: {error.details()}"
            ) from None
        return sorted(
            (
                VersionStatus(
                    status.version,
                    wire.ModelVersionStatus.State.Name(status.state),
                    status.status.error_message if status.status.error_code else "",
                )
                for status in response.model_version_status
            ),
            key=lambda status: status.version,
            reverse=True,
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ModelStatusClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
