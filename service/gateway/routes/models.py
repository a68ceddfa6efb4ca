"""TF Serving's REST API: `/v1/models/{name}[/versions/{v}|/labels/{l}][/metadata|:predict]`."""

from typing import Annotated

from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from starlette.convertors import Convertor, register_url_convertor

from service.gateway.dataplane import DataPlane, ModelTarget
from service.gateway.images import Upload


class ModelNameConvertor(Convertor):
    """A model name or version label: one path segment without ':' (which starts a verb)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class VersionConvertor(Convertor):
    """A version number that fits the int64 of ModelSpec.version; longer ones match no route."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("model", ModelNameConvertor())
register_url_convertor("version", VersionConvertor())

router = APIRouter(prefix="/v1/models", tags=["TF Serving REST API"])

JSON = "application/json"


def _json_body(description: str, properties: dict) -> dict:
    """An OpenAPI request body for routes that read the raw body (so docs and tests see it)."""
    schema = {"type": "object", "properties": properties}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {JSON: {"schema": schema}},
        }
    }


SIGNATURE_NAME = {"type": "string", "description": "default: serving_default"}
PREDICT_BODY = _json_body(
    "Row format (`instances`) or columnar format (`inputs`), as TF Serving's REST API",
    {"signature_name": SIGNATURE_NAME, "instances": {"type": "array"}, "inputs": {}},
)
EXAMPLES_BODY = _json_body(
    "tf.Examples as JSON objects of features, as TF Serving's REST API",
    {
        "signature_name": SIGNATURE_NAME,
        "examples": {"type": "array", "items": {"type": "object"}},
        "context": {"type": "object"},
    },
)


def _plane(request: Request) -> DataPlane:
    return request.app.state.dataplane


def _target(request: Request) -> ModelTarget:
    # Path parameters are read here rather than declared per handler: in profiles, FastAPI's
    # per-request parameter and dependency resolution was a large share of a predict's CPU.
    # The OpenAPI spec gets them from `_path_parameters`.
    params = request.path_params
    return ModelTarget(params["name"], params.get("version"), params.get("label"))


# Each operation is reachable for the latest version, a given version, or a version label.
TARGET_PATHS = (
    "/{name:model}",
    "/{name:model}/versions/{version:version}",
    "/{name:model}/labels/{label:model}",
)


def _path_parameters(path: str) -> list[dict]:
    described = [("name", "string", "model name")]
    if "{version" in path:
        described.append(("version", "integer", "model version"))
    if "{label" in path:
        described.append(("label", "string", "version label"))
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": kind},
            "description": text,
        }
        for name, kind, text in described
    ]


async def model_status(request: Request) -> Response:
    """The status of every version of a model, or of one version."""
    return Response(await _plane(request).model_status(_target(request)), media_type=JSON)


async def model_metadata(request: Request) -> Response:
    """The model's signatures, as TF Serving's GetModelMetadata returns them."""
    return Response(await _plane(request).model_metadata(_target(request)), media_type=JSON)


async def predict(request: Request) -> Response:
    """Predict with `{"instances": [...]}` (rows) or `{"inputs": ...}` (columns)."""
    body = await _plane(request).predict(_target(request), await request.body())
    return Response(body, media_type=JSON)


async def classify(request: Request) -> Response:
    """Classify `{"examples": [{feature: value, ...}, ...]}` (tf.Examples), as TF Serving."""
    body = await _plane(request).classify(_target(request), await request.body())
    return Response(body, media_type=JSON)


async def regress(request: Request) -> Response:
    """Regress `{"examples": [{feature: value, ...}, ...]}` (tf.Examples), as TF Serving."""
    body = await _plane(request).regress(_target(request), await request.body())
    return Response(body, media_type=JSON)


async def classify_images(
    request: Request,
    files: Annotated[list[UploadFile], File(description="PNG or JPEG images")],
    top_k: Annotated[int, Query(ge=1, le=1000)] = 5,
    invert: Annotated[bool, Query(description="dark drawing on a light background")] = False,
) -> Response:
    """Top-k classes with label names for uploaded images (nnserve models, not TF Serving)."""
    uploads = [
        Upload(upload.filename or f"file {i}", await upload.read())
        for i, upload in enumerate(files)
    ]
    body = await _plane(request).classify_images(_target(request), uploads, top_k, invert)
    return Response(body, media_type=JSON)


async def list_models(request: Request) -> Response:
    """Every model with its versions and labels (nnserve, not TF Serving)."""
    return Response(await _plane(request).list_models(), media_type=JSON)


# Routes are matched in order: predict, the hot path, first.
for suffix, handler, method, extra in (
    (":predict", predict, "POST", PREDICT_BODY),
    ("", model_status, "GET", {}),
    ("/metadata", model_metadata, "GET", {}),
    (":classify", classify, "POST", EXAMPLES_BODY),
    (":regress", regress, "POST", EXAMPLES_BODY),
    (":classify_images", classify_images, "POST", {}),
):
    for path in TARGET_PATHS:
        router.add_api_route(
            path + suffix,
            handler,
            methods=[method],
            response_class=Response,
            openapi_extra={"parameters": _path_parameters(path), **extra},
        )
router.add_api_route("", list_models, methods=["GET"], response_class=Response)

# Served by `service.gateway.shortcut.Shortcut` ahead of FastAPI's routing.
PREDICT_ROUTES = [route for route in router.routes if route.endpoint is predict]
