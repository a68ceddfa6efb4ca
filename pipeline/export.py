"""Export a trained model as a SavedModel with nnserve's serving signature, metadata and
TF Serving's warm-up records."""

import json
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.models import Head
from pipeline.warmup_records import write_warmup_records
from service.model_repository import METADATA_PATH
from service.version_contract import InputSpec

# A ready request body (TF Serving's REST row format) with one real example, for a first curl.
EXAMPLE_REQUEST_PATH = Path("assets.extra") / "example_request.json"


def export_model(
    model: keras.Model,
    input_spec: InputSpec,
    head: Head,
    export_dir: Path,
    metadata: dict,
    held_out: np.ndarray,
) -> Path:
    """Write `serving_default`: raw `input_spec.name` in; `probabilities` and `class_id` out of a
    classifier, `prediction` (one value per example, in target units) out of a regressor.

    `held_out` are examples of the test split in raw units, as clients send them: the first is
    the example request, and the warm-up records are made of them."""

    def serve(raw_input: tf.Tensor) -> dict[str, tf.Tensor]:
        if input_spec.is_token_ids:
            raw_input = pad_or_cut(raw_input, input_spec.sequence_length)
        outputs = model(raw_input, training=False)
        if not head.is_classifier:
            return {"prediction": tf.reshape(outputs, [-1])}
        probabilities = tf.nn.softmax(outputs) if head.from_logits else outputs
        return {
            "probabilities": probabilities,
            "class_id": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[
            tf.TensorSpec(
                signature_shape(input_spec), tf.as_dtype(input_spec.dtype), name=input_spec.name
            )
        ],
    )
    archive.write_out(str(export_dir), verbose=False)
    write_metadata(export_dir, {"input": input_spec.to_json(), **metadata})
    (export_dir / EXAMPLE_REQUEST_PATH).write_text(
        json.dumps({"instances": [np.asarray(held_out[0]).tolist()]}, separators=(",", ":")) + "\n"
    )
    write_warmup_records(export_dir, {input_spec.name: held_out}, metadata["model_name"])
    return export_dir


def signature_shape(input_spec: InputSpec) -> tuple[int | None, ...]:
    """Batch first; token id sequences of any length (the graph pads or cuts them), and texts
    as one string per example."""
    if input_spec.is_token_ids:
        return (None, None)
    return (None, *input_spec.shape)


def pad_or_cut(ids: tf.Tensor, length: int) -> tf.Tensor:
    """The last `length` ids of each row, zero-padded in front, as the training data was."""
    ids = ids[:, -length:]
    return tf.pad(ids, [[0, 0], [length - tf.shape(ids)[1], 0]])


def write_metadata(export_dir: Path, metadata: dict) -> None:
    path = export_dir / METADATA_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**metadata, "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
