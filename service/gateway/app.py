"""The gateway's FastAPI app: routes, the backend's lifetime, and errors as `{"error": ...}`."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from service.gateway.backend import BackendError, TFServingBackend
from service.gateway.codec import CodecError
from service.gateway.dataplane import DataPlane
from service.gateway.errors import HTTP_STATUS_BY_CODE
from service.gateway.routes import models
from service.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = TFServingBackend(settings.tfserving_addr, settings.request_timeout_seconds)
        app.state.dataplane = DataPlane(backend)
        yield
        await backend.close()

    app = FastAPI(
        title="nnserve gateway",
        lifespan=lifespan,
        description="TensorFlow Serving's REST API in front of its gRPC API.",
    )
    app.include_router(models.router)
    app.add_exception_handler(CodecError, _codec_error)
    app.add_exception_handler(BackendError, _backend_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _malformed_request)
    return app


def error_response(status_code: int, message: str) -> Response:
    return Response(
        orjson.dumps({"error": message}), status_code=status_code, media_type="application/json"
    )


async def _codec_error(request: Request, error: CodecError) -> Response:
    return error_response(400, error.message)


async def _backend_error(request: Request, error: BackendError) -> Response:
    return error_response(HTTP_STATUS_BY_CODE.get(error.code, 500), error.message)


async def _http_error(request: Request, error: HTTPException) -> Response:
    # As TF Serving: any /v1/ request that matches no operation is a malformed request.
    if request.url.path.startswith("/v1/") and error.status_code in (404, 405):
        return await _malformed_request(request, error)
    return error_response(error.status_code, str(error.detail))


async def _malformed_request(request: Request, error: Exception) -> Response:
    return error_response(400, f"Malformed request: {request.method} {request.url.path}")
