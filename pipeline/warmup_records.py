"""TF Serving's warm-up records for an export: held-out examples, sent as clients send them.

TF Serving reads `assets.extra/tf_serving_warmup_requests` when it loads a version, before the
version takes traffic: a TFRecord file whose every record is a `PredictionLog`, at most 1000 of
them, each replayed once against the version being loaded (the model name in a request is only
echoed; the version is the one loading). A record that fails fails the load. `nnserve
model-server` does the same. Without them, the first request to a new version pays for
TensorFlow's lazy initialisation (docs/benchmarks.md, "Warm-up records").
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from service.model_repository import WARMUP_REQUESTS_PATH

# A lone client's request, and a small batch: each first run of a shape is slower.
WARMUP_BATCH_SIZES = (1, 8)
RECORDS_PER_BATCH_SIZE = 3
# TF2 SavedModels list their init op among the signature_defs; no client can call it.
INIT_OP_SIGNATURE = "__saved_model_init_op"


def serving_signatures(export_dir: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The signatures TF Serving serves: those of the MetaGraph tagged `serve`."""
    saved_model = saved_model_pb2.SavedModel.FromString(
        (export_dir / "saved_model.pb").read_bytes()
    )
    for meta_graph in saved_model.meta_graphs:
        if tf.saved_model.SERVING in meta_graph.meta_info_def.tags:
            return {
                name: signature
                for name, signature in meta_graph.signature_def.items()
                if name != INIT_OP_SIGNATURE
            }
    raise ValueError(f"{export_dir} has no MetaGraph tagged {tf.saved_model.SERVING!r}")


def warmup_records(
    signatures: Mapping[str, meta_graph_pb2.SignatureDef],
    held_out: Mapping[str, np.ndarray],
    model_name: str,
) -> list[prediction_log_pb2.PredictionLog]:
    """Predict requests for every signature at every warm-up batch size, each input fed from
    `held_out` (examples by input name, in raw units), in the dtype the signature declares.
    Rows are taken in order and wrap around when there are fewer examples than a batch needs."""
    records = []
    for signature_name, signature in sorted(signatures.items()):
        missing = sorted(set(signature.inputs) - set(held_out))
        if missing:
            raise ValueError(
                f"signature {signature_name!r} takes inputs {sorted(signature.inputs)}; there "
                f"are held-out examples for {sorted(held_out)} only, none for {missing}"
            )
        start = 0
        for batch_size in WARMUP_BATCH_SIZES:
            for _ in range(RECORDS_PER_BATCH_SIZE):
                rows = np.arange(start, start + batch_size)
                start += batch_size
                record = prediction_log_pb2.PredictionLog()
                request = record.predict_log.request
                # Only echoed, and the label of TF Serving's latency metric for the warm-up calls.
                request.model_spec.name = model_name
                request.model_spec.signature_name = signature_name
                for name, info in signature.inputs.items():
                    dtype = tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
                    batch = np.take(held_out[name], rows, axis=0, mode="wrap").astype(dtype)
                    request.inputs[name].CopyFrom(tf.make_tensor_proto(batch))
                records.append(record)
    return records


def write_warmup_records(
    export_dir: Path, held_out: Mapping[str, np.ndarray], model_name: str
) -> Path:
    """Write the records for every signature of the SavedModel in `export_dir`."""
    records = warmup_records(serving_signatures(export_dir), held_out, model_name)
    path = export_dir / WARMUP_REQUESTS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    return path
