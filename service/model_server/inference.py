"""Classify, Regress and MultiInference: tf.Example inputs through classify/regress signatures.

TF Serving's rules: the examples go in as one DT_STRING vector of serialized tf.Example, fed to
the signature input named "inputs"; classifiers answer with "classes" and/or "scores", regressors
with "outputs". Messages and codes are TF Serving's.
"""

import grpc
import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, inference_pb2, input_pb2, regression_pb2

from service.model_server.errors import ServingError, invalid_argument, shown
from service.model_server.servable import DEFAULT_SIGNATURE, SavedModelServable

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
INPUTS, CLASSES, SCORES, OUTPUTS = "inputs", "classes", "scores", "outputs"


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """The request's examples as TF Serving feeds them: serialized, context merged in."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        # Concatenated serializations parse as the merge of both messages.
        context = with_context.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in with_context.examples]
    else:
        examples = []
    if not examples:
        raise invalid_argument("Input is empty.")
    return np.array(examples, dtype=object)


def signature_for(
    servable: SavedModelServable, name: str
) -> tuple[str, meta_graph_pb2.SignatureDef]:
    name = name or DEFAULT_SIGNATURE
    if name not in servable.signature_defs:
        raise invalid_argument(f"No signature was found with the name: {shown(name)}")
    return name, servable.signature_defs[name]


def classify(
    servable: SavedModelServable, signature_name: str, request_input: input_pb2.Input
) -> classification_pb2.ClassificationResult:
    name, signature = signature_for(servable, signature_name)
    outputs = _classification_outputs(signature)
    examples = serialized_examples(request_input)
    values = servable.run(name, {INPUTS: examples}, outputs)
    return _classification_result(values, len(examples))


def regress(
    servable: SavedModelServable, signature_name: str, request_input: input_pb2.Input
) -> regression_pb2.RegressionResult:
    name, signature = signature_for(servable, signature_name)
    _check_regression_signature(signature)
    examples = serialized_examples(request_input)
    values = servable.run(name, {INPUTS: examples}, [OUTPUTS])
    return _regression_result(values[OUTPUTS], len(examples))


def multi_inference(
    servable: SavedModelServable, request: inference_pb2.MultiInferenceRequest
) -> list[inference_pb2.InferenceResult]:
    """All tasks on one model in one run, results in task order."""
    examples = serialized_examples(request.input)
    seen: set[str] = set()
    fetches: list[tuple[str, str]] = []  # (signature name, output alias) per fetched tensor
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if task.model_spec.name != request.tasks[0].model_spec.name:
            raise invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if name in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {shown(name)}")
        seen.add(name)
        if name not in servable.signature_defs:
            raise invalid_argument(f"Requested signature not found in model graph: {shown(name)}")
        signature = servable.signature_defs[name]
        if task.method_name == CLASSIFY_METHOD:
            aliases = _classification_outputs(signature)
        elif task.method_name == REGRESS_METHOD:
            _check_regression_signature(signature)
            aliases = [OUTPUTS]
        else:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Unsupported signature method_name: {shown(task.method_name)}",
            )
        fetches += [(name, alias) for alias in aliases]

    values = servable.run_many(
        {name: {INPUTS: examples} for name in seen},
        [(name, alias) for name, alias in fetches],
    )
    results = []
    for task in request.tasks:
        name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        result = inference_pb2.InferenceResult()
        result.model_spec.name = task.model_spec.name
        result.model_spec.signature_name = name
        task_values = {alias: values[(sig, alias)] for sig, alias in fetches if sig == name}
        if task.method_name == CLASSIFY_METHOD:
            result.classification_result.CopyFrom(
                _classification_result(task_values, len(examples))
            )
        else:
            result.regression_result.CopyFrom(
                _regression_result(task_values[OUTPUTS], len(examples))
            )
        results.append(result)
    return results


def _classification_outputs(signature: meta_graph_pb2.SignatureDef) -> list[str]:
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(
            f"Expected one or two output Tensors, found {len(signature.outputs)}"
        )
    if INPUTS not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {signature}")
    outputs = [alias for alias in (CLASSES, SCORES) if alias in signature.outputs]
    if not outputs:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" or '
            f'"scores". Signature was: {signature}'
        )
    return outputs


def _check_regression_signature(signature: meta_graph_pb2.SignatureDef) -> None:
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if INPUTS not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {signature}")
    if OUTPUTS not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {signature}")


def _classification_result(
    values: dict[str, np.ndarray], num_examples: int
) -> classification_pb2.ClassificationResult:
    classes, scores = values.get(CLASSES), values.get(SCORES)
    for alias, tensor, kind in ((CLASSES, classes, "SO"), (SCORES, scores, "f")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape(tensor)}"
            )
        if tensor.dtype.kind not in kind or (alias == SCORES and tensor.dtype != np.float32):
            expected = "DT_STRING" if alias == CLASSES else "DT_FLOAT"
            raise invalid_argument(f"Expected {alias} Tensor of {expected}. Got: {tensor.dtype}")
        if tensor.shape[0] != num_examples:
            raise invalid_argument(
                f"Expected {alias} output batch size of {num_examples}. Got: {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    for row in range(num_examples):
        classifications = result.classifications.add()
        for column in range(num_classes):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = _text(classes[row, column])
            if scores is not None:
                entry.score = float(scores[row, column])
    return result


def _regression_result(outputs: np.ndarray, num_examples: int) -> regression_pb2.RegressionResult:
    if not (outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or "
            f"[batch_size, 1] but got {_shape(outputs)}"
        )
    if outputs.shape[0] != num_examples:
        raise invalid_argument(
            "Input batch size did not match output batch size: "
            f"{num_examples} vs. {outputs.shape[0]}"
        )
    if outputs.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {outputs.dtype}")
    result = regression_pb2.RegressionResult()
    for value in outputs.reshape(-1):
        result.regressions.add().value = float(value)
    return result


def _shape(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
