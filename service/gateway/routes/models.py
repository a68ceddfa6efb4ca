"""TF Serving's REST API: `/v1/models/{name}[/versions/{v}|/labels/{l}][/metadata|:predict]`."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.convertors import Convertor, register_url_convertor

from service.gateway.dataplane import DataPlane, ModelTarget


class ModelNameConvertor(Convertor):
    """A model name or version label: one path segment without ':' (which starts a verb)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("model", ModelNameConvertor())

router = APIRouter(prefix="/v1/models", tags=["TF Serving REST API"])

JSON = "application/json"


def get_dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


Plane = Annotated[DataPlane, Depends(get_dataplane)]

# Each operation is reachable for the latest version, a given version, or a version label.
TARGET_PATHS = (
    "/{name:model}",
    "/{name:model}/versions/{version:int}",
    "/{name:model}/labels/{label:model}",
)


def _target(name: str, version: int | None, label: str | None) -> ModelTarget:
    return ModelTarget(name=name, version=version, label=label)


async def model_status(
    plane: Plane, name: str, version: int | None = None, label: str | None = None
) -> Response:
    """The status of every version of a model, or of one version."""
    return Response(await plane.model_status(_target(name, version, label)), media_type=JSON)


async def model_metadata(
    plane: Plane, name: str, version: int | None = None, label: str | None = None
) -> Response:
    """The model's signatures, as TF Serving's GetModelMetadata returns them."""
    return Response(await plane.model_metadata(_target(name, version, label)), media_type=JSON)


async def predict(
    request: Request, plane: Plane, name: str, version: int | None = None, label: str | None = None
) -> Response:
    """Predict with `{"instances": [...]}` (rows) or `{"inputs": ...}` (columns)."""
    body = await plane.predict(_target(name, version, label), await request.body())
    return Response(body, media_type=JSON)


for path in TARGET_PATHS:
    router.add_api_route(path, model_status, methods=["GET"], response_class=Response)
    router.add_api_route(
        f"{path}/metadata", model_metadata, methods=["GET"], response_class=Response
    )
    router.add_api_route(f"{path}:predict", predict, methods=["POST"], response_class=Response)
