"""Every shipped spec, shrunk to CI size with spec overrides, runs through the real Prefect flow:
it trains, writes its reports, exports, publishes, and the published SavedModel answers the test
split exactly as the in-memory Keras model does. The downloadable datasets come from a local
HTTP server holding generated files in their upstream formats."""

import csv
import functools
import hashlib
import json
from pathlib import Path

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
from support import model_server_and_gateway, retrain_without_model_server, wait_until

from pipeline import reports, training
from pipeline.datasets import load_dataset
from pipeline.flow import head_of
from pipeline.preprocess import split_dataset
from pipeline.spec import load_spec

SPECS_DIR = Path(__file__).resolve().parents[2] / "pipeline" / "specs"
EPOCHS = 2

# Small widths and fewer examples; everything else (optimizers, losses, schedules, augmentation,
# XLA) stays as shipped. Gates are opened: two epochs do not reach the real targets.
CI_SIZE = {
    "digits-cnn": {
        "model": {"conv_filters": [8], "dense_units": 16},
        "dataset": {"max_examples": 500},
    },
    "digits-lstm": {"model": {"units": [8, 8]}, "dataset": {"max_examples": 500}},
    "iris-mlp": {"model": {"units": [8]}},
    "sunspots-lstm": {"model": {"units": [8]}},
    "mnist-lenet5": {"model": {"width": 0.5}},
    "fashion-mnist-resnet18": {"model": {"width": 0.0625}},
    "cifar10-vgg16": {"model": {"width": 0.0625}},
    "imdb-lstm": {"model": {"embedding_dim": 8, "units": [8]}, "dataset": {"sequence_length": 40}},
    "boston-housing-mlp": {"model": {"units": [8]}},
}
DOWNLOADED = {"mnist", "fashion-mnist", "cifar10", "imdb", "boston-housing"}
EXPECTED_INPUT = {
    "digits-cnn": "image",
    "digits-lstm": "image",
    "iris-mlp": "features",
    "sunspots-lstm": "sequence",
    "mnist-lenet5": "image",
    "fashion-mnist-resnet18": "image",
    "cifar10-vgg16": "image",
    "imdb-lstm": "sequence",
    "boston-housing-mlp": "features",
}


def test_every_shipped_spec_has_a_ci_size():
    assert sorted(CI_SIZE) == sorted(path.stem for path in SPECS_DIR.glob("*.yaml"))


def overrides_for(name: str, server, cache: Path) -> dict:
    spec_document = load_spec(SPECS_DIR / f"{name}.yaml").model_dump()
    overrides = {
        "training": {"epochs": EPOCHS, "early_stopping": None},
        "gate": {"min_accuracy": 0.0, "max_mae": None},
        **CI_SIZE[name],
    }
    dataset_name = spec_document["dataset"]["name"]
    if dataset_name in DOWNLOADED:
        files = _catalog_files(dataset_name)
        overrides["dataset"] = {
            **overrides.get("dataset", {}),
            "source": server.url,
            "cache_dir": str(cache),
            "checksums": {
                name: hashlib.sha256(data).hexdigest()
                for name, data in server.files.items()
                if name in files
            },
        }
    return overrides


def _catalog_files(dataset_name: str) -> set[str]:
    from pipeline.downloads import CATALOG

    return {remote.name for remote in CATALOG[dataset_name][1]}


@pytest.fixture(scope="module")
def ci_runs(prefect_api, tmp_path_factory, dataset_server):
    """Runs each spec once, on first use, and keeps the result for every test that asks."""
    root = tmp_path_factory.mktemp("ci-runs")

    @functools.cache
    def run(name: str):
        overrides = overrides_for(name, dataset_server, root / "cache")
        result = retrain_without_model_server(
            SPECS_DIR / f"{name}.yaml",
            model_repo=str(root / "models"),
            runs_dir=str(root / "runs"),
            overrides=overrides,
        )
        return result, load_spec(SPECS_DIR / f"{name}.yaml", overrides)

    return run


@pytest.mark.parametrize("name", sorted(CI_SIZE))
def test_the_published_model_answers_the_test_split_as_the_keras_model_does(ci_runs, name):
    result, spec = ci_runs(name)
    dataset = load_dataset(spec.dataset)
    test = split_dataset(dataset, spec.dataset).test
    head = head_of(spec, dataset)

    metadata = json.loads((result.version_dir / "assets.extra" / "nnserve.json").read_text())
    assert metadata["input"]["name"] == EXPECTED_INPUT[name]
    assert metadata["labels"] == dataset.labels
    assert metadata["dataset_fingerprint"] == dataset.fingerprint()
    assert result.epochs_trained == EPOCHS

    keras_model = keras.saving.load_model(result.run_dir / "model.keras")
    expected = training.predict(keras_model, test.features, head)
    serve = tf.saved_model.load(str(result.version_dir)).signatures["serving_default"]
    raw = test.features.astype(metadata["input"]["dtype"])
    served = serve(**{metadata["input"]["name"]: tf.constant(raw)})

    if head.is_classifier:
        assert set(served) == {"probabilities", "class_id"}
        np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
        np.testing.assert_array_equal(served["class_id"].numpy(), expected.argmax(axis=-1))
        assert result.evaluation.accuracy == pytest.approx(
            np.mean(expected.argmax(axis=-1) == test.targets)
        )
    else:
        assert set(served) == {"prediction"}
        assert served["prediction"].shape == (len(test.targets),)
        np.testing.assert_allclose(served["prediction"].numpy(), expected, rtol=1e-5, atol=1e-4)
        assert result.evaluation.mae == pytest.approx(np.mean(np.abs(expected - test.targets)))

    request = json.loads((result.version_dir / "assets.extra" / "example_request.json").read_text())
    example = np.asarray(request["instances"], dtype=metadata["input"]["dtype"])
    assert example.shape == (1, *test.features.shape[1:])
    assert serve(**{metadata["input"]["name"]: tf.constant(example)})


def test_a_classifier_run_writes_every_report(ci_runs):
    result, spec = ci_runs("digits-cnn")
    run_dir = result.run_dir
    test = split_dataset(load_dataset(spec.dataset), spec.dataset).test
    model = keras.saving.load_model(run_dir / "model.keras")

    with open(run_dir / training.HISTORY_FILE, newline="") as handle:
        history = list(csv.DictReader(handle))
    assert [row["epoch"] for row in history] == [str(e) for e in range(EPOCHS)]
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(history[0])

    with open(run_dir / reports.PER_CLASS_FILE, newline="") as handle:
        per_class = list(csv.DictReader(handle))
    assert [row["class"] for row in per_class] == [str(d) for d in range(10)]
    assert sum(int(row["support"]) for row in per_class) == len(test.targets)
    # Recall weighted by support is the accuracy.
    correct = sum(float(row["recall"]) * int(row["support"]) for row in per_class)
    assert correct / len(test.targets) == pytest.approx(result.evaluation.accuracy, abs=1e-3)

    summary = (run_dir / reports.SUMMARY_FILE).read_text()
    assert f"parameters: {model.count_params():,}" in summary
    for layer in model.layers:
        assert layer.name in summary

    weights = (run_dir / reports.WEIGHTS_FILE).read_text()
    headers = [line for line in weights.splitlines() if line.startswith("# ")]
    assert len(headers) == len(model.weights)
    assert any("conv1" in h and f"shape [3, 3, 1, {8}]" in h for h in headers)

    for picture in (reports.CURVES_FILE, reports.CONFUSION_FILE):
        assert (run_dir / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for split in ("train", "validation"):
        assert list((run_dir / training.TENSORBOARD_DIR / split).glob("events.out.tfevents.*"))
    assert not (run_dir / training.CHECKPOINT_DIR).exists()  # a finished run drops it


def test_token_sequences_of_any_length_are_padded_or_cut_inside_the_graph(ci_runs):
    result, spec = ci_runs("imdb-lstm")
    test = split_dataset(load_dataset(spec.dataset), spec.dataset).test
    serve = tf.saved_model.load(str(result.version_dir)).signatures["serving_default"]
    padded = test.features[:4]
    as_stored = serve(sequence=tf.constant(padded))["probabilities"].numpy()
    longer = np.concatenate([np.full((4, 7), 9, "int32"), padded], axis=1)  # cut in front
    np.testing.assert_allclose(
        serve(sequence=tf.constant(longer))["probabilities"], as_stored, atol=1e-6
    )
    row = padded[0][padded[0] != 0]  # 0 is only ever padding
    shorter = serve(sequence=tf.constant(row[None, :]))["probabilities"].numpy()
    np.testing.assert_allclose(shorter, as_stored[:1], atol=1e-6)


def test_a_regressor_run_reports_its_error_and_no_confusion_matrix(ci_runs):
    result, _ = ci_runs("sunspots-lstm")
    with open(result.run_dir / training.HISTORY_FILE, newline="") as handle:
        assert {"mae", "val_mae"} <= set(next(csv.DictReader(handle)))
    assert (result.run_dir / reports.CURVES_FILE).exists()
    assert not (result.run_dir / reports.CONFUSION_FILE).exists()
    assert result.evaluation.accuracy is None and result.evaluation.mae > 0


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_every_published_model_is_served_over_http(ci_runs, tmp_path):
    """One model server holding every CI-sized model, the gateway in front: each answers its
    own example request as its Keras model does."""
    runs = {name: ci_runs(name) for name in sorted(CI_SIZE)}
    config = tmp_path / "models.config"
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{result.version_dir.parent}" '
        'model_platform: "tensorflow" }\n'
        for name, (result, _) in runs.items()
    )
    config.write_text("model_config_list {\n" + entries + "}\n")
    with model_server_and_gateway(
        f"--model_config_file={config}", gateway_env={"NNSERVE_MODEL_CONFIG_FILE": str(config)}
    ) as (url, server, _):
        wait_until(lambda: _ready(url), 300, "every model AVAILABLE", server)
        for name, (result, spec) in runs.items():
            assets = result.version_dir / "assets.extra"
            request = json.loads((assets / "example_request.json").read_text())
            response = httpx.post(f"{url}/v1/models/{name}:predict", json=request, timeout=60)
            assert response.status_code == 200, (name, response.text)
            (answer,) = response.json()["predictions"]
            dtype = json.loads((assets / "nnserve.json").read_text())["input"]["dtype"]
            example = np.asarray(request["instances"], dtype=dtype)
            model = keras.saving.load_model(result.run_dir / "model.keras")
            dataset = load_dataset(spec.dataset)
            expected = training.predict(model, example, head_of(spec, dataset))[0]
            if isinstance(answer, dict):
                np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-5)
                assert answer["class_id"] == int(np.argmax(expected))
            else:  # a regressor's single output: TF Serving's row format gives the bare value
                assert answer == pytest.approx(float(expected), rel=1e-5, abs=1e-4)
