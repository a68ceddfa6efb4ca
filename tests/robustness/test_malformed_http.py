"""Malformed and oversized requests through the gateway over HTTP: each gets a 4xx naming what was
wrong (never a 500, never a 429 for bad input), or the right answer where the contract says the
request is fine, and the health check passes after it.

The gRPC cases that claim a shape their values do not fill (1e8 floats in 37 bytes, dims of -1,
unknown_rank) have no JSON form: a JSON tensor is its values.
"""

import contextlib
import io
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson
import pytest
from PIL import Image, PngImagePlugin
from robustness.stack import DIGITS, HALF_PLUS_TWO, Stack

from service.json_logging import is_json_line

MAX_BODY_BYTES = 16 * 1024 * 1024  # NNSERVE_MAX_BODY_BYTES's default
LONG_NAME = 16 * 1024 + 1  # characters: over 16 KB
MAX_MESSAGE = 1024  # a name cut to 256 characters, plus the explanation
SOCKET_TIMEOUT = 20  # seconds a raw-socket case waits for the gateway's answer


def jpeg(size: int = 64) -> bytes:
    out = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(noise, "L").save(out, format="JPEG")
    return out.getvalue()


def png_with_huge_ztxt() -> bytes:
    """A valid 8x8 PNG whose zTXt chunk inflates to 64 MB of text (a few dozen KB in the file)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "A" * (64 * 1024 * 1024), zip=True)
    out = io.BytesIO()
    Image.new("L", (8, 8)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def upload(name: str, data: bytes) -> dict:
    return {"files": [("files", (name, data, "application/octet-stream"))]}


ZEROS_HEAD, ZEROS_TAIL = b'{"instances":[', b"0]}"
ZEROS = (MAX_BODY_BYTES - len(ZEROS_HEAD) - len(ZEROS_TAIL)) // 2 + 1


def zeros_body() -> bytes:
    """`{"instances": [0, 0, ...]}`, as long as the body limit allows."""
    return ZEROS_HEAD + b"0," * (ZEROS - 1) + ZEROS_TAIL


def probabilities_of_the_digit(stack: Stack, predictions: int) -> Callable[[dict], list[str]]:
    """The answer must hold the known digit's probabilities, `predictions` times."""

    def check(answer: dict) -> list[str]:
        rows = [row.get("probabilities") for row in answer.get("predictions", [])]
        expected = stack.baseline_probabilities
        if len(rows) != predictions or not all(
            np.allclose(row, expected, atol=1e-5) for row in rows
        ):
            return [f"answered {str(answer)[:300]}, not {predictions} x {expected.tolist()}"]
        return []

    return check


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    request: Callable[[Stack], dict]  # httpx keyword arguments
    statuses: tuple[int, ...]
    words: tuple[str, ...] = ()  # each in the error message (not case-sensitive)
    max_message: int | None = None
    # For a 200: what the answer must be; (stack) -> (answer) -> problems.
    check_answer: Callable[[Stack], Callable[[dict], list[str]]] | None = None
    not_words: tuple[str, ...] = field(default=())  # none may be in the message


CASES = [
    Case(
        # [2, 8, 8] for [-1, 8, 8, 1] differs in a size-1 dim alone: the gateway restores it.
        "digits-rank-3-instances",
        "POST",
        f"/v1/models/{DIGITS}:predict",
        lambda stack: {"json": {"instances": [np.squeeze(stack.models.digit, -1).tolist()] * 2}},
        (200,),
        check_answer=lambda stack: probabilities_of_the_digit(stack, 2),
    ),
    Case(
        # 8.4 M values: more than the gateway parses (NNSERVE_MAX_JSON_VALUES), counted before
        # the body is parsed.
        "json-16MB-of-zeros",
        "POST",
        f"/v1/models/{HALF_PLUS_TWO}:predict",
        lambda stack: {"content": zeros_body()},
        (400,),
        ("NNSERVE_MAX_JSON_VALUES",),
    ),
    Case(
        "b64-not-utf8-to-classify-signature",
        "POST",
        f"/v1/models/{HALF_PLUS_TWO}:predict",
        lambda stack: {
            "json": {"signature_name": "classify_x_to_y", "instances": [{"b64": "/w=="}]}
        },
        (400,),
        ("example",),
    ),
    Case(
        "integer-2-to-the-64",
        "POST",
        f"/v1/models/{HALF_PLUS_TWO}:predict",
        lambda stack: {"content": b'{"instances": [18446744073709551616]}'},
        # As 16777217 is: a float32 cannot hold it exactly.
        (400,),
        ("18446744073709551616", "loss of precision"),
    ),
    Case(
        "truncated-jpeg",
        "POST",
        f"/v1/models/{DIGITS}:classify_images",
        lambda stack: upload("truncated.jpg", jpeg()[: len(jpeg()) // 2]),
        (400,),
        ("truncated.jpg",),
    ),
    Case(
        "png-with-huge-ztxt",
        "POST",
        f"/v1/models/{DIGITS}:classify_images",
        lambda stack: upload("text-bomb.png", png_with_huge_ztxt()),
        (400,),
        ("text-bomb.png",),
    ),
    Case(
        # `..` as a model name must not lead the gateway out of its model repository: the decoy
        # metadata one level up (see `decoy_outside_the_repository`) asks for 7 channels.
        "dot-dot-model-name",
        "POST",
        "/v1/models/%2e%2e/versions/1:classify_images",
        lambda stack: upload("a.jpg", jpeg()),
        (400, 404),
        not_words=("7 channels",),
    ),
    Case(
        "model-name-16KB",
        "POST",
        "/v1/models/" + "m" * LONG_NAME + ":predict",
        lambda stack: {"json": {"instances": [stack.models.digit]}},
        (400, 404, 414),
        max_message=MAX_MESSAGE,
    ),
    Case(
        "version-label-16KB",
        "POST",
        f"/v1/models/{DIGITS}/labels/" + "l" * LONG_NAME + ":predict",
        lambda stack: {"json": {"instances": [stack.models.digit]}},
        (400, 404, 414),
        ("label",),
        max_message=MAX_MESSAGE,
    ),
    Case(
        "signature-name-16KB",
        "POST",
        f"/v1/models/{DIGITS}:predict",
        lambda stack: {
            "json": {"signature_name": "s" * LONG_NAME, "instances": [stack.models.digit]}
        },
        (400, 404),
        ("signature",),
        max_message=MAX_MESSAGE,
    ),
]


@pytest.fixture(scope="module", autouse=True)
def decoy_outside_the_repository(served_models) -> None:
    """Metadata at `<repository>/../1/assets.extra/nnserve.json`, which only a gateway that
    follows `..` out of its repository would read (it asks for 7 channels, which it would say)."""
    decoy = served_models.repository.parent / "1" / "assets.extra" / "nnserve.json"
    decoy.parent.mkdir(parents=True, exist_ok=True)
    spec = {"name": "image", "image_size": [8, 8], "channels": 7, "value_range": [0, 16]}
    decoy.write_text(json.dumps({"input": spec}))


def outcome_problems(case: Case, stack: Stack) -> list[str]:
    try:
        response = stack.http.request(case.method, case.path, **case.request(stack))
    except httpx.HTTPError as error:
        return [f"no answer: {type(error).__name__}: {error}"]
    status, text = response.status_code, response.text
    if status not in case.statuses:
        return [f"answered {status} {text[:300]!r}; expected one of {case.statuses}"]
    if status == 200:
        return case.check_answer(stack)(response.json()) if case.check_answer else []
    message = _error_message(text)
    lowered = message.lower()
    problems = [
        f"the message {message[:300]!r} does not say {word!r}"
        for word in case.words
        if word.lower() not in lowered
    ]
    problems += [
        f"the message says {word!r}: {message[:300]!r}"
        for word in case.not_words
        if word in message
    ]
    if case.max_message is not None and len(message) > case.max_message:
        problems.append(f"the message is {len(message)} characters long: {message[:120]!r}...")
    return problems


def _error_message(text: str) -> str:
    try:
        return str(orjson.loads(text)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return text


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_request_gets_a_clear_4xx_and_the_gateway_stays_healthy(stack, case):
    problems = outcome_problems(case, stack)
    problems += stack.health_problems()
    assert not problems, "\n".join(problems)


def test_control_characters_in_a_model_name_keep_the_gateway_log_one_json_object_per_line(stack):
    logged_before = len(stack.gateway_log_lines())
    response = stack.http.post(
        "/v1/models/robustness%0Areload%1B%5B2J:predict", json={"instances": [[1.0]]}
    )
    problems = []
    if response.status_code not in (400, 404):
        problems.append(f"answered {response.status_code} {response.text[:300]!r}")
    lines = stack.gateway_log_lines()[logged_before:]
    bad = [line for line in lines if not is_json_line(line) or any(ord(c) < 32 for c in line)]
    if bad:
        problems.append(f"log lines that are not one clean JSON object each: {bad[:3]!r}")
    problems += stack.health_problems()
    assert not problems, "\n".join(problems)


# Raw HTTP/1.1 over a socket: httpx would refuse to send these. Sizes are bounded, and so is
# every wait.
def huge_header() -> bytes:
    return b"X-Huge: " + b"a" * (20 * 1024 * 1024) + b"\r\n\r\n"


def many_headers() -> bytes:
    return b"".join(b"X-H%d: v\r\n" % i for i in range(100_000)) + b"\r\n"


def unterminated_header() -> bytes:
    """1 MiB of one header line that never ends, and the connection left open."""
    return b"X-Unterminated: " + b"a" * (1024 * 1024)


@pytest.mark.parametrize(
    "headers",
    [huge_header, many_headers, unterminated_header],
    ids=["one-header-of-20MB", "100000-headers", "unterminated-header-of-1MiB"],
)
def test_oversized_headers_get_a_4xx_naming_the_headers(stack, headers):
    port = int(stack.gateway.url.rsplit(":", 1)[1])
    request = f"GET /v1/models/{HALF_PLUS_TWO} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    answer, ending = raw_exchange(port, request + headers())
    status_line = answer.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else None
    problems = []
    if status is None or not 400 <= status < 500 or status == 429:
        problems.append(f"answered {answer[:300]!r} ({ending}); expected a 4xx")
    elif b"header" not in answer.lower():
        problems.append(f"the answer does not say what was wrong: {answer[:300]!r}")
    problems += stack.health_problems()
    assert not problems, "\n".join(problems)


def raw_exchange(port: int, data: bytes) -> tuple[bytes, str]:
    """Send `data` (as much as the server reads) and return the first bytes of the answer and
    how it ended; a server may answer, and close, before it has read everything."""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        # A server that answered early (or stopped reading) has said what it has to say.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            sock.sendall(data)
        answer = b""
        deadline = time.monotonic() + SOCKET_TIMEOUT
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return answer, "the gateway reset the connection"
            except TimeoutError:
                break
            if not chunk:
                return answer, "the gateway closed the connection"
            answer += chunk
            if _complete(answer) or len(answer) >= 65536:
                return answer, "answered"
    return answer, f"nothing more within {SOCKET_TIMEOUT} s"


def _complete(answer: bytes) -> bool:
    head, separator, body = answer.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return False
