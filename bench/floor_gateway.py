"""The floor for bench/gateway.py: the least a Python HTTP-to-gRPC gateway can do per request.

A bare ASGI app under uvicorn (httptools and uvloop, as `nnserve gateway`) that reads the POST
body, ignores it, sends one PredictRequest built at start-up through grpc.aio with no
serialization (the bytes are ready) and answers with the response's bytes as they came. No
JSON, no checks, no routing, no metrics or logs: what any gateway on uvicorn and grpc.aio costs
before it does its work.
Run: python bench/floor_gateway.py PORT BACKEND_ADDRESS EXAMPLE_REQUEST_JSON
"""

import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gateway import predict_request
from service.wire import methods


def create_app(request: bytes, connect: Callable[[], Callable]) -> Callable:
    """The floor's ASGI app; `connect()`, at start-up, gives the predict call (bytes to bytes)."""
    backend = {}

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                backend["predict"] = connect()
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more_body = True
        while more_body:
            more_body = (await receive()).get("more_body", False)
        answer = await backend["predict"](request, timeout=10)
        await send_ok(send, b"application/x-protobuf", answer)

    return app


async def send_ok(send: Callable, content_type: bytes, body: bytes) -> None:
    """A 200 answer through ASGI's `send`, as bare as it gets."""
    headers = [(b"content-type", content_type)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    request = predict_request(Path(sys.argv[3]).read_bytes()).SerializeToString()
    app = create_app(
        request,
        # bytes in and out: no serialization
        lambda: grpc.aio.insecure_channel(sys.argv[2]).unary_unary(methods.PREDICT.path),
    )
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
