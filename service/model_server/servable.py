"""One loaded SavedModel version, run the way TF Serving runs it.

TF Serving imports the MetaGraph tagged `serve` into a session and feeds and fetches the tensors its
SignatureDefs name. Doing the same here, rather than calling `tf.saved_model.load` functions, keeps
its behaviour: TF1 and TF2 SavedModels alike, and no shape checks beyond what the graph enforces.
"""

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
from tensorflow.python.util import deprecation

from service import shapes
from service.model_server import feeds
from service.model_server.batching import Batcher, BatchingParameters, Key
from service.model_server.errors import failed_precondition, invalid_argument, shown
from service.model_server.graph_shapes import GraphShapes, declared_shape
from service.model_server.limits import FeedLimits

DEFAULT_SIGNATURE = "serving_default"


class SavedModelServable:
    def __init__(
        self,
        version_dir: Path,
        batching: BatchingParameters | None = None,
        session_config: config_pb2.ConfigProto | None = None,
        feed_limits: FeedLimits | None = None,
    ) -> None:
        self.path = version_dir
        self.feed_limits = feed_limits or FeedLimits()
        self.session_config = session_config or config_pb2.ConfigProto()
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph, config=self.session_config)
        # TF Serving's loader is TF1's (a MetaGraph into a session), on purpose: TensorFlow's
        # notice that it is deprecated is no news to whoever reads the server's log.
        with self._graph.as_default(), deprecation.silence():
            meta_graph = tf.compat.v1.saved_model.loader.load(
                self._session, [tf.saved_model.SERVING], str(version_dir)
            )
        self.signature_defs: Mapping[str, meta_graph_pb2.SignatureDef] = dict(
            meta_graph.signature_def
        )
        self.graph_shapes = GraphShapes(meta_graph)
        self._callables: dict[Key, Callable[..., list[np.ndarray]]] = {}
        self._callables_lock = threading.Lock()
        self._batcher = Batcher(batching, self._run_callable) if batching else None
        self.warmup_calls = 0
        self._leases = 0
        self._retired = False
        self._lease_lock = threading.Lock()

    def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
        name = name or DEFAULT_SIGNATURE
        if name not in self.signature_defs:
            raise failed_precondition(f'Serving signature key "{shown(name)}" not found.')
        return self.signature_defs[name]

    def predict(
        self,
        signature_name: str,
        tensors: Mapping[str, tensor_pb2.TensorProto],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Predict: a request's tensors, checked before they are decoded, through a signature."""
        signature_name = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(signature_name)
        inputs = feeds.decode_inputs(
            signature_name, signature, tensors, self.feed_limits, self.graph_shapes
        )
        return self.run(signature_name, inputs, output_filter)

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Run a signature on named inputs; returns the outputs by alias."""
        signature_name = signature_name or DEFAULT_SIGNATURE
        output_names = _select_outputs(self.signature(signature_name), output_filter)
        values = self.run_many(
            {signature_name: inputs}, [(signature_name, alias) for alias in output_names]
        )
        return {alias: values[(signature_name, alias)] for alias in output_names}

    def run_many(
        self,
        inputs: Mapping[str, Mapping[str, np.ndarray]],
        fetches: Sequence[tuple[str, str]],
    ) -> dict[tuple[str, str], np.ndarray]:
        """One session run for several signatures: inputs by signature, then by alias; outputs
        by (signature, alias)."""
        by_tensor_name: dict[str, np.ndarray] = {}
        for signature_name, signature_inputs in inputs.items():
            signature = self.signature(signature_name)
            feeds.check_input_names(signature, signature_inputs)
            _check_input_dtypes(signature, signature_inputs)
            for alias, value in signature_inputs.items():
                by_tensor_name[signature.inputs[alias].name] = value
        tensor_names = [self.signature_defs[sig].outputs[alias].name for sig, alias in fetches]
        fetch_names = tuple(dict.fromkeys(tensor_names))  # each tensor fetched once
        feed_names = tuple(sorted(by_tensor_name))
        key = (feed_names, fetch_names)
        feed_values = [by_tensor_name[name] for name in feed_names]
        try:
            if self._batcher is not None:
                values = self._batcher.submit(key, feed_values)
            else:
                values = self._run_callable(key, feed_values)
        except tf.errors.InvalidArgumentError as error:
            message = _explain_run_error(self.signature_defs, inputs, error.message)
            raise invalid_argument(message) from error
        except UnicodeDecodeError as error:
            # TensorFlow could not turn the graph's error message into text: it quotes input
            # bytes that are not UTF-8 (a tf.Example that does not parse). Its code is lost on
            # the way; such messages come from ops refusing their input.
            text = error.object.decode("utf-8", errors="backslashreplace")
            message = _explain_run_error(self.signature_defs, inputs, text)
            raise invalid_argument(message) from error
        by_name = dict(zip(fetch_names, values, strict=True))
        return {fetch: by_name[name] for fetch, name in zip(fetches, tensor_names, strict=True)}

    def _run_callable(self, key: Key, feed_values: Sequence[np.ndarray]) -> list[np.ndarray]:
        with self._callables_lock:
            if key not in self._callables:
                feed_names, fetch_names = key
                options = config_pb2.CallableOptions(feed=feed_names, fetch=fetch_names)
                # The C++ callable feeds tensors by name without the Python session's shape check,
                # which TF Serving does not make either.
                self._callables[key] = self._session._make_callable_from_options(options)
            run = self._callables[key]
        return run(*feed_values)

    def acquire(self) -> None:
        """Take a lease for one request; a retired servable closes when its last lease ends."""
        with self._lease_lock:
            self._leases += 1

    def release(self) -> None:
        with self._lease_lock:
            self._leases -= 1
            close = self._retired and self._leases == 0
        if close:
            self._close()

    def retire(self) -> None:
        with self._lease_lock:
            self._retired = True
            close = self._leases == 0
        if close:
            self._close()

    def _close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
        self._session.close()


def session_config(
    session_parallelism: int = 0, intra_op_parallelism: int = 0, inter_op_parallelism: int = 0
) -> config_pb2.ConfigProto:
    """The session threads TF Serving's three flags ask for, by its rule (server.cc): the intra-
    and inter-op numbers win when either is set; 0 lets TensorFlow choose; a negative inter-op
    number runs a call's ops on the calling thread."""
    if intra_op_parallelism > 0 and inter_op_parallelism > 0 and session_parallelism > 0:
        raise ValueError(
            "Either configure --tensorflow_session_parallelism or "
            "(--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) separately. "
            "You cannot configure all."
        )
    if intra_op_parallelism > 0 or inter_op_parallelism > 0:
        intra, inter = intra_op_parallelism, inter_op_parallelism
    else:
        intra = inter = session_parallelism
    for flag, value in (("intra_op", intra), ("inter_op", inter)):
        if not -(2**31) <= value < 2**31:
            raise ValueError(
                f"--tensorflow_{flag}_parallelism (or --tensorflow_session_parallelism) is "
                f"{value}; a session takes a 32-bit thread count"
            )
    return config_pb2.ConfigProto(
        intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter
    )


def _check_input_dtypes(
    signature: meta_graph_pb2.SignatureDef, inputs: Mapping[str, np.ndarray]
) -> None:
    for name, value in inputs.items():
        expected = signature.inputs[name].dtype
        if not _accepts(expected, value.dtype):
            raise feeds.dtype_error(name, tf.dtypes.as_dtype(value.dtype).name, expected)


@functools.cache
def _accepts(expected: int, sent: np.dtype) -> bool:
    """Whether an array of `sent` feeds a signature input of DataType `expected`."""
    expected_dtype = tf.dtypes.as_dtype(expected)
    return sent == expected_dtype.as_numpy_dtype or (
        expected_dtype == tf.string and sent.kind in "SUO"
    )


def _select_outputs(
    signature: meta_graph_pb2.SignatureDef, output_filter: Sequence[str]
) -> tuple[str, ...]:
    if not output_filter:
        return tuple(sorted(signature.outputs))
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {shown(alias)} Outputs expected "
                f"to be in the set {_names(signature.outputs)}."
            )
    if len(set(output_filter)) != len(output_filter):
        repeated = sorted({shown(a) for a in output_filter if output_filter.count(a) > 1})
        raise invalid_argument(f"duplicate output tensor alias in output_filter: {repeated}")
    return tuple(output_filter)


def _explain_run_error(
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef],
    inputs: Mapping[str, Mapping[str, np.ndarray]],
    error_message: str,
) -> str:
    """The graph's own message, prefixed by the inputs whose shapes the signature does not admit."""
    mismatches = []
    for signature_name, signature_inputs in inputs.items():
        for name, value in sorted(signature_inputs.items()):
            declared = declared_shape(signature_defs[signature_name].inputs[name])
            if not shapes.compatible(value.shape, declared):
                mismatches.append(
                    f"input '{shown(name)}' has shape {shapes.text(value.shape)} but the "
                    f"signature expects {shapes.text(declared)}"
                )
    return "; ".join([*mismatches, error_message]) if mismatches else error_message


def _names(names) -> str:
    return "{" + ", ".join(sorted(shown(name) for name in names)) + "}"
