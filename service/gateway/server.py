"""Run the gateway under uvicorn on a socket bound up front: a taken port is a clear error."""

import signal

import uvicorn
from starlette.types import ASGIApp

from service import garbage_collection, json_logging
from service.gateway.app import create_app
from service.gateway.protocol import http_protocol
from service.ports import listen
from service.settings import Settings, env_name, get_settings


def serve(host: str, port: int) -> None:
    settings = get_settings()
    sock = listen(host, port)
    level = settings.log_level
    json_logging.configure(level, json_logging.capture_native_stderr(level))
    config = uvicorn_config(create_app(settings), settings)
    garbage_collection.tune_for_serving()
    # uvicorn raises SIGTERM again once it has shut down gracefully, for the handler it found:
    # with nothing left to do, the gateway then exits 0, as the model server does.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.Server(config).run(sockets=[sock])


def uvicorn_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """How `serve` runs `app` (bench/gateway_inprocess.py drives it the same way)."""
    return uvicorn.Config(
        app,
        http=http_protocol(
            settings.max_header_bytes,
            settings.max_headers,
            env_name("max_header_bytes"),
            env_name("max_headers"),
        ),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
