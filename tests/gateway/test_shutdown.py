"""SIGTERM: the gateway answers every request it has begun to receive, on keep-alive connections
too, then exits 0."""

import http.client
import signal
import socket
import threading
import time

import httpx
import orjson
from gateway.servers import SlowModelServer, start_gateway
from support import free_port, stop

BODY = orjson.dumps({"instances": [1.0]})
HEAD = (
    b"POST /v1/models/m:predict HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n"
)
LOAD_CLIENTS = 8


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def keep_alive_connection(port: int) -> socket.socket:
    """A connection that has had one request answered and is kept alive."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(HEAD + BODY)
    status, headers, _ = read_response(sock)
    assert status == 200 and headers.get("connection") != "close"
    return sock


def bounded_wait(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_sigterm_finishes_every_request_already_begun_and_exits_0(tmp_path):
    port = free_port()
    gateway = start_gateway(f"127.0.0.1:{port}", tmp_path / "gateway.log", model_repo=str(tmp_path))
    http_port = int(gateway.url.rsplit(":", 1)[1])
    outcomes: list[tuple[float, str]] = []  # (when the request was sent, how it ended)
    stopping = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            while not stopping.is_set():
                sent = time.monotonic()
                try:
                    response = client.post("/v1/models/m:predict", content=BODY)
                    ok = response.status_code == 200 and response.json() == {"predictions": [1.0]}
                    outcomes.append((sent, "answered" if ok else response.text))
                except httpx.ConnectError:
                    outcomes.append((sent, "refused"))  # a new connection after the signal
                    return
                except httpx.HTTPError as error:
                    outcomes.append((sent, f"{type(error).__name__}: {error}"))
                    return

    try:
        with SlowModelServer(port, delay=0.5) as backend:
            idle = keep_alive_connection(http_port)
            half_sent = keep_alive_connection(http_port)
            clients = [threading.Thread(target=load) for _ in range(LOAD_CLIENTS)]
            for client in clients:
                client.start()
            bounded_wait(lambda: backend.active == LOAD_CLIENTS, "every load client in flight")
            half_sent.sendall(HEAD[:40])  # a request begun on a kept-alive connection

            signalled = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            bounded_wait(lambda: "Shutting down" in gateway.logs(), "the gateway shutting down")
            half_sent.sendall(HEAD[40:] + BODY)
            idle.sendall(HEAD + BODY)  # sent before the client could know of the shutdown

            for sock in (half_sent, idle):
                status, headers, body = read_response(sock)
                assert (status, orjson.loads(body)) == (200, {"predictions": [1.0]})
                assert headers["connection"] == "close"
            stopping.set()
            for client in clients:
                client.join(30)
            assert gateway.process.wait(30) == 0
    finally:
        stop(gateway.process)

    before = [outcome for sent, outcome in outcomes if sent < signalled]
    after = [outcome for sent, outcome in outcomes if sent >= signalled]
    assert len(before) >= LOAD_CLIENTS
    assert set(before) == {"answered"}
    assert set(after) <= {"answered", "refused"}
