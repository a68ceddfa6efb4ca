"""Run the gateway under uvicorn on a socket bound up front: a taken port is a clear error."""

import uvicorn

from service.gateway.app import create_app
from service.gateway.observability import configure_json_logging
from service.ports import listen
from service.settings import get_settings


def serve(host: str, port: int) -> None:
    settings = get_settings()
    sock = listen(host, port)
    configure_json_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    uvicorn.Server(config).run(sockets=[sock])
