"""A CSV of texts and labels, trained through the real Prefect flow: the model tokenizes raw
strings itself, with a vocabulary learnt from the training split only, and the SavedModel takes
strings (`text`), from Python and over HTTP, answering as the Keras model does."""

import csv
import functools
import json
import re

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
from pydantic import TypeAdapter
from support import (
    is_available,
    model_server_and_gateway,
    retrain_without_model_server,
    wait_until,
)

from pipeline import training
from pipeline.datasets import DatasetError, load_dataset
from pipeline.flow import head_of
from pipeline.models import Head, ModelError, build_model
from pipeline.preprocess import split_dataset
from pipeline.spec import CsvTextDataset, EmbeddingLstmSpec, ModelSpec, load_spec
from service.version_contract import InputSpec

ROWS = 80
SEQUENCE_LENGTH = 12
FILLER = ["the", "a", "film", "was", "is", "it", "and", "this", "plot", "story", "of", "so"]
SENTIMENT = {
    "positive": ["good", "great", "lovely", "Fine!"],
    "negative": ["bad", "awful", "dull,", "Boring."],
}
ARCHITECTURES = {
    "embedding-lstm": {"architecture": "embedding-lstm", "embedding_dim": 8, "units": [8]},
    "conv1d": {"architecture": "conv1d", "filters": [8], "dense_units": 8, "embedding_dim": 8},
}


def write_reviews(path) -> None:
    """Reviews whose label shows in one sentiment word among the first few, and a word only
    that row holds (`row17`), which tells the split a vocabulary word came from."""
    rng = np.random.default_rng(7)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "review", "sentiment"])
        for row in range(ROWS):
            label = "positive" if row % 2 else "negative"
            # Up to 19 words: longer reviews are cut to SEQUENCE_LENGTH words by the model.
            words = [str(word) for word in rng.choice(FILLER, size=rng.integers(2, 18))]
            words.insert(int(rng.integers(0, 4)), str(rng.choice(SENTIMENT[label])))
            words.insert(int(rng.integers(0, 4)), f"row{row}")
            writer.writerow([row, " ".join(words), label])


def row_markers(texts) -> set[str]:
    return {marker for text in texts for marker in re.findall(r"row\d+", text)}


@pytest.fixture(scope="module")
def reviews_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("reviews") / "reviews.csv"
    write_reviews(path)
    return path


@pytest.fixture(scope="module")
def text_runs(prefect_api, tmp_path_factory, reviews_csv):
    """Trains each architecture once, on first use, through the real flow."""
    root = tmp_path_factory.mktemp("text-runs")

    @functools.cache
    def run(architecture: str):
        spec_path = root / f"reviews-{architecture}.yaml"
        spec_path.write_text(
            f"name: reviews-{architecture}\n"
            f"dataset: {{name: csv-text, path: {reviews_csv}, text: review,"
            f" target: sentiment, vocabulary_size: 200, sequence_length: {SEQUENCE_LENGTH},"
            " test_fraction: 0.25}\n"
            f"model: {json.dumps(ARCHITECTURES[architecture])}\n"
            "optimizer: {name: adam, learning_rate: 0.01}\n"
            "training: {epochs: 15, batch_size: 8}\n"
        )
        result = retrain_without_model_server(
            spec_path, model_repo=str(root / "models"), runs_dir=str(root / "runs")
        )
        return result, load_spec(spec_path)

    return run


def test_a_csv_of_texts_holds_raw_strings_and_class_ids(reviews_csv):
    spec = CsvTextDataset(
        name="csv-text", path=reviews_csv, text="review", target="sentiment", sequence_length=9
    )
    dataset = load_dataset(spec)
    assert dataset.labels == ["negative", "positive"]
    assert dataset.features.shape == (ROWS,) and isinstance(dataset.features[0], str)
    assert dataset.targets[:4].tolist() == [0, 1, 0, 1]
    assert dataset.input_spec.to_json() == {
        "name": "text",
        "shape": [],
        "dtype": "string",
        "sequence_length": 9,
        "vocabulary_size": 10000,
    }
    # The fingerprint hashes the texts themselves, so it is the same on every load.
    assert dataset.fingerprint() == load_dataset(spec).fingerprint()


def test_a_csv_of_texts_with_a_missing_column_or_cell_is_an_error_naming_it(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('review,sentiment\n"fine, really",positive\n,negative\nbad,\n')
    with pytest.raises(DatasetError, match=r"no column 'text'; the columns are \['review'"):
        load_dataset(CsvTextDataset(name="csv-text", path=path, text="text", target="sentiment"))
    spec = CsvTextDataset(name="csv-text", path=path, text="review", target="sentiment")
    with pytest.raises(DatasetError, match=r"'review' and a 'sentiment'; rows \[2, 3\]"):
        load_dataset(spec)


@pytest.mark.parametrize(
    "document",
    [*ARCHITECTURES.values(), {"architecture": "rnn-stack", "cell": "gru", "units": [4]}],
    ids=lambda document: document["architecture"],
)
def test_sequence_models_build_for_text_and_take_strings_of_any_length(document):
    text = InputSpec("text", (), "string", vocabulary_size=20, sequence_length=4)
    training_texts = np.array(["good film", "bad plot", "a good plot"], dtype=object)
    model = build_model(
        TypeAdapter(ModelSpec).validate_python(document),
        text,
        Head(num_classes=2),
        training_features=training_texts,
    )
    tokenize = model.get_layer("tokenize")
    good, film = (tokenize.get_vocabulary().index(word) for word in ("good", "film"))
    texts = ["Good, GOOD film!", "unseen", "", "film good film good film good"]
    # Padded at the end, cut after the first words; 1 stands for words training texts lack.
    np.testing.assert_array_equal(
        tokenize(np.array(texts, dtype=object)),
        [[good, good, film, 0], [1, 0, 0, 0], [0, 0, 0, 0], [film, good, film, good]],
    )
    outputs = model(np.array(["a good plot that is long and goes on", "bad"], dtype=object))
    assert outputs.shape == (2, 2)


def test_a_text_model_without_training_texts_is_an_error():
    text = InputSpec("text", (), "string", vocabulary_size=50, sequence_length=5)
    with pytest.raises(ModelError, match="learns its vocabulary from the training split"):
        build_model(EmbeddingLstmSpec(architecture="embedding-lstm"), text, Head(num_classes=2))


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_the_published_text_model_takes_strings_and_answers_as_the_keras_model(
    text_runs, architecture
):
    result, spec = text_runs(architecture)
    dataset = load_dataset(spec.dataset)
    test = split_dataset(dataset, spec.dataset).test
    metadata = json.loads((result.version_dir / "assets.extra" / "nnserve.json").read_text())
    assert metadata["input"] == {
        "name": "text",
        "shape": [],
        "dtype": "string",
        "sequence_length": SEQUENCE_LENGTH,
        "vocabulary_size": 200,
    }

    keras_model = keras.saving.load_model(result.run_dir / "model.keras")
    expected = training.predict(keras_model, test.features, head_of(spec, dataset))
    serve = tf.saved_model.load(str(result.version_dir)).signatures["serving_default"]
    assert serve.structured_input_signature[1]["text"].dtype == tf.string
    served = serve(text=tf.constant(list(test.features)))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(served["class_id"].numpy(), expected.argmax(axis=-1))
    # One sentiment word among filler is learnt: the words reach the model as themselves.
    assert result.evaluation.accuracy >= 0.9
    assert result.evaluation.accuracy == pytest.approx(
        np.mean(expected.argmax(axis=-1) == test.targets)
    )

    request = json.loads((result.version_dir / "assets.extra" / "example_request.json").read_text())
    (example,) = request["instances"]
    assert example == test.features[0]
    assert serve(text=tf.constant([example]))["class_id"].numpy()[0] == expected[0].argmax()


def test_the_vocabulary_is_learnt_from_the_training_split_only(text_runs):
    result, spec = text_runs("conv1d")
    splits = split_dataset(load_dataset(spec.dataset), spec.dataset)
    model = keras.saving.load_model(result.run_dir / "model.keras")
    vocabulary = set(model.get_layer("tokenize").get_vocabulary())

    assert row_markers(splits.train.features) <= vocabulary
    held_out = row_markers(splits.validation.features) | row_markers(splits.test.features)
    assert held_out and not held_out & vocabulary
    assert {"good", "fine", "boring"} <= vocabulary  # lower-cased, punctuation stripped


def test_a_text_model_is_served_over_http_from_raw_strings(text_runs):
    result, spec = text_runs("conv1d")
    name = spec.name
    with model_server_and_gateway(
        f"--model_name={name}", f"--model_base_path={result.version_dir.parent}"
    ) as (url, server, _):
        wait_until(
            lambda: is_available(f"{url}/v1/models/{name}"), 120, f"{name} AVAILABLE", server
        )
        body = (result.version_dir / "assets.extra" / "example_request.json").read_bytes()
        from_file = httpx.post(
            f"{url}/v1/models/{name}:predict",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        texts = ["A GOOD film, really.", "awful", "the plot was dull and the acting bad " * 4]
        from_client = httpx.post(
            f"{url}/v1/models/{name}:predict", json={"instances": texts}, timeout=30
        )

    model = keras.saving.load_model(result.run_dir / "model.keras")
    for response, sent in ((from_file, json.loads(body)["instances"]), (from_client, texts)):
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        expected = model.predict(np.array(sent, dtype=object), verbose=0)
        np.testing.assert_allclose([p["probabilities"] for p in predictions], expected, atol=1e-5)
        assert [p["class_id"] for p in predictions] == expected.argmax(axis=-1).tolist()
