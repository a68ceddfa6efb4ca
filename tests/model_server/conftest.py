import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from savedmodels import write_half_plus_two
from support import SHARED_TESTDATA, free_port, nnserve, stop

from service.model_server.manager import ModelConfig, ModelManager
from service.model_server.server import build_server

needs_shared = pytest.mark.skipif(
    not SHARED_TESTDATA.exists(), reason="../shared/tfserving-testdata is not beside the repo"
)


@contextlib.contextmanager
def serving(manager: ModelManager) -> Iterator[grpc.Channel]:
    """A real gRPC server for `manager` on a free 127.0.0.1 port, and a channel to it."""
    port = free_port()
    server = build_server(manager, "127.0.0.1", port)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        server.stop(0)


@contextlib.contextmanager
def running(*flags: str) -> Iterator[tuple[subprocess.Popen, grpc.Channel]]:
    """`nnserve model-server FLAGS` as a subprocess on a free 127.0.0.1 port, and a channel once
    it answers; it must exit 0 on the SIGTERM that ends it (or that the test sent)."""
    port = free_port()
    server = nnserve("model-server", "--host=127.0.0.1", f"--port={port}", *flags)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=120)
            yield server, channel
    finally:
        assert stop(server) == 0


@pytest.fixture(scope="session")
def model_server_process():
    """`with model_server_process(*flags) as (process, channel):` runs `nnserve model-server`."""
    return running


@pytest.fixture(scope="session")
def serve():
    """`with serve(manager) as channel:` runs a real gRPC server for the manager."""
    return serving


@pytest.fixture(scope="session")
def half_plus_two(tmp_path_factory) -> Path:
    """Base path of our TF2 half_plus_two, version 123 (read only: copy it to change it)."""
    return write_half_plus_two(tmp_path_factory.mktemp("half_plus_two"))


@pytest.fixture(scope="session")
def half_plus_two_models(half_plus_two) -> list[tuple[str, Path]]:
    """(model name, base path) of every half_plus_two at hand: ours, and TF Serving's own."""
    models = [("ours", half_plus_two)]
    if SHARED_TESTDATA.exists():
        models += [
            ("tf1", SHARED_TESTDATA / "saved_model_half_plus_two_cpu"),
            ("tf2", SHARED_TESTDATA / "saved_model_half_plus_two_tf2_cpu"),
        ]
    return models


@pytest.fixture(scope="module")
def half_plus_two_channel(half_plus_two_models) -> Iterator[grpc.Channel]:
    manager = ModelManager([ModelConfig(name, path) for name, path in half_plus_two_models])
    with serving(manager) as channel:
        yield channel
