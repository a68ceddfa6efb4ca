"""What the gateway's parts raise, the limits they refuse by, and how TF Serving's REST layer
maps a canonical error code to an HTTP status."""

from dataclasses import dataclass


class GatewayError(Exception):
    """A problem to tell the client about; `message` says what it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(GatewayError):
    """A request the gateway refuses itself (answered 400), such as one over a limit."""


@dataclass(frozen=True)
class Limit:
    """A bound from the settings and the variable that sets it: refusals name both, so that a
    client learns the bound and an operator the knob."""

    value: int
    setting: str

    def __str__(self) -> str:
        return f"{self.value} ({self.setting})"


HTTP_STATUS_BY_CODE = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
