"""Whether a SavedModel's graph takes inputs of given shapes, asked of TensorFlow's shape inference.

A signature declares its inputs' shapes, but the graph, not the declaration, decides what it can
compute: TF Serving's half_plus_two works element by element and answers a [3] tensor for its
[-1, 1] input, while a Conv2D needs rank 4. Feeding a kernel a shape it cannot take is unsafe:
some oneDNN kernels abort the process (a C++ CHECK) where the default kernels return an error.
So before a tensor whose shape the signature does not declare is fed, the signature's graph is
imported once more with that shape in place of the input, and TensorFlow's shape functions, the
same ones every op runs at graph construction, say whether any op refuses it. Answers are cached.
"""

import collections
import copy
import re
import threading
from collections.abc import Mapping

import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import meta_graph_pb2

CACHE_SIZE = 256  # answers kept per version; each key is a signature and the shapes checked
OUTPUT_SHAPES_ATTR = "_output_shapes"
# Shape function errors end with the node they came from: "... for '{{node conv}} = Conv2D[...]".
_NODE_SUFFIX = re.compile(r" for '\{\{node ([^}]+)\}\}.*", re.DOTALL)

ShapeKey = tuple[int | None, ...]
Declared = tuple[int | None, ...] | None  # None: an unknown rank


def declared_shape(info: meta_graph_pb2.TensorInfo) -> Declared:
    """A TensorInfo's shape as service.shapes takes it."""
    if info.tensor_shape.unknown_rank:
        return None
    return tuple(None if dim.size < 0 else dim.size for dim in info.tensor_shape.dim)


class GraphShapes:
    def __init__(self, meta_graph: meta_graph_pb2.MetaGraphDef) -> None:
        self._meta_graph = meta_graph
        self._graph_def: graph_pb2.GraphDef | None = None
        self._answers: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._declared = {
            name: {alias: declared_shape(info) for alias, info in signature.inputs.items()}
            for name, signature in meta_graph.signature_def.items()
        }

    def declared(self, signature_name: str) -> dict[str, Declared]:
        """The input shapes a signature declares, by alias."""
        return self._declared[signature_name]

    def refusal(self, signature_name: str, shapes: Mapping[str, ShapeKey]) -> str | None:
        """Why the signature's graph cannot take inputs of these shapes (None: it can). `shapes`
        maps input aliases to shapes, None for an unknown size; other inputs keep theirs."""
        key = (signature_name, tuple(sorted(shapes.items())))
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]
            # One check at a time: each imports the whole graph, and a burst of distinct shapes
            # should cost one core, not all of them.
            answer = self._check(self._meta_graph.signature_def[signature_name], shapes)
            self._answers[key] = answer
            if len(self._answers) > CACHE_SIZE:
                self._answers.popitem(last=False)
            return answer

    def _check(
        self, signature: meta_graph_pb2.SignatureDef, shapes: Mapping[str, ShapeKey]
    ) -> str | None:
        graph = tf.Graph()
        with graph.as_default():
            replacements = {
                signature.inputs[alias].name: tf.compat.v1.placeholder(
                    signature.inputs[alias].dtype, shape=shape
                )
                for alias, shape in shapes.items()
            }
            try:
                tf.compat.v1.import_graph_def(
                    self._shape_free_graph_def(),
                    input_map=replacements,
                    return_elements=[info.name for info in signature.outputs.values()],
                    name="",
                )
            except (ValueError, tf.errors.OpError) as error:
                return _first_reason(str(error))
        return None

    def _shape_free_graph_def(self) -> graph_pb2.GraphDef:
        """The graph without the shapes recorded when it was saved: each op's shape function
        must work them out from the new input shapes, not compare them with the old ones."""
        if self._graph_def is None:
            graph_def = copy.deepcopy(self._meta_graph.graph_def)
            # Marked as written by this TensorFlow, as the placeholders put in for the inputs
            # are: one set of shape-function rules for the whole graph (and no warning).
            versions = graph_def.versions
            versions.producer = max(versions.producer, tf.version.GRAPH_DEF_VERSION)
            for node in graph_def.node:
                node.attr.pop(OUTPUT_SHAPES_ATTR, None)
            for function in graph_def.library.function:
                for node in function.node_def:
                    node.attr.pop(OUTPUT_SHAPES_ATTR, None)
                for arg in function.arg_attr.values():
                    arg.attr.pop(OUTPUT_SHAPES_ATTR, None)
            self._graph_def = graph_def
        return self._graph_def


def _first_reason(message: str) -> str:
    """'Shape must be rank 4 but is rank 3 (at node conv2d/convolution)' from TF's long text."""
    first_line = message.strip().splitlines()[0] if message.strip() else "shape inference failed"
    node = _NODE_SUFFIX.search(first_line)
    if node is None:
        return first_line
    return f"{first_line[: node.start()]} (at node {node.group(1)})"
