"""TF Serving's warm-up records: every export has them, in TF Serving's format exactly, made of
held-out test examples in raw units, for every signature at every warm-up batch size."""

import numpy as np
import pytest
import tensorflow as tf
from support import DIGITS_SPEC
from tensorflow_serving.apis import prediction_log_pb2

from pipeline.datasets import load_dataset
from pipeline.preprocess import split_dataset
from pipeline.spec import load_spec
from pipeline.warmup_records import (
    RECORDS_PER_BATCH_SIZE,
    WARMUP_BATCH_SIZES,
    serving_signatures,
    write_warmup_records,
)
from service.model_repository import WARMUP_REQUESTS_PATH
from service.model_server.warmup import MAX_WARMUP_RECORDS

BATCH_SIZES = [size for size in WARMUP_BATCH_SIZES for _ in range(RECORDS_PER_BATCH_SIZE)]


def read_records(version_dir) -> list[prediction_log_pb2.PredictionLog]:
    """Each record of the file as TF Serving parses it: a PredictionLog, nothing else."""
    path = str(version_dir / WARMUP_REQUESTS_PATH)
    return [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(path)
    ]


def requests_by_signature(records) -> dict[str, list]:
    by_signature: dict[str, list] = {}
    for record in records:
        assert record.WhichOneof("log_type") == "predict_log"
        request = record.predict_log.request
        by_signature.setdefault(request.model_spec.signature_name, []).append(request)
    return by_signature


def test_an_export_holds_warmup_records_of_its_test_split(trained_digits):
    records = read_records(trained_digits.version_dir)
    signatures = serving_signatures(trained_digits.version_dir)
    assert list(signatures) == ["serving_default"]
    (requests,) = requests_by_signature(records).values()
    assert len(records) <= MAX_WARMUP_RECORDS

    signature = signatures["serving_default"]
    declared = tf.TensorShape(signature.inputs["image"].tensor_shape)
    spec = load_spec(DIGITS_SPEC)
    test = split_dataset(load_dataset(spec.dataset), spec.dataset).test
    start = 0
    for request, batch_size in zip(requests, BATCH_SIZES, strict=True):
        assert request.model_spec.name == "digits-cnn"
        assert list(request.inputs) == ["image"]
        tensor = request.inputs["image"]
        assert tensor.dtype == signature.inputs["image"].dtype
        sent = tf.make_ndarray(tensor)
        assert declared.is_compatible_with(sent.shape) and len(sent) == batch_size
        # Raw pixel values (0..16) of held-out examples, as a client sends them.
        np.testing.assert_array_equal(sent, test.features[start : start + batch_size])
        start += batch_size


class TwoSignatures(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def doubled(self, x):
        return {"y": 2 * x}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def length(self, text):
        return {"length": tf.strings.length(text)}


def write_two_signatures(export_dir):
    module = TwoSignatures()
    signatures = {"serving_default": module.doubled, "length": module.length}
    tf.saved_model.save(module, str(export_dir), signatures=signatures)
    return export_dir


def test_every_signature_gets_records_and_few_examples_wrap_around(tmp_path):
    export_dir = write_two_signatures(tmp_path / "export")
    features = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])  # float64: sent as declared
    texts = np.array(["a", "bb", "ccc"], dtype=object)
    write_warmup_records(export_dir, {"x": features, "text": texts}, "m")

    by_signature = requests_by_signature(read_records(export_dir))
    assert sorted(by_signature) == ["length", "serving_default"]
    for name, input_name, examples in (
        ("serving_default", "x", features),
        ("length", "text", texts),
    ):
        requests = by_signature[name]
        assert [len(tf.make_ndarray(r.inputs[input_name])) for r in requests] == BATCH_SIZES
        last = tf.make_ndarray(requests[-1].inputs[input_name])
        rows = np.arange(sum(BATCH_SIZES) - WARMUP_BATCH_SIZES[-1], sum(BATCH_SIZES)) % 3
        expected = examples[rows]
        if input_name == "text":
            assert requests[-1].inputs["text"].dtype == tf.string.as_datatype_enum
            assert [value.decode() for value in last] == list(expected)
        else:
            assert requests[-1].inputs["x"].dtype == tf.float32.as_datatype_enum
            np.testing.assert_array_equal(last, expected.astype(np.float32))


def test_a_signature_input_without_examples_is_refused(tmp_path):
    export_dir = write_two_signatures(tmp_path / "export")
    with pytest.raises(ValueError, match=r"signature 'length' takes inputs \['text'\]"):
        write_warmup_records(export_dir, {"x": np.zeros((3, 2))}, "m")
    assert not (export_dir / WARMUP_REQUESTS_PATH).exists()
