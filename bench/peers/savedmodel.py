"""The model as every peer serves it: the SavedModel's serving signature called on a request's
instances, answered in TF Serving's row format. Shared, so that the peers differ only in the
serving stack around it."""

import os

import numpy as np
import tensorflow as tf


class SavedModel:
    def __init__(self, path: str | None = None) -> None:
        loaded = tf.saved_model.load(path or os.environ["BENCH_SAVEDMODEL"])
        self._signature = loaded.signatures["serving_default"]
        ((self._input, spec),) = self._signature.structured_input_signature[1].items()
        self._dtype = spec.dtype.as_numpy_dtype

    def predict(self, instances: list) -> list[dict]:
        """`{"instances": [...]}` in, the list that goes under `"predictions"` out."""
        outputs = self._signature(**{self._input: tf.constant(np.asarray(instances, self._dtype))})
        arrays = {name: tensor.numpy() for name, tensor in outputs.items()}
        return [
            {name: array[i].tolist() for name, array in arrays.items()}
            for i in range(len(instances))
        ]
