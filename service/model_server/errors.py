"""Errors carrying the gRPC status code TF Serving answers with."""

import grpc

# Names a client sent are echoed in messages; a message rides in gRPC's headers, whose size is
# limited (a 16 KB model name made the status itself fail, as RESOURCE_EXHAUSTED).
MAX_NAME_SHOWN = 256
MAX_MESSAGE = 4096


class ServingError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def shown(name: str) -> str:
    """A client-sent name as messages show it: cut to MAX_NAME_SHOWN characters."""
    if len(name) <= MAX_NAME_SHOWN:
        return name
    return f"{name[:MAX_NAME_SHOWN]}... ({len(name)} characters)"


def capped(message: str) -> str:
    """A status message short enough to travel in gRPC's headers."""
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE} more characters)"
