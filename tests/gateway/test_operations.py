"""What operators get: probes, Prometheus metrics, JSON logs with the request id."""

import json

import httpx
from support import wait_until


def test_probes(gateway):
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz", timeout=30)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["models"]["digits-cnn"] == "AVAILABLE"


def test_readyz_is_503_while_a_configured_model_is_not_available(model_server, gateways, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(
        model_server.config_file.read_text().replace(
            "model_config_list {\n",
            "model_config_list {\n  config { name: 'missing' base_path: '/nowhere' "
            "model_platform: 'tensorflow' }\n",
        )
    )
    gateway = gateways(model_server.address, model_config_file=str(config))
    ready = httpx.get(f"{gateway.url}/readyz", timeout=30)
    assert ready.status_code == 503
    assert ready.json()["models"]["missing"] == "NOT_FOUND"
    assert ready.json()["models"]["digits-cnn"] == "AVAILABLE"


def test_metrics_count_requests_by_model_version_and_status(gateway, trained_digits):
    example = (trained_digits.version_dir / "assets.extra" / "example_request.json").read_bytes()
    version = trained_digits.version
    for _ in range(3):
        url = f"{gateway.url}/v1/models/digits-cnn/versions/{version}:predict"
        assert httpx.post(url, content=example).status_code == 200
    assert (
        httpx.post(f"{gateway.url}/v1/models/digits-cnn:predict", content=b"{").status_code == 400
    )
    assert httpx.post(f"{gateway.url}/v1/models/made-up-name:predict", content=b"{").status_code

    metrics = httpx.get(f"{gateway.url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    lines = metrics.text.splitlines()

    def value(prefix: str) -> float:
        (line,) = [line for line in lines if line.startswith(prefix)]
        return float(line.rsplit(" ", 1)[1])

    requests = "nnserve_gateway_requests_total{"
    assert (
        value(
            f'{requests}model="digits-cnn",operation="predict",status="200",version="{version}"}}'
        )
        >= 3
    )
    assert value(
        f'{requests}model="digits-cnn",operation="predict",status="400",version="latest"}}'
    )
    assert not [line for line in lines if "made-up-name" in line]  # unknown names are "(other)"
    assert value('nnserve_gateway_request_seconds_count{operation="predict"}') >= 4
    assert value('nnserve_gateway_backend_seconds_count{code="OK",method="Predict"}') >= 3


def test_request_id_is_returned_and_logged_as_json(gateway):
    given = httpx.get(f"{gateway.url}/v1/models/digits-cnn", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = httpx.get(f"{gateway.url}/v1/models/digits-cnn", headers={"X-Request-ID": "bad id\t!"})
    request_id = made.headers["x-request-id"]
    assert request_id != "bad id\t!" and len(request_id) == 32

    def logged() -> list[dict]:
        entries = [json.loads(line) for line in gateway.logs().splitlines() if line.startswith("{")]
        return [entry for entry in entries if entry.get("request_id") in ("abc-123", request_id)]

    wait_until(lambda: len(logged()) == 2, 10, "both requests in the gateway's log")
    for entry in logged():
        assert entry["path"] == "/v1/models/digits-cnn"
        assert entry["status"] == 200
        assert entry["level"] == "INFO" and entry["duration_ms"] >= 0
