"""A table of malformed requests: each gets the right 4xx and a message naming the problem."""

import json

import httpx
import pytest
from gateway.image_files import chunk, inflating_to, jpeg, png

DIGITS = "/v1/models/digits-cnn"
ROW = [[[0.0]] * 8] * 8  # one 8x8x1 digit image


LONG_NAME = "n" * 17_000  # past gRPC's 16 KB metadata limit once the model server echoes it


def upload(*files: tuple[str, bytes]) -> dict:
    return {"files": [("files", (name, data, "application/octet-stream")) for name, data in files]}


# (id, method, path, request keyword arguments, status, words the message must contain)
CASES = [
    (
        "invalid-json",
        "POST",
        f"{DIGITS}:predict",
        {"content": b'{"instances": [1.0,'},
        400,
        ["JSON Parse error"],
    ),
    ("empty-body", "POST", f"{DIGITS}:predict", {"content": b""}, 400, ["JSON Parse error"]),
    ("not-an-object", "POST", f"{DIGITS}:predict", {"content": b"[1, 2]"}, 400, ["Is not object"]),
    (
        "nan",
        "POST",
        f"{DIGITS}:predict",
        {"content": b'{"instances": [NaN]}'},
        400,
        ["NaN and Infinity"],
    ),
    (
        "infinity",
        "POST",
        f"{DIGITS}:predict",
        {"content": b'{"inputs": Infinity}'},
        400,
        ["NaN and Infinity"],
    ),
    (
        "minus-infinity",
        "POST",
        f"{DIGITS}:predict",
        {"content": b'{"inputs": [-Infinity]}'},
        400,
        ["NaN and Infinity"],
    ),
    (
        "too-deep",
        "POST",
        f"{DIGITS}:predict",
        {"content": b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"},
        400,
        ["JSON Parse error"],
    ),
    (
        "empty-instances",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"instances": []}},
        400,
        ["'instances' is an empty list"],
    ),
    (
        "instances-not-list",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"instances": 5}},
        400,
        ["'instances' must be a list"],
    ),
    (
        "row-and-columnar",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"instances": [ROW], "inputs": [ROW]}},
        400,
        ["both 'instances' and 'inputs'"],
    ),
    (
        "neither-format",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"instance": [ROW]}},
        400,
        ["'instances'", "'inputs'"],
    ),
    (
        "wrong-shape",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"instances": [[1.0, 2.0, 3.0]]}},
        400,
        ["input 'image'", "[1, 3]", "[-1, 8, 8, 1]"],
    ),
    (
        "ragged",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"instances": [ROW, ROW[:7]]}},
        400,
        ["input 'image'", "ragged"],
    ),
    (
        "string-for-float",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"inputs": [[["a"]] * 8] * 8}},
        400,
        ["expected DT_FLOAT", '"a"'],
    ),
    (
        "bool-for-float",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"inputs": [[[True]] * 8] * 8}},
        400,
        ["expected DT_FLOAT", "boolean"],
    ),
    (
        "null-for-float",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"inputs": [[[None]] * 8] * 8}},
        400,
        ["expected DT_FLOAT", "null"],
    ),
    (
        "b64-for-float",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"inputs": [[[{"b64": "AA=="}]] * 8] * 8}},
        400,
        ["expected DT_FLOAT"],
    ),
    (
        "float-out-of-range",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"inputs": [[[1e39]] * 8] * 8}},
        400,
        ["DT_FLOAT", "out of range"],
    ),
    (
        "integer-beyond-64-bits",
        "POST",
        f"{DIGITS}:predict",
        {"content": json.dumps({"instances": [ROW]}).replace("0.0", "18446744073709551616", 1)},
        400,
        ["input 'image'", "18446744073709551616", "DT_FLOAT", "precision"],
    ),
    (
        "unknown-input-name",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"instances": [{"pixels": ROW}]}},
        400,
        ["unknown input(s): pixels"],
    ),
    (
        "missing-named-input",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"inputs": {"pixels": [ROW]}}},
        400,
        ["missing input(s): image"],
    ),
    (
        "signature-name-not-string",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"signature_name": 1, "instances": [ROW]}},
        400,
        ["'signature_name' must be a string"],
    ),
    (
        "unknown-signature",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"signature_name": "nope", "instances": [ROW]}},
        400,
        ['"nope" not found'],
    ),
    (
        "unknown-model",
        "POST",
        "/v1/models/nope:predict",
        {"json": {"instances": [ROW]}},
        404,
        ["Servable not found", "Latest(nope)"],
    ),
    (
        "unknown-version",
        "POST",
        f"{DIGITS}/versions/999:predict",
        {"json": {"instances": [ROW]}},
        404,
        ["Specific(digits-cnn, 999)"],
    ),
    (
        "unknown-label",
        "POST",
        f"{DIGITS}/labels/nope:predict",
        {"json": {"instances": [ROW]}},
        400,
        ["Unrecognized servable version label: nope"],
    ),
    (
        "version-not-a-number",
        "POST",
        f"{DIGITS}/versions/abc:predict",
        {"json": {"instances": [ROW]}},
        400,
        ["Malformed request", "versions/abc"],
    ),
    (
        "unknown-verb",
        "POST",
        f"{DIGITS}:explode",
        {"json": {}},
        400,
        ["Malformed request", ":explode"],
    ),
    ("get-on-predict", "GET", f"{DIGITS}:predict", {}, 400, ["Malformed request", "GET"]),
    (
        "too-many-json-values",
        "POST",
        f"{DIGITS}:predict",
        {"content": b'{"instances": [' + b"0," * 8_000_000 + b"0]}"},
        400,
        ["8000003 values", "limit of 1048576 (NNSERVE_MAX_JSON_VALUES)"],
    ),
    (
        "too-many-elements",
        "POST",
        f"{DIGITS}:predict",
        {"content": b'{"inputs": [' + b"0," * 600_000 + b"0]}"},
        400,
        ["input 'image' has 600001 elements", "limit of 524288 (NNSERVE_MAX_TENSOR_ELEMENTS)"],
    ),
    (
        "huge-body",
        "POST",
        f"{DIGITS}:predict",
        {"content": b" " * (16 * 1024 * 1024 + 1)},
        413,
        ["larger than the limit"],
    ),
    (
        "classify-without-examples",
        "POST",
        f"{DIGITS}:classify",
        {"json": {"instances": []}},
        400,
        ["'examples'"],
    ),
    (
        "classify-empty-examples",
        "POST",
        f"{DIGITS}:classify",
        {"json": {"examples": []}},
        400,
        ["'examples' is an empty list"],
    ),
    (
        "example-not-object",
        "POST",
        f"{DIGITS}:regress",
        {"json": {"examples": [1]}},
        400,
        ["example 0", "JSON object"],
    ),
    (
        "feature-mixed-kinds",
        "POST",
        f"{DIGITS}:regress",
        {"json": {"examples": [{"x": [1.5, "a"]}]}},
        400,
        ["feature 'x'", "floats", "strings"],
    ),
    (
        "feature-null",
        "POST",
        f"{DIGITS}:classify",
        {"json": {"examples": [{"x": None}]}},
        400,
        ["feature 'x'", "nulls"],
    ),
    (
        "bad-base64",
        "POST",
        f"{DIGITS}:classify",
        {"json": {"examples": [{"x": {"b64": "@@@"}}]}},
        400,
        ["feature 'x'", "invalid base64"],
    ),
    (
        "image-as-json",
        "POST",
        f"{DIGITS}:classify_images",
        {"json": {"files": []}},
        400,
        ["files", "Field required"],
    ),
    (
        "corrupt-image",
        "POST",
        f"{DIGITS}:classify_images",
        upload(("broken.png", png(8, 8)[:40])),
        400,
        ["broken.png"],
    ),
    (
        "not-an-image",
        "POST",
        f"{DIGITS}:classify_images",
        upload(("notes.txt", b"hello")),
        400,
        ["notes.txt", "not a PNG or JPEG"],
    ),
    (
        "png-bomb",
        "POST",
        f"{DIGITS}:classify_images",
        upload(("bomb.png", png(5000, 5000))),
        400,
        ["bomb.png", "5000x5000", "limit"],
    ),
    (
        "truncated-jpeg",
        "POST",
        f"{DIGITS}:classify_images",
        upload(("cut.jpg", jpeg()[:200])),
        400,
        ["cut.jpg"],
    ),
    (
        "png-ztxt-bomb",
        "POST",
        f"{DIGITS}:classify_images",
        upload(("text.png", png(8, 8, chunk(b"zTXt", b"k\x00\x00" + inflating_to(50_000_000))))),
        400,
        ["text.png"],
    ),
    (
        "png-iccp-bomb",
        "POST",
        f"{DIGITS}:classify_images",
        upload(("icc.png", png(8, 8, chunk(b"iCCP", b"p\x00\x00" + inflating_to(50_000_000))))),
        400,
        ["icc.png"],
    ),
    (
        "too-many-images",
        "POST",
        f"{DIGITS}:classify_images",
        upload(*[(f"{i}.jpg", jpeg()) for i in range(33)]),
        400,
        ["33 images", "limit of 32 (NNSERVE_MAX_IMAGES)"],
    ),
    (
        "too-many-pixels",
        "POST",
        f"{DIGITS}:classify_images",
        upload(*[(f"{i}.png", png(4096, 4096)) for i in range(5)]),
        400,
        ["5 images have 83886080 pixels", "limit of 67108864 (NNSERVE_MAX_REQUEST_PIXELS)"],
    ),
    (
        "top-k-zero",
        "POST",
        f"{DIGITS}:classify_images?top_k=0",
        upload(("a.jpg", jpeg())),
        400,
        ["top_k"],
    ),
    (
        "image-unknown-model",
        "POST",
        "/v1/models/nope:classify_images",
        upload(("a.jpg", jpeg())),
        404,
        ["nope"],
    ),
    (
        "image-dot-dot-model",
        "POST",
        "/v1/models/%2e%2e/versions/1:classify_images",
        upload(("a.jpg", jpeg())),
        404,
        [".."],
    ),
    (
        "long-model-name",
        "POST",
        f"/v1/models/{LONG_NAME}:predict",
        {"json": {"instances": [ROW]}},
        400,
        ["model name", "17000", "limit of 256", "NNSERVE_MAX_NAME_LENGTH"],
    ),
    (
        "long-version-label",
        "POST",
        f"{DIGITS}/labels/{LONG_NAME}:predict",
        {"json": {"instances": [ROW]}},
        400,
        ["version label", "17000", "limit of 256", "NNSERVE_MAX_NAME_LENGTH"],
    ),
    (
        "long-signature-name",
        "POST",
        f"{DIGITS}:predict",
        {"json": {"signature_name": LONG_NAME, "instances": [ROW]}},
        400,
        ["signature name", "17000", "limit of 256", "NNSERVE_MAX_NAME_LENGTH"],
    ),
    (
        "long-model-name-status",
        "GET",
        f"/v1/models/{LONG_NAME}",
        {},
        400,
        ["model name", "limit of 256"],
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "request_args", "status", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_malformed_request_is_a_clear_4xx(gateway, method, path, request_args, status, words):
    response = httpx.request(method, f"{gateway.url}{path}", timeout=60, **request_args)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    for word in words:
        assert word in message
    assert "Traceback" not in response.text
    assert len(message) < 2000  # names are not echoed whole


def test_the_table_is_large_and_the_gateway_is_healthy_after_it(gateway, trained_digits):
    # Runs after the table above (pytest keeps the file's order), against the same gateway.
    assert len(CASES) >= 30
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    example = (trained_digits.version_dir / "assets.extra" / "example_request.json").read_bytes()
    response = httpx.post(f"{gateway.url}{DIGITS}:predict", content=example)
    assert response.status_code == 200
