"""Warm-up: a new version answers real requests before it takes traffic.

As TF Serving: the PredictionLog records in `assets.extra/tf_serving_warmup_requests` (a
TFRecord file) are replayed, and a failure fails the load. A SavedModel without that file gets
one call of `serving_default` on zeros, when its inputs are numeric, so the first client request
does not pay for graph optimisation.
"""

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.apis import prediction_log_pb2

from service.model_repository import WARMUP_REQUESTS_PATH
from service.model_server import inference
from service.model_server.batching import BatchingParameters
from service.model_server.limits import FeedLimits
from service.model_server.servable import DEFAULT_SIGNATURE, SavedModelServable

log = logging.getLogger(__name__)

MAX_WARMUP_RECORDS = 1000  # TF Serving's limit on replayed records


def warm_up(servable: SavedModelServable) -> int:
    """Replay the warm-up records (or one synthetic call); returns how many calls were made."""
    records = servable.path / WARMUP_REQUESTS_PATH
    if records.is_file():
        return _replay(servable, records)
    return _call_on_zeros(servable)


def _replay(servable: SavedModelServable, records: Path) -> int:
    count = 0
    for serialized in tf.data.TFRecordDataset(str(records)).take(MAX_WARMUP_RECORDS):
        record = prediction_log_pb2.PredictionLog.FromString(serialized.numpy())
        kind = record.WhichOneof("log_type")
        if kind == "predict_log":
            request = record.predict_log.request
            signature_name = request.model_spec.signature_name
            servable.predict(signature_name, request.inputs, list(request.output_filter))
        elif kind == "classify_log":
            request = record.classify_log.request
            inference.classify(servable, request.model_spec.signature_name, request.input)
        elif kind == "regress_log":
            request = record.regress_log.request
            inference.regress(servable, request.model_spec.signature_name, request.input)
        elif kind == "multi_inference_log":
            inference.multi_inference(servable, record.multi_inference_log.request)
        else:
            raise ValueError(f"unsupported warm-up record {kind!r} in {records}")
        count += 1
    return count


def _call_on_zeros(servable: SavedModelServable) -> int:
    signature = servable.signature_defs.get(DEFAULT_SIGNATURE)
    if signature is None:
        return 0
    inputs = {}
    for name, info in signature.inputs.items():
        dtype = tf.dtypes.as_dtype(info.dtype)
        if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
            return 0
        shape = tf.TensorShape(info.tensor_shape)
        if shape.rank is None:
            return 0
        inputs[name] = np.zeros(
            [1 if d is None else d for d in shape.as_list()], dtype.as_numpy_dtype
        )
    try:
        servable.run(DEFAULT_SIGNATURE, inputs)
    except Exception as error:  # a model may reject zeros; that says nothing about real inputs
        log.info("warm-up call on zeros for %s was refused: %s", servable.path, error)
    return 1


def load_and_warm_up(
    version_dir: Path,
    batching: BatchingParameters | None = None,
    session_config: config_pb2.ConfigProto | None = None,
    feed_limits: FeedLimits | None = None,
) -> SavedModelServable:
    servable = SavedModelServable(version_dir, batching, session_config, feed_limits)
    servable.warmup_calls = warm_up(servable)
    log.info("warmed up %s with %d call(s)", version_dir, servable.warmup_calls)
    return servable
