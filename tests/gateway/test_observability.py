"""The gateway's JSON log lines and the bounded label values of its metrics."""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from gateway.servers import answers
from support import free_port, nnserve, stop, wait_until

from service.gateway.observability import (
    MAX_LABEL_VALUE_LENGTH,
    OTHER,
    VALUES_PER_MODEL,
    GatewayMetrics,
)
from service.json_logging import JsonFormatter


@pytest.mark.parametrize("path", ["/v1/models/digits:predict", "/v1/models/zürich:predict"])
def test_a_log_line_is_ascii_json_with_the_message_and_fields(path):
    record = logging.LogRecord(
        "nnserve.gateway.access", logging.INFO, __file__, 1, "%s %s", ("POST", path), None
    )
    record.fields = {"path": path, "status": 200, "model_dir": Path("/models/digits")}

    line = JsonFormatter().format(record)

    assert line.isascii() and "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == f"POST {path}"
    assert (entry["level"], entry["logger"]) == ("INFO", "nnserve.gateway.access")
    assert (entry["path"], entry["status"], entry["model_dir"]) == (path, 200, "/models/digits")
    assert entry["time"].endswith("+00:00")


def _scope(name: str, version: int | None = None, label: str | None = None) -> dict:
    params = {"name": name, "version": version, "label": label}
    path = "/v1/models/{name:model}/versions/{version:version}:predict"
    return {
        "path_params": {key: value for key, value in params.items() if value is not None},
        "route": SimpleNamespace(path=path),
    }


def _series(metrics: GatewayMetrics) -> set[tuple[str, str]]:
    (family,) = [f for f in metrics.registry.collect() if f.name == "nnserve_gateway_requests"]
    return {
        (sample.labels["model"], sample.labels["version"])
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_unknown_versions_and_labels_fold_into_other():
    metrics = GatewayMetrics()
    metrics.observe_request(_scope("m", version=1), 200, 0.001)
    for i in range(1000):
        metrics.observe_request(_scope("m", version=1000 + i), 404, 0.001)
        metrics.observe_request(_scope("m", label=f"label-{i}"), 400, 0.001)
        metrics.observe_request(_scope(f"model-{i}"), 404, 0.001)
    assert _series(metrics) == {("m", "1"), ("m", OTHER), (OTHER, "")}


def test_answered_versions_per_model_are_capped():
    metrics = GatewayMetrics()
    for i in range(1000):
        metrics.observe_request(_scope("m", version=i), 200, 0.001)
    versions = {version for model, version in _series(metrics) if model == "m"}
    assert len(versions) == VALUES_PER_MODEL + 1
    assert OTHER in versions


def test_label_values_are_cut_to_a_bounded_length():
    metrics = GatewayMetrics()
    long_name, long_label = "m" * 30_000, "l" * 30_000
    metrics.observe_request(_scope(long_name, label=long_label), 200, 0.001)
    ((model, version),) = _series(metrics)
    assert len(model) <= MAX_LABEL_VALUE_LENGTH and len(version) <= MAX_LABEL_VALUE_LENGTH
    assert model.startswith("mmm") and version.startswith("lll")


def test_the_real_gateway_keeps_made_up_versions_out_of_its_metrics(gateway):
    assert httpx.get(f"{gateway.url}/v1/models/digits-cnn").status_code == 200
    body = {"instances": [[[[0.0]] * 8] * 8]}
    for i in range(50):
        model = f"{gateway.url}/v1/models/digits-cnn"
        httpx.post(f"{model}/versions/{900_000 + i}:predict", json=body)
        httpx.post(f"{model}/labels/made-up-{i}:predict", json=body)
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert "900000" not in metrics and "made-up-" not in metrics
    for status in (400, 404):
        assert (
            f'model="digits-cnn",operation="predict",status="{status}",version="{OTHER}"'
        ) in metrics


def test_every_line_a_real_gateway_writes_is_json_native_ones_too(tmp_path):
    # GRPC_VERBOSITY=debug makes gRPC core warn, in its own plain-text format, that the level is
    # not for production: a native line written straight to descriptor 2.
    log_file = tmp_path / "gateway.log"
    port = free_port()
    env = {
        "NNSERVE_TFSERVING_ADDR": f"127.0.0.1:{free_port()}",  # nothing listens there
        "NNSERVE_MODEL_REPO": str(tmp_path),
        "NNSERVE_BACKEND_RETRIES": "0",
        "GRPC_VERBOSITY": "debug",
    }
    with log_file.open("wb") as log:
        process = nnserve("gateway", "--port", str(port), env=env, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{url}/healthz"), 60, "the gateway", process)
        assert httpx.post(f"{url}/v1/models/m:predict", content=b"{").status_code == 400
        assert httpx.post(f"{url}/v1/models/m:predict", json={"inputs": [1]}).status_code == 503
    finally:
        assert stop(process) == 0
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert all(isinstance(entry, dict) for entry in entries)
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    native = [entry for entry in entries if entry["logger"] == "native"]
    assert any(".cc:" in entry["message"] for entry in native)  # gRPC core's own line
    assert any(entry["logger"] == "nnserve.gateway.access" for entry in entries)
