"""An unexpected failure in the app: a 500 naming the request id, the traceback only logged."""

import asyncio
import json
import logging

import httpx
from prometheus_client import generate_latest

from service.gateway.observability import GatewayMetrics, RequestObserver
from service.json_logging import JsonFormatter


async def failing_app(scope, receive, send) -> None:
    raise RuntimeError("secret internal detail")


def test_a_crash_is_a_500_with_the_request_id_and_no_traceback(caplog):
    metrics = GatewayMetrics()
    app = RequestObserver(failing_app, metrics)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.get("/v1/models/m", headers={"X-Request-ID": "req-1"})

    with caplog.at_level(logging.INFO):
        response = asyncio.run(call())

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-1"
    assert response.json() == {"error": "internal error in the gateway (request id req-1)"}
    assert "secret" not in response.text and "Traceback" not in response.text
    logged = [JsonFormatter().format(record) for record in caplog.records]
    crash = json.loads(next(line for line in logged if "unhandled error" in line))
    assert crash["request_id"] == "req-1" and "secret internal detail" in crash["exception"]
    assert 'status="500"' in generate_latest(metrics.registry).decode()
