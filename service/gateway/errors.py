"""What the gateway's parts raise, and how TF Serving's REST layer maps a canonical error code
to an HTTP status."""


class GatewayError(Exception):
    """A problem to tell the client about; `message` says what it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
