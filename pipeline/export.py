"""Export a trained classifier as a SavedModel with nnserve's serving signature and metadata."""

import json
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.datasets import InputSpec

METADATA_PATH = Path("assets.extra") / "nnserve.json"
# A ready request body (TF Serving's REST row format) with one real example, for a first curl.
EXAMPLE_REQUEST_PATH = Path("assets.extra") / "example_request.json"


def export_classifier(
    model: keras.Model, input_spec: InputSpec, export_dir: Path, metadata: dict, example: np.ndarray
) -> Path:
    """Write `serving_default`: raw `input_spec.name` in, `probabilities` and `class_id` out."""

    def serve(raw_input: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(raw_input, training=False)
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
                (None, *input_spec.shape), tf.as_dtype(input_spec.dtype), name=input_spec.name
            )
        ],
    )
    archive.write_out(str(export_dir), verbose=False)
    write_metadata(export_dir, {"input": input_spec.to_json(), **metadata})
    (export_dir / EXAMPLE_REQUEST_PATH).write_text(
        json.dumps({"instances": [example.tolist()]}, separators=(",", ":")) + "\n"
    )
    return export_dir


def write_metadata(export_dir: Path, metadata: dict) -> None:
    path = export_dir / METADATA_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**metadata, "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
