"""The retraining flow against a real `nnserve model-server` and `nnserve gateway` serving the model
config the flow writes: a better candidate is published, loaded, labelled stable, and versions
beyond keep_versions are pruned; a worse one is rejected with both numbers while every answer
stays as it was. Real Prefect flow runs (the session's API), real SavedModels, digits data."""

import json
import re
import shutil

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from support import DIGITS_SPEC, artifacts_of, nnserve_settings, wait_until
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from pipeline.datasets import load_dataset
from pipeline.flow import retrain
from pipeline.outcome import PUBLISHED, CandidateRejected
from pipeline.preprocess import split_dataset
from pipeline.spec import load_spec
from service import model_repository, serving_config
from service.model_status import ModelStatusClient

SPEC = """\
name: {name}
dataset: {{name: digits}}
model: {{architecture: simple-cnn, conv_filters: [4], dense_units: 16}}
training: {{epochs: 3}}
retraining: {{keep_versions: 2}}
"""


@pytest.fixture(scope="module")
def held_out_digits() -> np.ndarray:
    spec = load_spec(DIGITS_SPEC)
    return split_dataset(load_dataset(spec.dataset), spec.dataset).test.features[:20]


def run(stack, spec_path, runs, settings: dict | None = None, **parameters):
    """One flow run against the stack's model server; its final state."""
    with nnserve_settings(tfserving_addr=stack.grpc_address, **(settings or {})):
        return retrain(
            str(spec_path),
            model_repo=str(stack.repo),
            runs_dir=str(runs),
            return_state=True,
            **parameters,
        )


def through_gateway(stack, path: str, images: np.ndarray) -> np.ndarray:
    """Class probabilities from /v1/models/{path}:predict."""
    response = httpx.post(
        f"{stack.gateway_url}/v1/models/{path}:predict",
        json={"instances": images.tolist()},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return np.array([row["probabilities"] for row in response.json()["predictions"]])


def straight_to_grpc(stack, model: str, images: np.ndarray) -> tuple[int, np.ndarray]:
    """(version, probabilities) of a Predict without a version, straight to the model server."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(images.astype(np.float32)))
    with grpc.insecure_channel(stack.grpc_address) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=30
        )
    return response.model_spec.version.value, tf.make_ndarray(response.outputs["probabilities"])


def served_versions(stack, model: str) -> list[str]:
    response = httpx.get(f"{stack.gateway_url}/v1/models/{model}", timeout=30)
    return sorted(status["version"] for status in response.json()["model_version_status"])


def test_a_better_candidate_becomes_stable_and_older_versions_are_pruned(
    stack, prefect_api, held_out_digits, tmp_path
):
    spec_path = tmp_path / "retrain-better.yaml"
    spec_path.write_text(SPEC.format(name="retrain-better"))
    base = stack.repo / "retrain-better"

    first = run(stack, spec_path, tmp_path / "runs", overrides={"training": {"epochs": 1}})
    assert first.is_completed()
    assert first.result().version == 1
    only = re.fullmatch(
        r"version 1 is stable: first version: accuracy (\S+) >= gate.min_accuracy 0.0",
        first.message,
    )
    assert only and float(only[1]) == pytest.approx(first.result().evaluation.accuracy, abs=1e-4)
    assert first.result().promotion.confirmed_available  # loaded before it was labelled
    for version in (2, 3):  # published by earlier runs and never promoted
        shutil.copytree(base / "1", base / str(version))

    state = run(stack, spec_path, tmp_path / "runs")

    assert state.is_completed()
    result = state.result()
    assert (result.outcome, result.version, result.stable_version) == (PUBLISHED, 4, 1)
    assert result.evaluation.accuracy > result.stable_evaluation.accuracy
    assert state.message == f"version 4 is stable: {result.message}"
    both = re.fullmatch(r"candidate accuracy (\S+) >= stable (\S+)", result.message)
    assert both, result.message
    assert [float(number) for number in both.groups()] == pytest.approx(
        [result.evaluation.accuracy, result.stable_evaluation.accuracy], abs=1e-4
    )
    config = serving_config.read(stack.config_file)
    assert serving_config.labels(config, "retrain-better") == {"stable": 4, "previous": 1}
    assert result.promotion.served == (1, 4)
    # keep_versions 2: the two newest stay, and so does version 1, labelled previous.
    assert result.pruned == (2,)
    assert sorted(model_repository.list_versions(base)) == [1, 3, 4]
    metadata = model_repository.read_metadata(base / "4")
    assert metadata[model_repository.DECISION]["accepted"] is True

    assert straight_to_grpc(stack, "retrain-better", held_out_digits)[0] == 4
    expected = through_gateway(stack, "retrain-better/versions/4", held_out_digits)
    wait_until(
        lambda: np.allclose(
            through_gateway(stack, "retrain-better", held_out_digits), expected, atol=1e-6
        ),
        60,
        "the gateway's default route to answer from version 4",
        stack.model_server,
    )

    artifacts = artifacts_of(state.state_details.flow_run_id)
    report = artifacts["retrain-better-report"].data
    assert report.startswith("# retrain-better: version 4 published and stable\n")
    assert (
        f"| accuracy | {result.evaluation.accuracy:.4f} | {result.stable_evaluation.accuracy:.4f} |"
    ) in report
    assert "Labels: `stable` = 4, `previous` = 1; served versions: 1, 4" in report
    assert "Pruned versions 2" in report
    assert f"| learning curves | `{result.run_dir / 'curves.png'}` |" in report
    assert f"| confusion matrix | `{result.run_dir / 'confusion_matrix.png'}` |" in report
    table = json.loads(artifacts["retrain-better-metrics"].data)
    assert [(row["role"], row["version"], row["outcome"]) for row in table] == [
        ("candidate", "4", PUBLISHED),
        ("stable", "1", PUBLISHED),
    ]
    assert table[0]["accuracy"] == f"{result.evaluation.accuracy:.4f}"


def test_a_worse_candidate_is_rejected_and_every_answer_stays_as_it_was(
    stack, trained_digits, notifications, held_out_digits, tmp_path
):
    base = stack.repo / "digits-cnn"
    shutil.copytree(trained_digits.version_dir, base / "1")
    with ModelStatusClient(stack.grpc_address) as model_server:
        serving_config.promote(stack.config_file, "digits-cnn", 1, base, model_server, 60)
    expected = through_gateway(stack, "digits-cnn/versions/1", held_out_digits)
    wait_until(
        lambda: np.allclose(through_gateway(stack, "digits-cnn", held_out_digits), expected),
        60,
        "the gateway's default route to answer from the stable version",
        stack.model_server,
    )
    config_before = stack.config_file.read_text()

    # The same spec trained for one epoch instead of forty, judged by the comparison alone.
    state = run(
        stack,
        DIGITS_SPEC,
        tmp_path / "runs",
        settings={"notification_block": notifications.block},
        overrides={
            "training": {"epochs": 1},
            "gate": {"min_accuracy": 0.0, "max_regression": 0.005},
        },
    )

    assert state.is_failed()
    both = re.fullmatch(r"candidate accuracy (\S+) < stable (\S+) - 0\.005", state.message)
    assert both, state.message
    candidate, stable = map(float, both.groups())
    assert stable == pytest.approx(trained_digits.evaluation.accuracy, abs=1e-4)
    assert candidate < stable - 0.005

    rejected = state.result(raise_on_failure=False)
    assert isinstance(rejected, CandidateRejected)
    run_dir = rejected.result.run_dir
    decision = json.loads((run_dir / "decision.json").read_text())
    assert (decision["accepted"], decision["reason"]) == (False, state.message)
    assert (decision["metric"], decision["stable_version"]) == ("accuracy", 1)
    exported = model_repository.read_metadata(run_dir / "export")
    assert exported[model_repository.DECISION] == decision
    assert model_repository.rejection(exported) == state.message

    assert sorted(model_repository.list_versions(base)) == [1]  # nothing published
    assert stack.config_file.read_text() == config_before
    assert served_versions(stack, "digits-cnn") == ["1"]
    np.testing.assert_allclose(through_gateway(stack, "digits-cnn", held_out_digits), expected)
    version, answered = straight_to_grpc(stack, "digits-cnn", held_out_digits)
    assert version == 1
    np.testing.assert_allclose(answered, expected, atol=1e-6)

    (notification,) = notifications.received
    assert re.fullmatch(r"nnserve: digits-cnn-\S+ Failed", notification["subject"])
    assert notification["body"].startswith(state.message + "\n")

    artifacts = artifacts_of(state.state_details.flow_run_id)
    report = artifacts["digits-cnn-report"].data
    assert report.startswith("# digits-cnn: candidate rejected, nothing published\n")
    assert f"**rejected**: {state.message}" in report
    assert "| test metric | candidate | stable (version 1) |" in report
    assert f"| decision | `{run_dir / 'decision.json'}` |" in report
    assert f"| export (not published) | `{run_dir / 'export'}` |" in report
    table = json.loads(artifacts["digits-cnn-metrics"].data)
    assert [(row["role"], row["version"]) for row in table] == [("candidate", ""), ("stable", "1")]
