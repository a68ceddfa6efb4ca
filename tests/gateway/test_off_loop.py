"""Large bodies are parsed, and images decoded, off the event loop: while one is being worked on,
/healthz is answered.

Each large request here is refused at the very end of its work (the last value cannot be
converted, the last image is corrupt), so that it never waits on the model server: on the event
loop, nothing else could be answered until it is done.
"""

import http.client
import socket
import threading
import time

import orjson
from gateway.image_files import png
from gateway.servers import SlowModelServer, start_gateway
from support import free_port, stop

# Long enough for the gateway to have read a request and be busy with it.
BUSY_AFTER_SECONDS = 0.1


def raw_request(port: int, method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    head += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def answered_in_order(port: int, big: bytes, path: str) -> tuple[list[str], int, bytes]:
    """Send `big`, then GET /healthz while it is being worked on; which answer came first?"""
    finished: list[str] = []
    answers: dict[str, tuple[int, bytes]] = {}

    def read(name: str, sock: socket.socket) -> None:
        response = http.client.HTTPResponse(sock)
        response.begin()
        answers[name] = response.status, response.read()
        finished.append(name)

    with (
        socket.create_connection(("127.0.0.1", port), timeout=60) as big_sock,
        socket.create_connection(("127.0.0.1", port), timeout=60) as probe,
    ):
        big_sock.sendall(big)
        reader = threading.Thread(target=read, args=("big", big_sock))
        reader.start()
        time.sleep(BUSY_AFTER_SECONDS)
        probe.sendall(raw_request(port, "GET", "/healthz"))
        read("healthz", probe)
        reader.join(60)
    assert answers["healthz"][0] == 200
    return finished, *answers["big"]


def test_healthz_is_answered_while_a_large_json_body_is_decoded(tmp_path):
    port = free_port()
    count = 2_000_000
    gateway = start_gateway(
        f"127.0.0.1:{port}",
        tmp_path / "gateway.log",
        model_repo=str(tmp_path),
        max_json_values=str(count + 10),
        max_tensor_elements=str(count),
        max_request_elements=str(count),
    )
    http_port = int(gateway.url.rsplit(":", 1)[1])
    body = b'{"inputs": [' + b"0.5," * (count - 1) + b"16777217]}"  # 8 MB
    try:
        with SlowModelServer(port, delay=0):
            small = orjson.dumps({"inputs": [0.5]})
            # Caches the signature, so that the large request never waits for it.
            with socket.create_connection(("127.0.0.1", http_port), timeout=30) as sock:
                sock.sendall(raw_request(http_port, "POST", "/v1/models/m:predict", small))
                response = http.client.HTTPResponse(sock)
                response.begin()
                assert response.status == 200
            big = raw_request(http_port, "POST", "/v1/models/m:predict", body)
            order, status, answer = answered_in_order(http_port, big, "/v1/models/m:predict")
    finally:
        stop(gateway.process)
    assert status == 400 and b"16777217" in answer
    assert order == ["healthz", "big"]


def test_healthz_is_answered_while_images_are_decoded(gateway):
    # Three 4096x4096 images to decode, and a fourth whose pixel data is cut short.
    files = [png(4096, 4096)] * 3 + [png(4096, 4096)[:-200]]
    boundary = "nnserve-test-boundary"
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{i}.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    port = int(gateway.url.rsplit(":", 1)[1])
    path = "/v1/models/digits-cnn:classify_images"
    big = raw_request(
        port, "POST", path, body, Content_Type=f"multipart/form-data; boundary={boundary}"
    )
    order, status, answer = answered_in_order(port, big, path)
    assert status == 400 and b"3.png" in answer
    assert order == ["healthz", "big"]
