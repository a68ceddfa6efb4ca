"""Request heads (request line and headers) over the gateway's limits: 431, the connection
closed, the gateway's memory untouched."""

import http.client
import select
import socket

import httpx
import pytest
from gateway.servers import Gateway, start_gateway
from support import free_port, stop

MAX_HEAD = 32 * 1024  # NNSERVE_MAX_HEADER_BYTES's default
MAX_HEADERS = 100  # NNSERVE_MAX_HEADERS's default


@pytest.fixture(scope="module")
def bare_gateway(tmp_path_factory) -> Gateway:
    """A gateway with default settings; heads are refused before any model server is asked."""
    logs = tmp_path_factory.mktemp("heads")
    gateway = start_gateway(f"127.0.0.1:{free_port()}", logs / "gateway.log", model_repo=str(logs))
    yield gateway
    stop(gateway.process)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def send_until_answered(gateway: Gateway, head_start: bytes, filler: bytes, total: int):
    """Send `head_start`, then `filler` again and again up to `total` bytes, stopping as soon as
    the gateway answers or closes; returns the response (status, JSON body)."""
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head_start)
        sent = len(head_start)
        while sent < total and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(filler)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(filler)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.getheader("connection"), response.read()


def test_an_unterminated_20_mb_header_is_431_and_costs_no_memory(bare_gateway):
    before = rss_mb(bare_gateway.process.pid)
    status, connection, body = send_until_answered(
        bare_gateway, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * 65536, 20 * 2**20
    )
    assert (status, connection) == (431, "close")
    message = httpx.Response(status, content=body).json()["error"]
    assert f"limit of {MAX_HEAD} bytes (NNSERVE_MAX_HEADER_BYTES)" in message
    assert rss_mb(bare_gateway.process.pid) - before < 20
    assert httpx.get(f"{bare_gateway.url}/healthz").status_code == 200


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (b"X-Big: " + b"a" * (MAX_HEAD + 1) + b"\r\n", [f"limit of {MAX_HEAD} bytes"]),
        (
            b"".join(b"X-%d: v\r\n" % i for i in range(100_000)),
            [f"more than {MAX_HEADERS} header fields", "NNSERVE_MAX_HEADERS"],
        ),
        (
            b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS + 1)),
            [f"more than {MAX_HEADERS} header fields"],
        ),
    ],
    ids=["one-large-header", "100000-headers", "101-headers"],
)
def test_heads_over_the_limits_are_431(bare_gateway, head: bytes, words: list[str]):
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n"
    status, connection, body = send_until_answered(bare_gateway, request, b"", len(request))
    assert (status, connection) == (431, "close")
    message = httpx.Response(status, content=body).json()["error"]
    for word in words:
        assert word in message


def test_heads_within_the_limits_and_large_bodies_pass(bare_gateway):
    headers = {f"X-{i}": "v" * 250 for i in range(MAX_HEADERS - 5)}  # ~ 25 KB
    assert httpx.get(f"{bare_gateway.url}/healthz", headers=headers).status_code == 200
    body = b'"' + b"a" * 2**21 + b'"'  # 2 MB after the head, arriving in large reads
    response = httpx.post(f"{bare_gateway.url}/v1/models/m:predict", content=body, timeout=30)
    assert response.status_code == 400  # a JSON string, not an object: past the head checks
    assert "Is not object" in response.json()["error"]
