"""The gateway's FastAPI app: routes, middleware, backend lifetime, errors as `{"error": ...}`."""

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from service.gateway.backend import BackendError, TFServingBackend
from service.gateway.catalog import CatalogError, ModelCatalog
from service.gateway.codec import CodecError
from service.gateway.dataplane import DataPlane, Limits
from service.gateway.errors import HTTP_STATUS_BY_CODE, InvalidRequest
from service.gateway.guard import Guard
from service.gateway.images import ImageError
from service.gateway.observability import GatewayMetrics, RequestObserver
from service.gateway.routes import demo, models, ops
from service.gateway.shortcut import Shortcut
from service.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = TFServingBackend(
            settings.tfserving_addr,
            settings.request_timeout_seconds,
            retries=settings.backend_retries,
            backoff_seconds=settings.backend_retry_backoff_seconds,
            keepalive_seconds=settings.backend_keepalive_seconds,
            observe=metrics.observe_backend,
        )
        catalog = ModelCatalog(settings.model_repo, settings.model_config_file)
        workers = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="nnserve-worker")
        app.state.dataplane = DataPlane(backend, catalog, Limits.from_settings(settings), workers)
        yield
        await backend.close()
        workers.shutdown()

    app = FastAPI(
        title="nnserve gateway",
        lifespan=lifespan,
        description="TensorFlow Serving's REST API in front of its gRPC API, and more.",
        # FastAPI's own OpenTelemetry, which nnserve configures no provider for: unless it is
        # off, FastAPI asks OpenTelemetry's providers on every request whether to trace it
        # (5 us of a predict). The gateway's own metrics and logs are above.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.metrics = metrics
    app.include_router(models.router)
    app.include_router(ops.router)
    app.include_router(demo.router)
    app.add_exception_handler(CodecError, _bad_request)
    app.add_exception_handler(ImageError, _bad_request)
    app.add_exception_handler(InvalidRequest, _bad_request)
    app.add_exception_handler(CatalogError, _catalog_error)
    app.add_exception_handler(BackendError, _backend_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_parameters)
    # Added innermost first: the observer sees every answer, the guard's refusals included.
    app.add_middleware(
        Shortcut, routes=models.PREDICT_ROUTES, exception_handlers=app.exception_handlers
    )
    app.add_middleware(
        Guard,
        api_keys=settings.api_key_list(),
        api_key_header=settings.api_key_header,
        max_body_bytes=settings.max_body_bytes,
    )
    if settings.cors_origin_list():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list(),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", settings.api_key_header, "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(RequestObserver, metrics=metrics)
    return app


def error_response(status_code: int, message: str) -> Response:
    return Response(
        orjson.dumps({"error": message}), status_code=status_code, media_type="application/json"
    )


async def _bad_request(
    request: Request, error: CodecError | ImageError | InvalidRequest
) -> Response:
    return error_response(400, error.message)


async def _catalog_error(request: Request, error: CatalogError) -> Response:
    return error_response(404, error.message)


async def _backend_error(request: Request, error: BackendError) -> Response:
    return error_response(HTTP_STATUS_BY_CODE.get(error.code, 500), error.message)


async def _http_error(request: Request, error: HTTPException) -> Response:
    # As TF Serving: any /v1/ request that matches no operation is a malformed request.
    if request.url.path.startswith("/v1/") and error.status_code in (404, 405):
        return _malformed_request(request)
    return error_response(error.status_code, str(error.detail))


async def _invalid_parameters(request: Request, error: RequestValidationError) -> Response:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        for problem in error.errors()
    )
    return error_response(
        400, f"Malformed request: {request.method} {request.url.path}: {problems}"
    )


def _malformed_request(request: Request) -> Response:
    return error_response(400, f"Malformed request: {request.method} {request.url.path}")
