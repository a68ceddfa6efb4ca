"""One loaded SavedModel version, run the way TF Serving runs it.

TF Serving imports the MetaGraph tagged `serve` into a session and feeds and fetches the tensors its
SignatureDefs name. Doing the same here, rather than calling `tf.saved_model.load` functions, keeps
its behaviour: TF1 and TF2 SavedModels alike, and no shape checks beyond what the graph enforces.
"""

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

from service.model_server.errors import failed_precondition, invalid_argument

DEFAULT_SIGNATURE = "serving_default"


class SavedModelServable:
    def __init__(self, version_dir: Path) -> None:
        self.path = version_dir
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        with self._graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(
                self._session, [tf.saved_model.SERVING], str(version_dir)
            )
        self.signature_defs: Mapping[str, meta_graph_pb2.SignatureDef] = dict(
            meta_graph.signature_def
        )
        self._callables: dict[tuple[str, tuple[str, ...], tuple[str, ...]], object] = {}
        self._callables_lock = threading.Lock()

    def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
        name = name or DEFAULT_SIGNATURE
        if name not in self.signature_defs:
            raise failed_precondition(f'Serving signature key "{name}" not found.')
        return self.signature_defs[name]

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Run a signature on named inputs; returns the outputs by alias."""
        signature_name = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(signature_name)
        _check_input_names(signature, inputs)
        _check_input_dtypes(signature, inputs)
        output_names = _select_outputs(signature, output_filter)
        input_names = tuple(sorted(inputs))
        run = self._callable(signature_name, input_names, output_names)
        try:
            values = run(*(inputs[name] for name in input_names))
        except tf.errors.InvalidArgumentError as error:
            raise invalid_argument(_explain_run_error(signature, inputs, error)) from error
        return dict(zip(output_names, values, strict=True))

    def _callable(
        self, signature_name: str, input_names: tuple[str, ...], output_names: tuple[str, ...]
    ):
        key = (signature_name, input_names, output_names)
        with self._callables_lock:
            if key not in self._callables:
                signature = self.signature_defs[signature_name]
                options = config_pb2.CallableOptions(
                    feed=[signature.inputs[name].name for name in input_names],
                    fetch=[signature.outputs[name].name for name in output_names],
                )
                # The C++ callable feeds tensors by name without the Python session's shape check,
                # which TF Serving does not make either.
                self._callables[key] = self._session._make_callable_from_options(options)
            return self._callables[key]

    def close(self) -> None:
        self._session.close()


def _check_input_names(
    signature: meta_graph_pb2.SignatureDef, inputs: Mapping[str, np.ndarray]
) -> None:
    expected, sent = set(signature.inputs), set(inputs)
    if expected != sent:
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({_names(sent)}) != len({_names(expected)}). "
            f"Sent extra: {_names(sent - expected)}. "
            f"Missing but required: {_names(expected - sent)}."
        )


def _check_input_dtypes(
    signature: meta_graph_pb2.SignatureDef, inputs: Mapping[str, np.ndarray]
) -> None:
    for name, value in inputs.items():
        expected = tf.dtypes.as_dtype(signature.inputs[name].dtype)
        if value.dtype != expected.as_numpy_dtype and not (
            expected == tf.string and value.dtype.kind in "SUO"
        ):
            raise invalid_argument(
                f"input '{name}' has dtype {tf.dtypes.as_dtype(value.dtype).name} but the "
                f"signature expects {expected.name}"
            )


def _select_outputs(
    signature: meta_graph_pb2.SignatureDef, output_filter: Sequence[str]
) -> tuple[str, ...]:
    if not output_filter:
        return tuple(sorted(signature.outputs))
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                f"the set {_names(signature.outputs)}."
            )
    if len(set(output_filter)) != len(output_filter):
        repeated = sorted({alias for alias in output_filter if output_filter.count(alias) > 1})
        raise invalid_argument(f"duplicate output tensor alias in output_filter: {repeated}")
    return tuple(output_filter)


def _explain_run_error(
    signature: meta_graph_pb2.SignatureDef,
    inputs: Mapping[str, np.ndarray],
    error: tf.errors.InvalidArgumentError,
) -> str:
    """The graph's own message, prefixed by the inputs whose shapes the signature does not admit."""
    mismatches = []
    for name, value in sorted(inputs.items()):
        declared = tf.TensorShape(signature.inputs[name].tensor_shape)
        if not declared.is_compatible_with(value.shape):
            mismatches.append(
                f"input '{name}' has shape {list(value.shape)} but the signature expects "
                f"{_shape_text(declared)}"
            )
    return "; ".join([*mismatches, error.message]) if mismatches else error.message


def _shape_text(shape: tf.TensorShape) -> str:
    if shape.rank is None:
        return "any shape"
    return "[" + ", ".join("-1" if dim is None else str(dim) for dim in shape.as_list()) + "]"


def _names(names) -> str:
    return "{" + ", ".join(sorted(names)) + "}"
