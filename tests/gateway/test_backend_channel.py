"""The gateway's gRPC channel to the model server: keepalive pings no more often than the model
server permits, and on idle connections too."""

import pytest
from pydantic import ValidationError

from service.gateway.backend import channel_options
from service.model_server.channel_arguments import MODEL_SERVER_MIN_PING_INTERVAL_SECONDS
from service.settings import Settings


def test_the_default_keepalive_is_within_what_the_model_server_permits():
    options = dict(channel_options(Settings().backend_keepalive_seconds))
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_time_ms"] >= MODEL_SERVER_MIN_PING_INTERVAL_SECONDS * 1000
    # Pings go on while no call is made: permitted, and not stopped after two.
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0


@pytest.mark.parametrize("seconds", [MODEL_SERVER_MIN_PING_INTERVAL_SECONDS, 45.5])
def test_a_keepalive_at_or_above_the_minimum_is_taken(seconds: float):
    options = dict(
        channel_options(Settings(backend_keepalive_seconds=seconds).backend_keepalive_seconds)
    )
    assert options["grpc.keepalive_time_ms"] == seconds * 1000


def test_a_keepalive_more_frequent_than_the_model_server_permits_is_refused(monkeypatch):
    monkeypatch.setenv(
        "NNSERVE_BACKEND_KEEPALIVE_SECONDS", str(MODEL_SERVER_MIN_PING_INTERVAL_SECONDS - 1)
    )
    with pytest.raises(ValidationError, match="backend_keepalive_seconds"):
        Settings()
