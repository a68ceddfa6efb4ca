"""TF Serving's --grpc_channel_arguments flag (TensorFlow-free: the CLI checks it up front)."""

# The model server permits a client's keepalive pings every 10 s or more, also without calls
# (grpc.http2.min_ping_interval_without_data_ms=10000, grpc.keepalive_permit_without_calls=1), and
# so does the Compose / Kubernetes TF Serving through --grpc_channel_arguments. The gateway must
# not ping more often: the server would answer with GOAWAY "too_many_pings".
MODEL_SERVER_MIN_PING_INTERVAL_SECONDS = 10

ChannelArguments = tuple[tuple[str, int | str], ...]

# gRPC server settings before --grpc_channel_arguments, which may override each. TF Serving takes
# messages up to 2 GiB; a smaller default bounds what one request can make the server hold.
DEFAULT_CHANNEL_ARGUMENTS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # Clients (the gateway) keep idle connections alive with pings; without these gRPC's server
    # answers a ping more often than every 5 minutes, or one without calls, with GOAWAY.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", MODEL_SERVER_MIN_PING_INTERVAL_SECONDS * 1000),
)


def parse_channel_arguments(text: str) -> ChannelArguments:
    """TF Serving's --grpc_channel_arguments: "key=value,key=value", a value that reads as a
    32-bit integer passed as one, any other as a string (TF Serving's rule)."""
    arguments = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(
                f"--grpc_channel_arguments: expected key=value items separated by commas, "
                f"got {item!r}"
            )
        arguments.append((key.strip(), _int32(value)))
    return tuple(arguments)


def _int32(value: str) -> int | str:
    try:
        number = int(value)
    except ValueError:
        return value
    return number if -(2**31) <= number < 2**31 else value
