"""Malformed and oversized requests straight to the model server over gRPC, with TF Serving's
official client stubs: each gets the status the contract names and a message saying what was
wrong, and the health check passes after it."""

import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import tensorflow as tf
from robustness.stack import DIGITS, HALF_PLUS_TWO, Stack, model_server_config, predict_request
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import model_management_pb2, predict_pb2

from service.json_logging import is_json_line

Code = grpc.StatusCode
MIB = 1024 * 1024
LONG_NAME = 16 * 1024 + 1  # characters: over 16 KB
# A message may echo a name cut to 256 characters (the contract), plus its explanation.
MAX_MESSAGE = 1024


def claimed(
    dtype: int, shape: list[int], unknown_rank: bool = False, **values
) -> tensor_pb2.TensorProto:
    """A TensorProto claiming `shape` whatever values it carries."""
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    proto.tensor_shape.unknown_rank = unknown_rank
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def tiny(request: predict_pb2.PredictRequest) -> predict_pb2.PredictRequest:
    assert request.ByteSize() <= 64  # a few dozen bytes on the wire, whatever it claims
    return request


def half_plus_two_x(rows: int) -> np.ndarray:
    return (np.arange(rows, dtype=np.float32) % 100).reshape(rows, 1)


def as_tensor_content(values: np.ndarray) -> tensor_pb2.TensorProto:
    return claimed(types_pb2.DT_FLOAT, list(values.shape), tensor_content=values.tobytes())


def half_plus_two_answered(rows: int) -> Callable[[predict_pb2.PredictResponse], list[str]]:
    def check(response: predict_pb2.PredictResponse) -> list[str]:
        y = tf.make_ndarray(response.outputs["y"])
        expected = half_plus_two_x(rows) * 0.5 + 2
        if y.shape != expected.shape or not np.array_equal(y, expected):
            return [f"answered y of shape {list(y.shape)}, not 0.5 * x + 2 for all {rows} rows"]
        return []

    return check


def with_model_spec(request: predict_pb2.PredictRequest, **spec) -> predict_pb2.PredictRequest:
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    return request


def digit_request(stack: Stack) -> predict_pb2.PredictRequest:
    image = np.array([stack.models.digit], dtype=np.float32)
    return predict_request(DIGITS, image=as_tensor_content(image))


@dataclass(frozen=True)
class Case:
    id: str
    request: Callable[[Stack], predict_pb2.PredictRequest]
    codes: tuple[Code, ...]  # OK among them only where the request is fine, if large
    words: tuple[str, ...] = ()  # each must be in the status message
    max_message: int | None = None
    check_answer: Callable[[predict_pb2.PredictResponse], list[str]] | None = None


CASES = [
    Case(
        "digits-rank-3-image",
        lambda stack: predict_request(
            DIGITS, image=claimed(types_pb2.DT_FLOAT, [2, 8, 8], float_val=[0.0] * 128)
        ),
        (Code.INVALID_ARGUMENT,),
        ("input 'image' has shape [2, 8, 8] but the signature expects [-1, 8, 8, 1]",),
    ),
    Case(
        "claims-1e8-floats-unknown-input",
        lambda stack: tiny(
            predict_request(
                HALF_PLUS_TWO,
                nope=claimed(types_pb2.DT_FLOAT, [100_000_000, 1], float_val=[1.0]),
            )
        ),
        (Code.INVALID_ARGUMENT,),
        ("nope",),
    ),
    Case(
        "claims-1e8-floats-x",
        lambda stack: tiny(
            predict_request(
                HALF_PLUS_TWO, x=claimed(types_pb2.DT_FLOAT, [100_000_000, 1], float_val=[1.0])
            )
        ),
        (Code.INVALID_ARGUMENT,),
        ("input 'x' has 100000000 elements", "--max_tensor_elements"),
    ),
    Case(
        "string-claims-2e7",
        lambda stack: with_model_spec(
            predict_request(
                HALF_PLUS_TWO,
                inputs=claimed(types_pb2.DT_STRING, [20_000_000], string_val=[b"x"]),
            ),
            signature_name="classify_x_to_y",
        ),
        (Code.INVALID_ARGUMENT,),
        ("input 'inputs' has 20000000 elements", "--max_tensor_elements"),
    ),
    Case(
        # Not a serialized tf.Example, and not UTF-8: TensorFlow's parse error quotes the byte.
        "non-utf8-example-to-classify-signature",
        lambda stack: with_model_spec(
            predict_request(
                HALF_PLUS_TWO, inputs=claimed(types_pb2.DT_STRING, [1], string_val=[b"\xff"])
            ),
            signature_name="classify_x_to_y",
        ),
        (Code.INVALID_ARGUMENT,),
        ("example",),
    ),
    Case(
        "tensor-content-48MiB",
        lambda stack: predict_request(
            HALF_PLUS_TWO, x=as_tensor_content(half_plus_two_x(48 * MIB // 4))
        ),
        (Code.OK,),  # 12.6 M elements: within every limit, so it is answered
        check_answer=half_plus_two_answered(48 * MIB // 4),
    ),
    Case(
        "tensor-content-65MiB",
        lambda stack: predict_request(
            HALF_PLUS_TWO, x=as_tensor_content(half_plus_two_x(65 * MIB // 4))
        ),
        (Code.RESOURCE_EXHAUSTED,),  # over the 64 MiB message limit: gRPC refuses it unread
        ("larger than max",),
    ),
    Case(
        "dim-minus-one",
        lambda stack: predict_request(
            HALF_PLUS_TWO, x=claimed(types_pb2.DT_FLOAT, [-1, 1], float_val=[1.0])
        ),
        (Code.INVALID_ARGUMENT,),
        ("tensor parsing error: x",),
    ),
    Case(
        "unknown-rank-with-values",
        lambda stack: predict_request(
            HALF_PLUS_TWO,
            x=claimed(types_pb2.DT_FLOAT, [], unknown_rank=True, float_val=[1.0, 2.0, 3.0]),
        ),
        (Code.INVALID_ARGUMENT,),
        ("rank",),
    ),
    Case(
        "model-name-16KB",
        lambda stack: with_model_spec(digit_request(stack), name="m" * LONG_NAME),
        (Code.NOT_FOUND,),
        ("Servable not found",),
        max_message=MAX_MESSAGE,
    ),
    Case(
        "version-label-16KB",
        lambda stack: with_model_spec(digit_request(stack), version_label="l" * LONG_NAME),
        (Code.INVALID_ARGUMENT,),
        ("Unrecognized servable version label",),
        max_message=MAX_MESSAGE,
    ),
    Case(
        "signature-name-16KB",
        lambda stack: with_model_spec(digit_request(stack), signature_name="s" * LONG_NAME),
        # TF Serving answers an unknown signature of Predict with FAILED_PRECONDITION.
        (Code.FAILED_PRECONDITION, Code.INVALID_ARGUMENT),
        ("not found",),
        max_message=MAX_MESSAGE,
    ),
]


def outcome_problems(case: Case, stack: Stack) -> list[str]:
    try:
        response = stack.predict(case.request(stack))
    except grpc.RpcError as error:
        code, message = error.code(), error.details() or ""
    else:
        if Code.OK not in case.codes:
            return [f"answered OK; expected {[c.name for c in case.codes]}"]
        return case.check_answer(response) if case.check_answer else []
    if code not in case.codes:
        return [
            f"answered {code.name} ({message[:300]!r}); expected {[c.name for c in case.codes]}"
        ]
    problems = [
        f"the message {message[:300]!r} does not say {word!r}"
        for word in case.words
        if word not in message
    ]
    if case.max_message is not None and len(message) > case.max_message:
        problems.append(
            f"the message is {len(message)} characters long (it echoes the whole name?): "
            f"{message[:120]!r}..."
        )
    return problems


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_request_gets_its_status_and_the_server_stays_healthy(stack, case):
    problems = outcome_problems(case, stack)
    problems += stack.health_problems()
    assert not problems, "\n".join(problems)


# Both halves of a model name must end up in one log line, whatever control character is
# between them: a newline that starts a new line lets a client forge log records, and a raw ESC
# reaches the terminal of whoever reads the log.
NAME_HALVES = ("robustness", "reload")


@pytest.mark.parametrize("separator", ["\n", "\x1b[2J"], ids=["newline", "escape"])
def test_reload_with_a_control_character_in_a_name_keeps_the_log_one_json_object_per_line(
    stack, separator
):
    name = separator.join(NAME_HALVES)
    base_paths = stack.models.base_paths
    logged_before = len(stack.server_log_lines())
    problems = []
    accepted = True
    try:
        stack.reload_config(
            model_management_pb2.ReloadConfigRequest(
                config=model_server_config({**base_paths, name: base_paths[HALF_PLUS_TWO]})
            )
        )
    except grpc.RpcError as error:
        accepted = False
        if error.code() != Code.INVALID_ARGUMENT:
            problems.append(f"reload answered {error.code().name}: {error.details()!r}")
    finally:
        try:  # serve what the other cases expect again
            stack.reload_config(
                model_management_pb2.ReloadConfigRequest(config=model_server_config(base_paths))
            )
        except grpc.RpcError as error:
            problems.append(f"restoring the config: {error.code().name}: {error.details()!r}")

    def new_lines() -> list[str]:
        return stack.server_log_lines()[logged_before:]

    if accepted:
        # The model was loaded, which is logged; the supervisor relays its child's lines, so
        # give it a moment (bounded) to pass them on.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(NAME_HALVES[0] in x for x in new_lines()):
            time.sleep(0.2)
    lines = new_lines()
    not_json = [line for line in lines if not is_json_line(line)]
    if not_json:
        problems.append(
            f"{len(not_json)} of the {len(lines)} lines logged since the reload are not one JSON "
            f"object each, e.g. {not_json[:3]!r}"
        )
    raw_control = [line for line in lines if any(ord(c) < 32 for c in line)]
    if raw_control:
        problems.append(f"log lines with raw control characters: {raw_control[:3]!r}")
    if accepted and not any(all(half in line for half in NAME_HALVES) for line in lines):
        problems.append(f"no log line holds the whole name {name!r}: {lines[-5:]!r}")
    problems += stack.health_problems()
    assert not problems, "\n".join(problems)
