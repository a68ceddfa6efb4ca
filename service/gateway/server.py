"""Run the gateway under uvicorn on a socket bound up front: a taken port is a clear error."""

import uvicorn

from service.gateway.app import create_app
from service.ports import listen
from service.settings import get_settings


def serve(host: str, port: int) -> None:
    sock = listen(host, port)
    config = uvicorn.Config(
        create_app(get_settings()), log_level="info", access_log=False, timeout_graceful_shutdown=30
    )
    uvicorn.Server(config).run(sockets=[sock])
