"""TF Serving's REST API through the gateway: the answers TF Serving's own REST tests expect.

Expected bodies come from ../shared/tfserving-testdata/README.md (TF Serving's REST tests, model
served as `default`); the digits model checks the same API on a model the pipeline trained.
"""

import base64
import json

import httpx
import numpy as np
import pytest
from gateway.servers import HALF_PLUS_TWO, LABELS, TWO_VERSIONS
from support import SHARED_TESTDATA

needs_testdata = pytest.mark.skipif(
    not HALF_PLUS_TWO.is_dir(), reason="../shared/tfserving-testdata is not present"
)


def post(gateway, path: str, body) -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", json=body, timeout=30)


@needs_testdata
@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (":predict", {"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]}),
        (":predict", {"inputs": [2.0, 3.0, 4.0]}, {"outputs": [3.0, 3.5, 4.0]}),
        (
            ":predict",
            {"signature_name": "serving_default", "instances": [[2.0], [3.0]]},
            {"predictions": [[3.0], [3.5]]},
        ),
        (
            ":classify",
            {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
            {"results": [[["", 3.0]]]},
        ),
        (
            ":regress",
            {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]},
            {"results": [3.0]},
        ),
        (
            ":regress",
            {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": [4.0]}]},
            {"results": [3.0, 4.0]},
        ),
        ("/versions/123:predict", {"instances": [2.0]}, {"predictions": [3.0]}),
    ],
    ids=["row", "columnar", "signature-name", "classify", "regress", "regress-2", "version"],
)
def test_half_plus_two_answers_as_tf_serving(gateway, path, body, expected):
    response = post(gateway, f"/v1/models/default{path}", body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == expected


@needs_testdata
def test_status_and_metadata_are_tf_servings(gateway):
    status = httpx.get(f"{gateway.url}/v1/models/default")
    assert status.json() == {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert httpx.get(f"{gateway.url}/v1/models/default/versions/123").json() == status.json()
    metadata = httpx.get(f"{gateway.url}/v1/models/default/metadata")
    expected = json.loads((SHARED_TESTDATA / "half_plus_two_model_metadata.json").read_text())
    assert metadata.status_code == 200
    assert metadata.json() == expected


@pytest.mark.skipif(not TWO_VERSIONS.is_dir(), reason="../shared/tfserving-testdata is absent")
@pytest.mark.parametrize("label", sorted(LABELS))
def test_version_labels_reach_their_version(gateway, label):
    version = str(LABELS[label])
    base = f"/v1/models/two/labels/{label}"
    metadata = httpx.get(f"{gateway.url}{base}/metadata").json()
    assert metadata["model_spec"]["version"] == version
    predict = post(gateway, f"{base}:predict", {"instances": [2.0]})
    assert predict.json() == {"predictions": [3.0]}
    regress = post(
        gateway, f"{base}:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}
    )
    assert regress.json() == {"results": [2.5]}
    by_version = httpx.get(f"{gateway.url}/v1/models/two/versions/{version}").json()
    assert [status["version"] for status in by_version["model_version_status"]] == [version]


@pytest.mark.skipif(not TWO_VERSIONS.is_dir(), reason="../shared/tfserving-testdata is absent")
def test_unknown_label_and_version_are_tf_servings_errors(gateway):
    label = post(gateway, "/v1/models/two/labels/nope:predict", {"instances": [2.0]})
    assert label.status_code == 400
    assert label.json() == {"error": "Unrecognized servable version label: nope"}
    version = post(gateway, "/v1/models/two/versions/7:predict", {"instances": [2.0]})
    assert version.status_code == 404
    assert "Specific(two, 7)" in version.json()["error"]


def test_digits_row_and_columnar_agree(gateway, trained_digits):
    example = json.loads(
        (trained_digits.version_dir / "assets.extra" / "example_request.json").read_text()
    )
    rows = post(gateway, "/v1/models/digits-cnn:predict", example)
    columns = post(gateway, "/v1/models/digits-cnn:predict", {"inputs": example["instances"]})
    assert rows.status_code == columns.status_code == 200, rows.text + columns.text
    (prediction,) = rows.json()["predictions"]
    outputs = columns.json()["outputs"]
    assert outputs["class_id"] == [prediction["class_id"]]
    np.testing.assert_allclose(outputs["probabilities"], [prediction["probabilities"]], atol=1e-6)
    assert abs(sum(prediction["probabilities"]) - 1) < 1e-4


def test_digits_version_url_and_metadata(gateway, trained_digits):
    version = trained_digits.version
    metadata = httpx.get(f"{gateway.url}/v1/models/digits-cnn/versions/{version}/metadata").json()
    assert metadata["model_spec"] == {
        "name": "digits-cnn",
        "version": str(version),
        "signature_name": "",
    }
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["image"]["dtype"] == "DT_FLOAT"
    assert set(signature["outputs"]) == {"probabilities", "class_id"}


@needs_testdata
def test_b64_values_reach_a_string_input(gateway):
    # classify_x_to_y takes serialized tf.Examples: a b64 string input through :predict.
    from service.wire import Example

    example = Example()
    example.features.feature["x"].float_list.value.append(2.0)
    encoded = base64.b64encode(example.SerializeToString()).decode()
    response = post(
        gateway,
        "/v1/models/default:predict",
        {"signature_name": "classify_x_to_y", "inputs": {"inputs": [{"b64": encoded}]}},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"outputs": [[3.0]]}


def backend_predicts(gateway, code: str) -> float:
    """How many Predict calls the gateway has made that the model server answered `code`."""
    prefix = f'nnserve_gateway_backend_seconds_count{{code="{code}",method="Predict"}}'
    lines = httpx.get(f"{gateway.url}/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def test_a_digit_without_its_size_1_dimensions_is_answered(model_server, gateways, trained_digits):
    # A gateway of its own: it has not yet learned that these tensors need restoring.
    gateway = gateways(model_server.address, model_config_file=str(model_server.config_file))
    example = json.loads(
        (trained_digits.version_dir / "assets.extra" / "example_request.json").read_text()
    )
    full = post(gateway, "/v1/models/digits-cnn:predict", example).json()["predictions"][0]
    digit = np.array(example["instances"][0])[..., 0].tolist()  # [8, 8] for [-1, 8, 8, 1]
    for body in [{"instances": [digit]}] * 3 + [{"inputs": digit}] * 3:
        response = post(gateway, "/v1/models/digits-cnn:predict", body)
        assert response.status_code == 200, response.text
        answer = response.json()
        (prediction,) = answer["predictions"] if "predictions" in answer else [answer["outputs"]]
        assert np.ravel(prediction["class_id"]).tolist() == [full["class_id"]]
        np.testing.assert_allclose(np.ravel(prediction["probabilities"]), full["probabilities"])
    # Each rank ([1, 8, 8] and [8, 8]) was sent as it is once, refused, and restored from then on.
    assert backend_predicts(gateway, "INVALID_ARGUMENT") == 2
