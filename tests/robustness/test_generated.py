"""Generated requests, a few hundred per stack: hypothesis builds TensorProtos for the model server
(random dtypes, ranks 0..6, dims from 0 to 2**63 - 1 and negative ones, too few or too many
values, tensor_content of any length, unknown_rank, random input names) and JSON bodies for the
gateway (random shapes, nesting and kinds of values). No answer may be INTERNAL / UNKNOWN or a
5xx; each batch is followed by the health check.

Generation is seeded per batch and nothing is shrunk: a failing request is reported as sent, and
after a crash the rest of its batch is reported as not run.
"""

import base64
import json
import math
from collections.abc import Callable

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from robustness.stack import DIGITS, HALF_PLUS_TWO, Stack
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

BATCHES = 3
EXAMPLES_PER_BATCH = 100
CALL_TIMEOUT = 60
MAX_TENSOR_ELEMENTS = 16_777_216  # the model server's default --max_tensor_elements
FAILURES_SHOWN = 8


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory) -> None:
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))  # caches out of the repository


SETTINGS = settings(
    max_examples=EXAMPLES_PER_BATCH,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def mostly(common: list, rarely: st.SearchStrategy) -> st.SearchStrategy:
    """One of `common`, or now and then (one time in ten) something drawn from `rarely`."""
    return st.integers(0, 9).flatmap(lambda i: rarely if i == 0 else st.sampled_from(common))


SIGNATURE_NAMES = mostly(
    ["", "", "serving_default", "classify_x_to_y", "regress_x2_to_y3"], st.text(max_size=8)
)
# What the served signatures take: model, signature, input, dtype, shape (-1: any size). Most
# generated requests aim at one of them, so that most get past the names to the tensors.
SIGNATURE_INPUTS = [
    (HALF_PLUS_TWO, "serving_default", "x", types_pb2.DT_FLOAT, [-1, 1]),
    (HALF_PLUS_TWO, "regress_x2_to_y3", "inputs", types_pb2.DT_FLOAT, [-1, 1]),
    (HALF_PLUS_TWO, "classify_x_to_y", "inputs", types_pb2.DT_STRING, [-1]),
    (DIGITS, "serving_default", "image", types_pb2.DT_FLOAT, [-1, 8, 8, 1]),
]
OTHER_MODEL_NAMES = st.sampled_from([HALF_PLUS_TWO, DIGITS, "nope", ""])
OTHER_INPUT_NAMES = st.one_of(st.sampled_from(["x", "image", "inputs"]), st.text(max_size=8))

# --- TensorProtos -----------------------------------------------------------------------------

# Claimed element counts stay where a correct server answers at once or refuses at once: at most
# SMALL (a few hundred KB, 1024 digit images), or over the tensor limit but at most LARGE (which
# a server without the limit would decode, run and answer in full: seconds and up to a GB each,
# hence one large size among many small ones), or beyond any machine's memory.
SMALL, LARGE, HUGE = 2**16, 2**25, 2**40
DIMS = st.sampled_from(
    [
        *[0, 1, 1, 1, 2, 2, 3, 8, 8, 8] * 2,  # small
        MAX_TENSOR_ELEMENTS + 1,  # large
        *[HUGE, 2**62, 2**63 - 1],  # huge
        *[-1, -(2**63)],
    ]
)
COMMON_DTYPES = [
    types_pb2.DT_FLOAT,
    types_pb2.DT_DOUBLE,
    types_pb2.DT_INT32,
    types_pb2.DT_INT64,
    types_pb2.DT_STRING,
    types_pb2.DT_BOOL,
    types_pb2.DT_HALF,
]
DTYPES = st.one_of(
    st.sampled_from(COMMON_DTYPES),
    st.sampled_from(sorted(types_pb2.DataType.values())),
    st.integers(0, 1000),  # numbers no DataType has
)
FLOAT32 = st.floats(width=32)
VALUE_FIELDS = {
    "float_val": FLOAT32,
    "double_val": st.floats(),
    "int_val": st.integers(-(2**31), 2**31 - 1),
    "int64_val": st.integers(-(2**63), 2**63 - 1),
    "uint32_val": st.integers(0, 2**32 - 1),
    "uint64_val": st.integers(0, 2**64 - 1),
    "bool_val": st.booleans(),
    "half_val": st.integers(-(2**31), 2**31 - 1),
    "string_val": st.binary(max_size=16),
    "scomplex_val": FLOAT32,
    "dcomplex_val": st.floats(),
}
FIELD_OF_DTYPE = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_STRING: "string_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_HALF: "half_val",
}


def claimed_elements(tensor: tensor_pb2.TensorProto) -> int | None:
    """Elements the shape claims; None for a negative dim or unknown_rank."""
    dims = [dim.size for dim in tensor.tensor_shape.dim]
    if tensor.tensor_shape.unknown_rank or any(size < 0 for size in dims):
        return None
    return math.prod(dims)


RANDOM_SHAPES = st.integers(0, 6).flatmap(lambda rank: st.lists(DIMS, min_size=rank, max_size=rank))


@st.composite
def shapes_near(draw, declared: list[int], sizes: st.SearchStrategy = DIMS) -> list[int]:
    """The declared shape with its -1 filled in, and now and then one dim dropped, added or
    changed."""
    dims = [draw(sizes) if size == -1 else size for size in declared]
    change = draw(st.sampled_from(["none", "none", "drop", "add", "replace"]))
    where = draw(st.integers(0, len(dims)))
    if change == "add":
        dims.insert(where, draw(sizes))
    elif change == "drop" and where < len(dims):
        del dims[where]
    elif change == "replace" and where < len(dims):
        dims[where] = draw(sizes)
    return dims


@st.composite
def tensor_protos(draw, dtype: int, declared: list[int]) -> tensor_pb2.TensorProto:
    """Mostly a tensor of the dtype and about the shape a signature declares, now and then any."""
    dtype = draw(mostly([dtype], DTYPES))
    dims = draw(st.one_of(shapes_near(declared), RANDOM_SHAPES))
    rank = len(dims)
    proto = tensor_pb2.TensorProto(dtype=dtype)
    proto.tensor_shape.unknown_rank = draw(st.integers(0, 9)) == 0
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    claimed = claimed_elements(proto)
    count = 0 if claimed is None else claimed
    if count > SMALL and not (MAX_TENSOR_ELEMENTS < count <= LARGE or count >= HUGE):
        count = 0
        del proto.tensor_shape.dim[:]  # out of the bands above: a scalar instead
    # A large claim at rank 4 would reach the digits CNN's convolutions as 16 M images on a server
    # without the limit: gigabytes at once, on a machine the suite shares.
    if MAX_TENSOR_ELEMENTS < count <= LARGE and rank >= 4:
        del proto.tensor_shape.dim[:]
        count = 0
    if draw(st.integers(0, 4)) == 0:
        size = draw(st.sampled_from([0, 1, 3, 4, 7, 8, 64, 1024]))
        if count <= SMALL and draw(st.booleans()):
            size = count * draw(st.sampled_from([1, 2, 4, 8, 16]))
        # A short pattern repeated: hypothesis draws a few KB per example at most.
        pattern = draw(st.binary(min_size=1, max_size=8))
        proto.tensor_content = (pattern * (size // len(pattern) + 1))[:size]
        return proto
    field = FIELD_OF_DTYPE.get(dtype) if draw(st.integers(0, 4)) else None
    field = field or draw(st.sampled_from(sorted(VALUE_FIELDS)))
    if count > SMALL:
        values = draw(st.integers(0, 3))  # fewer: the claim is the point
    else:
        values = draw(
            st.one_of(
                st.sampled_from([0, 1, max(count - 1, 0), count, count + 1]),
                st.integers(0, 2 * count + 2),
            )
        )
    pattern = draw(st.lists(VALUE_FIELDS[field], min_size=1, max_size=4))
    getattr(proto, field).extend((pattern * (values // len(pattern) + 1))[:values])
    return proto


@st.composite
def predict_requests(draw) -> predict_pb2.PredictRequest:
    model, signature, name, dtype, shape = draw(st.sampled_from(SIGNATURE_INPUTS))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = draw(mostly([model], OTHER_MODEL_NAMES))
    request.model_spec.signature_name = draw(mostly([signature], SIGNATURE_NAMES))
    names = {draw(mostly([name], OTHER_INPUT_NAMES))}
    names |= set(draw(st.lists(OTHER_INPUT_NAMES, max_size=draw(st.sampled_from([0, 0, 0, 1])))))
    for input_name in names:
        request.inputs[input_name].CopyFrom(draw(tensor_protos(dtype, shape)))
    return request


def describe(request: predict_pb2.PredictRequest) -> str:
    inputs = "; ".join(f"{name!r}: {_describe(t)}" for name, t in request.inputs.items())
    spec = request.model_spec
    return f"model {spec.name!r} signature {spec.signature_name!r} inputs {{{inputs}}}"


def _describe(tensor: tensor_pb2.TensorProto) -> str:
    known = tensor.dtype in types_pb2.DataType.values()
    dtype = types_pb2.DataType.Name(tensor.dtype) if known else f"dtype {tensor.dtype}"
    shape = tensor.tensor_shape
    claim = "unknown rank" if shape.unknown_rank else str([dim.size for dim in shape.dim])
    values = ", ".join(
        f"{field.name}: {len(value)}"
        for field, value in tensor.ListFields()
        if field.name not in ("dtype", "tensor_shape")
    )
    return f"{dtype} {claim} ({values or 'no values'})"


# Codes that say the server failed, not the request; UNAVAILABLE and DEADLINE_EXCEEDED mean it
# died or hung.
SERVER_FAILURES = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


# What became of one request: its answer ("gRPC OK", "HTTP 400", ...) and the problem, if any.
Outcome = tuple[str, str | None]


def grpc_outcome(stack: Stack, request: predict_pb2.PredictRequest) -> Outcome:
    try:
        stack.predict(request, timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        code, message = error.code(), error.details() or ""
        failed = code in SERVER_FAILURES or not message
        return f"gRPC {code.name}", f"{code.name}: {message[:200]!r}" if failed else None
    refused = _refused_by_contract(request)
    return "gRPC OK", f"answered OK, although {refused}" if refused else None


def _refused_by_contract(request: predict_pb2.PredictRequest) -> str | None:
    """Why the contract says the model server refuses this request, if it does."""
    for name, tensor in request.inputs.items():
        claimed = claimed_elements(tensor)
        if claimed is None:
            return f"input {name!r} has a negative dim or unknown_rank"
        if claimed > MAX_TENSOR_ELEMENTS:
            return f"input {name!r} claims {claimed} elements, over --max_tensor_elements"
    return None


@pytest.mark.parametrize("batch", range(BATCHES))
def test_generated_tensor_protos_get_a_clear_status(stack, batch):
    failures = run_batch(
        stack, predict_requests(), lambda request: grpc_outcome(stack, request), describe, batch
    )
    problems = failures + stack.health_problems()
    assert not problems, "\n".join(problems)


# --- REST bodies ------------------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=8),
    st.fixed_dictionaries({"b64": st.text(max_size=8)}),
)
KEYS = st.one_of(st.sampled_from(["x", "image", "inputs", "b64"]), st.text(max_size=6))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=40,
)


JSON_VALUES_OF = {
    types_pb2.DT_FLOAT: st.one_of(st.floats(width=32, allow_nan=False), st.integers(-9, 9)),
    types_pb2.DT_STRING: st.one_of(
        st.text(max_size=8),
        st.binary(max_size=8).map(lambda data: {"b64": base64.b64encode(data).decode()}),
    ),
}
JSON_DIMS = st.sampled_from([0, 1, 1, 2, 3, 8, 8])  # JSON cannot claim: every element is written


@st.composite
def json_tensors(draw, dtype: int, declared: list[int]) -> object:
    """Mostly nested lists about the declared shape holding values of the declared dtype; now and
    then any JSON value."""
    if draw(st.integers(0, 4)) == 0:
        return draw(JSON_VALUES)
    dims = draw(shapes_near(declared, JSON_DIMS))
    # Values of the dtype the signature declares, but one time in ten any JSON scalar.
    value = draw(JSON_VALUES_OF[dtype] if draw(st.integers(0, 9)) else JSON_SCALARS)

    def nest(level: int) -> object:
        return value if level == len(dims) else [nest(level + 1) for _ in range(dims[level])]

    return nest(0)


EXAMPLES = st.fixed_dictionaries(
    {"examples": st.lists(st.dictionaries(KEYS, JSON_VALUES, max_size=3), max_size=4)},
    optional={"context": JSON_VALUES, "signature_name": SIGNATURE_NAMES},
)
PREDICT_FORMATS = ["instances", "instances", "inputs", "inputs", "both", "neither"]
OTHER_TARGETS = st.sampled_from(
    [HALF_PLUS_TWO, DIGITS, f"{HALF_PLUS_TWO}/versions/123", f"{DIGITS}/labels/stable", "nope"]
)


@st.composite
def rest_calls(draw) -> tuple[str, bytes]:
    model, signature, name, dtype, shape = draw(st.sampled_from(SIGNATURE_INPUTS))
    target = draw(mostly([model], OTHER_TARGETS))
    operation = draw(st.sampled_from(["predict", "predict", "predict", "classify", "regress"]))
    if operation == "predict":
        tensor = draw(json_tensors(dtype, shape))
        body = {"signature_name": draw(mostly([signature], SIGNATURE_NAMES | JSON_SCALARS))}
        layout = draw(st.sampled_from(PREDICT_FORMATS))
        if layout in ("instances", "both"):
            body["instances"] = tensor
        if layout in ("inputs", "both"):
            body["inputs"] = draw(st.sampled_from([tensor, {name: tensor}]))
    else:
        body = draw(EXAMPLES)
    # The standard library writes 2**70 and NaN, which orjson would refuse to.
    return f"/v1/models/{target}:{operation}", json.dumps(body).encode()


def rest_outcome(stack: Stack, call: tuple[str, bytes]) -> Outcome:
    path, body = call
    try:
        response = stack.http.post(path, content=body, timeout=CALL_TIMEOUT)
    except httpx.HTTPError as error:
        return "HTTP no answer", f"no answer: {type(error).__name__}: {error}"
    status = response.status_code
    if status >= 500 or status == 429:
        return f"HTTP {status}", f"{status}: {response.text[:200]!r}"
    if status >= 400 and not _error_message(response):
        return f"HTTP {status}", f"{status} without an error message: {response.text[:200]!r}"
    return f"HTTP {status}", None


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error") or "")
    except (ValueError, AttributeError):
        return ""


@pytest.mark.parametrize("batch", range(BATCHES))
def test_generated_rest_bodies_get_no_server_error(stack, batch):
    failures = run_batch(
        stack,
        rest_calls(),
        lambda call: rest_outcome(stack, call),
        lambda call: f"POST {call[0]} {call[1][:300]!r}",
        batch,
    )
    problems = failures + stack.health_problems()
    assert not problems, "\n".join(problems)


# --- batches ----------------------------------------------------------------------------------


def run_batch(
    stack: Stack,
    strategy: st.SearchStrategy,
    outcome_of: Callable[[object], Outcome],
    describe_request: Callable[[object], str],
    batch: int,
) -> list[str]:
    """Send one seeded batch; returns its failures, each distinct one once with an example."""
    failures: dict[str, tuple[int, str]] = {}
    sent = not_run = 0
    down = False

    @seed(batch)
    @SETTINGS
    @given(strategy)
    def send(request) -> None:
        nonlocal sent, not_run, down
        if down or stack.model_server.poll() is not None:
            not_run += 1  # the health check after the batch says how the server died
            return
        sent += 1
        answer, problem = outcome_of(request)
        stack.tally[answer] += 1
        if problem is None:
            return
        count, example = failures.get(problem[:80], (0, describe_request(request)))
        failures[problem[:80]] = (count + 1, example)
        # What follows would only meet the same dead (or hung) server.
        down = problem.startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED", "no answer"))

    send()
    assert sent + not_run >= EXAMPLES_PER_BATCH // 2  # the strategy was not starved
    shown = sorted(failures.items(), key=lambda item: -item[1][0])[:FAILURES_SHOWN]
    report = [f"{count} x {problem} <- e.g. {example[:400]}" for problem, (count, example) in shown]
    if not_run:
        report.append(f"{not_run} of the batch's requests were not run: the server was down")
    if failures:
        report.insert(0, f"{sum(c for c, _ in failures.values())} of {sent} requests failed")
    return report
