"""The gateway when the model server is slow, absent, killed and back: 504, 503, recovery."""

import json
import threading
from concurrent import futures

import grpc
import httpx
from gateway.servers import START_TIMEOUT, start_model_server
from support import free_port, stop, wait_until


def predict(url: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/digits-cnn:predict", content=body, timeout=30)


def example_body(trained_digits) -> bytes:
    return (trained_digits.version_dir / "assets.extra" / "example_request.json").read_bytes()


def test_a_missed_deadline_is_504(gateways, tmp_path):
    # A gRPC server that answers GetModelStatus only once released: no deadline can be met. (A
    # microsecond deadline on the real server is not enough: gRPC keeps deadlines in whole
    # milliseconds, and a local call sometimes finishes within one.)
    release = threading.Event()

    def late_status(request: bytes, context) -> bytes:
        release.wait(timeout=10)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "tensorflow.serving.ModelService",
                {"GetModelStatus": grpc.unary_unary_rpc_method_handler(late_status)},
            )
        ]
    )
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        gateway = gateways(address, model_repo=str(tmp_path), request_timeout_seconds="0.5")
        response = httpx.get(f"{gateway.url}/v1/models/digits-cnn", timeout=30)
    finally:
        release.set()
        server.stop(0)
    assert response.status_code == 504
    assert (
        f"model server at {address} did not answer within the deadline of 0.5 s"
        in response.json()["error"]
    )


def test_an_absent_model_server_is_503_after_bounded_retries(gateways, trained_digits, tmp_path):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    gateway = gateways(
        address,
        model_repo=str(tmp_path),
        backend_retries="2",
        backend_retry_backoff_seconds="0.01",
    )
    response = predict(gateway.url, example_body(trained_digits))
    assert response.status_code == 503
    message = response.json()["error"]
    assert f"model server at {address} is unavailable (3 attempts)" in message
    ready = httpx.get(f"{gateway.url}/readyz", timeout=30)
    assert ready.status_code == 503
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert (
        'nnserve_gateway_backend_seconds_count{code="UNAVAILABLE",method="GetModelMetadata"}'
        in (metrics)
    )


def test_killed_model_server_is_503_and_the_gateway_recovers_when_it_returns(
    model_server, gateways, trained_digits, tmp_path
):
    port = free_port()
    config_file = tmp_path / "digits.config"
    config_file.write_text(
        "model_config_list { config { name: 'digits-cnn' "
        f"base_path: '{trained_digits.version_dir.parent}' model_platform: 'tensorflow' }} }}\n"
    )
    first = start_model_server(config_file, port)
    try:
        gateway = gateways(f"127.0.0.1:{port}", model_config_file=str(config_file))
        body = example_body(trained_digits)
        wait_until(
            lambda: predict(gateway.url, body).status_code == 200,
            START_TIMEOUT,
            "digits through the first model server",
            first,
        )
        first.kill()
        first.wait(30)
        down = predict(gateway.url, body)
        assert down.status_code == 503, down.text
        assert "unavailable" in down.json()["error"]

        second = start_model_server(config_file, port)
        try:
            wait_until(
                lambda: predict(gateway.url, body).status_code == 200,
                START_TIMEOUT,
                "digits through the restarted model server",
                second,
            )
            assert gateway.process.poll() is None  # the same gateway process, never restarted
            prediction = predict(gateway.url, body).json()["predictions"][0]
            assert 0 <= prediction["class_id"] <= 9
            assert json.loads(httpx.get(f"{gateway.url}/readyz").text)["status"] == "ready"
        finally:
            stop(second)
    finally:
        stop(first)
