"""The whole path: the flow trains digits-cnn, model server and gateway serve it over HTTP."""

import signal

import httpx
import keras
import numpy as np
import pytest
from support import (
    DIGITS_SPEC,
    free_port,
    is_available,
    model_server_and_gateway,
    read_until,
    refused_start,
    start_up,
    stop,
    wait_until,
)

from pipeline.datasets import load_dataset
from pipeline.preprocess import split_dataset
from pipeline.spec import load_spec
from service import serving_config
from service.ports import listen

HELD_OUT = 50


@pytest.fixture(scope="module")
def gateway_url(trained_digits):
    with model_server_and_gateway(
        "--model_name=digits-cnn", f"--model_base_path={trained_digits.version_dir.parent}"
    ) as (url, model_server, gateway):
        wait_until(
            lambda: is_available(f"{url}/v1/models/digits-cnn"),
            120,
            "digits-cnn AVAILABLE through the gateway",
            process=model_server,
        )
        yield url
    # uvicorn re-raises SIGTERM once its graceful shutdown is done, so the exit says why.
    assert gateway.returncode in (0, -signal.SIGTERM)
    assert model_server.returncode == 0


def test_held_out_digits_through_the_gateway_match_the_keras_model(trained_digits, gateway_url):
    spec = load_spec(DIGITS_SPEC)
    test = split_dataset(load_dataset(spec.dataset), spec.dataset).test
    images, labels = test.features[:HELD_OUT], test.targets[:HELD_OUT]

    response = httpx.post(
        f"{gateway_url}/v1/models/digits-cnn:predict",
        json={"instances": images.tolist()},
        timeout=30,
    )

    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == HELD_OUT
    served_classes = np.array([prediction["class_id"] for prediction in predictions])
    served_probabilities = np.array([prediction["probabilities"] for prediction in predictions])
    keras_model = keras.saving.load_model(trained_digits.run_dir / "model.keras")
    keras_probabilities = keras_model.predict(images, verbose=0)
    np.testing.assert_array_equal(served_classes, keras_probabilities.argmax(axis=1))
    np.testing.assert_allclose(served_probabilities, keras_probabilities, atol=1e-5)
    assert np.mean(served_classes == labels) >= 0.95


def test_the_exported_example_request_predicts(trained_digits, gateway_url):
    body = (trained_digits.version_dir / "assets.extra" / "example_request.json").read_bytes()
    response = httpx.post(
        f"{gateway_url}/v1/models/digits-cnn:predict",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert 0 <= prediction["class_id"] <= 9


def test_version_status_is_tf_servings(trained_digits, gateway_url):
    response = httpx.get(f"{gateway_url}/v1/models/digits-cnn")
    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [
            {
                "version": str(trained_digits.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        (
            "POST",
            "/v1/models/nope:predict",
            b'{"instances": [[1.0]]}',
            404,
            "Servable not found for request: Latest(nope)",
        ),
        ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        ("POST", "/v1/models/digits-cnn:predict", b'{"instances": [1.0,', 400, "JSON"),
        ("POST", "/v1/models/digits-cnn:predict", b'{"instance": []}', 400, "instances"),
    ],
    ids=["unknown-model-predict", "unknown-model-status", "malformed-json", "missing-instances"],
)
def test_errors_are_json_with_tf_servings_status(gateway_url, method, path, body, status, message):
    response = httpx.request(method, f"{gateway_url}{path}", content=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]


def test_up_trains_an_empty_repository_serves_and_stops_on_ctrl_c(prefect_api, tmp_path):
    spec = tmp_path / "tiny-digits.yaml"
    spec.write_text(
        "name: tiny-digits\n"
        "dataset: {name: digits}\n"
        "model: {architecture: simple-cnn, conv_filters: [8], dense_units: 16}\n"
        "training: {epochs: 2}\n"
    )
    up, grpc_port, http_port = start_up(spec, tmp_path / "models", tmp_path / "runs")
    try:
        banner = read_until(up, "Press Ctrl-C to stop.")
        assert f"127.0.0.1:{grpc_port}" in banner and f"http://127.0.0.1:{http_port}" in banner
        assert "\n  tiny-digits  version 1 (stable)\n" in banner
        # The record of what is served was made from the repository, and both parts serve from it.
        config = serving_config.read(tmp_path / "models" / "models.config")
        assert serving_config.labels(config, "tiny-digits") == {"stable": 1}
        listing = httpx.get(f"http://127.0.0.1:{http_port}/v1/models", timeout=30).json()
        assert [(m["name"], m["labels"]) for m in listing["models"]] == [
            ("tiny-digits", {"stable": "1"})
        ]
        example = (
            tmp_path / "models" / "tiny-digits" / "1" / "assets.extra" / "example_request.json"
        )
        assert f"-d @{example}" in banner
        response = httpx.post(
            f"http://127.0.0.1:{http_port}/v1/models/tiny-digits:predict",
            content=example.read_bytes(),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        for port in (grpc_port, http_port):
            listen("127.0.0.1", port).close()  # both parts are gone and their ports free
    finally:
        stop(up, timeout=60)


def test_up_with_a_taken_port_is_a_clear_error(trained_digits):
    port = free_port()
    holder = listen("127.0.0.1", port)
    try:
        stderr = refused_start(
            "up",
            "--grpc-port",
            str(port),
            "--http-port",
            str(free_port()),
            env={"NNSERVE_MODEL_REPO": str(trained_digits.version_dir.parents[1])},
            timeout=60,
        )
    finally:
        holder.close()
    assert f"cannot listen on 127.0.0.1:{port}" in stderr
    assert "Traceback" not in stderr
