"""API keys, body size limit, CORS, and checks against the signature before the backend call."""

import httpx
import pytest


@pytest.fixture(scope="module")
def guarded(model_server, gateways):
    return gateways(
        model_server.address,
        model_config_file=str(model_server.config_file),
        api_keys="key-one, key-two",
        max_body_bytes="4096",
        cors_origins="http://app.example",
    )


def test_api_keys(guarded):
    url = f"{guarded.url}/v1/models/digits-cnn"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.json() == {"error": "missing API key: send it in the X-API-Key header"}
    wrong = httpx.get(url, headers={"X-API-Key": "key-three"})
    assert wrong.status_code == 403
    assert "not valid" in wrong.json()["error"]
    for key in ("key-one", "key-two"):
        assert httpx.get(url, headers={"X-API-Key": key}).status_code == 200
    # Probes and metrics stay open for the orchestrator.
    assert httpx.get(f"{guarded.url}/healthz").status_code == 200
    assert httpx.get(f"{guarded.url}/metrics").status_code == 200


def test_bodies_over_the_limit_are_413_with_or_without_content_length(guarded):
    url = f"{guarded.url}/v1/models/digits-cnn:predict"
    headers = {"X-API-Key": "key-one"}
    big = b'{"instances": [' + b"0.0," * 2000 + b"0.0]}"
    declared = httpx.post(url, content=big, headers=headers)
    assert declared.status_code == 413
    assert "larger than the limit of 4096 bytes" in declared.json()["error"]

    def chunks():
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    streamed = httpx.post(url, content=chunks(), headers=headers)  # chunked, no Content-Length
    assert streamed.status_code == 413
    assert "larger than the limit of 4096 bytes" in streamed.json()["error"]
    assert httpx.get(f"{guarded.url}/healthz").status_code == 200


def test_cors_when_configured(guarded, gateway):
    preflight = httpx.options(
        f"{guarded.url}/v1/models/digits-cnn:predict",
        headers={
            "Origin": "http://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://app.example"
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
    answer = httpx.get(
        f"{guarded.url}/v1/models/digits-cnn",
        headers={"Origin": "http://app.example", "X-API-Key": "key-one"},
    )
    assert answer.headers["access-control-allow-origin"] == "http://app.example"
    other = httpx.get(f"{guarded.url}/healthz", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # Off by default.
    plain = httpx.get(f"{gateway.url}/healthz", headers={"Origin": "http://app.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_inputs_are_checked_against_the_signature_before_the_backend(gateway):
    def backend_predicts() -> float:
        metrics = httpx.get(f"{gateway.url}/metrics").text
        prefix = 'nnserve_gateway_backend_seconds_count{code="INVALID_ARGUMENT",method="Predict"}'
        lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
        ok = 'nnserve_gateway_backend_seconds_count{code="OK",method="Predict"}'
        oks = [line for line in metrics.splitlines() if line.startswith(ok)]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines + oks)

    before = backend_predicts()
    cases = [
        ({"instances": [{"pixels": [[0.0] * 8] * 8}]}, "unknown input(s): pixels"),
        ({"instances": [[["a"] * 8] * 8]}, "expected DT_FLOAT"),
        (
            {"instances": [[[[0.0]] * 7] * 8]},
            "[1, 8, 7, 1] does not match the signature's [-1, 8, 8, 1]",
        ),
    ]
    for body, message in cases:
        response = httpx.post(f"{gateway.url}/v1/models/digits-cnn:predict", json=body)
        assert response.status_code == 400
        assert message in response.json()["error"]
    assert backend_predicts() == before
