"""Fixtures: one real model server for the gateway tests, and gateways in front of it."""

from collections.abc import Callable, Iterator

import httpx
import pytest
from gateway.servers import (
    START_TIMEOUT,
    Gateway,
    ModelServer,
    available,
    model_config,
    start_gateway,
    start_model_server,
)
from support import free_port, stop, wait_until


@pytest.fixture(scope="session")
def model_server(trained_digits, tmp_path_factory) -> Iterator[ModelServer]:
    config_file = tmp_path_factory.mktemp("gateway") / "models.config"
    config_file.write_text(model_config(trained_digits.version_dir.parent))
    port = free_port()
    process = start_model_server(config_file, port)
    try:
        for model in ("digits-cnn", "default", "two"):
            if f"name: '{model}'" in config_file.read_text():
                wait_until(
                    lambda model=model: available(f"127.0.0.1:{port}", model),
                    START_TIMEOUT,
                    f"{model} AVAILABLE on the model server",
                    process,
                )
        yield ModelServer(f"127.0.0.1:{port}", port, config_file, process)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def gateways(tmp_path_factory) -> Iterator[Callable[..., Gateway]]:
    """Start gateways with given settings; all are stopped at the end of the session."""
    started: list[Gateway] = []
    logs = tmp_path_factory.mktemp("gateway-logs")

    def start(backend: str, **settings: str) -> Gateway:
        gateway = start_gateway(backend, logs / f"gateway-{len(started)}.log", **settings)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        stop(gateway.process)


def _all_available(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def gateway(model_server, gateways) -> Gateway:
    """The gateway with default settings in front of the shared model server, all models ready."""
    started = gateways(model_server.address, model_config_file=str(model_server.config_file))
    wait_until(
        lambda: _all_available(started.url),
        START_TIMEOUT,
        "every model AVAILABLE through the gateway",
        model_server.process,
    )
    return started
