"""The shortcut: its routes answered by their endpoints directly, every other request by FastAPI."""

import asyncio

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from starlette.routing import Match

from service.gateway.routes import models
from service.gateway.shortcut import Shortcut


def _scope(method: str, path: str) -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": ""}


@pytest.mark.parametrize(
    ("path", "path_params"),
    [
        ("/v1/models/digits:predict", {"name": "digits"}),
        ("/v1/models/digits/versions/7:predict", {"name": "digits", "version": 7}),
        ("/v1/models/digits/labels/stable:predict", {"name": "digits", "label": "stable"}),
    ],
)
def test_the_predict_routes_match_each_predict_url_once(path, path_params):
    matched = [
        child_scope
        for match, child_scope in (
            route.matches(_scope("POST", path)) for route in models.PREDICT_ROUTES
        )
        if match is Match.FULL
    ]
    assert len(matched) == 1
    assert matched[0]["path_params"] == path_params
    assert matched[0]["route"].endpoint is models.predict


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/digits",
        "/v1/models/digits/metadata",
        "/v1/models/digits:classify",
        "/v1/models/digits:classify_images",
        "/v1/models/digits/versions/x:predict",
        "/v1/models",
    ],
)
def test_the_predict_routes_match_no_other_url(path):
    assert all(
        route.matches(_scope("POST", path))[0] is Match.NONE for route in models.PREDICT_ROUTES
    )


class Refused(Exception):
    pass


def _shortcut_app() -> tuple[Shortcut, list[str]]:
    app = FastAPI()

    async def fast(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "refused":
            raise Refused(name)
        if name == "broken":
            raise RuntimeError("no handler for this one")
        return Response(f"{name} via {request.scope['route'].path}")

    async def refused(request: Request, error: Refused) -> Response:
        return Response(f"refused {error}", status_code=400)

    app.add_api_route("/items/{name}", fast, methods=["POST"])
    app.add_exception_handler(Refused, refused)
    reached_fastapi = []

    async def fastapi_side(scope, receive, send) -> None:
        reached_fastapi.append(f"{scope['method']} {scope['path']}")
        await app(scope, receive, send)

    return Shortcut(fastapi_side, app.router.routes[-1:], app.exception_handlers), reached_fastapi


def _call(app, method: str, path: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.request(method, path)

    return asyncio.run(call())


def test_a_shortcut_route_is_answered_without_fastapi():
    app, reached_fastapi = _shortcut_app()
    response = _call(app, "POST", "/items/a")
    assert (response.status_code, response.text) == (200, "a via /items/{name}")
    assert reached_fastapi == []


def test_other_urls_and_other_methods_go_on_to_fastapi():
    app, reached_fastapi = _shortcut_app()
    assert _call(app, "GET", "/items/a").status_code == 405
    assert _call(app, "POST", "/elsewhere").status_code == 404
    assert reached_fastapi == ["GET /items/a", "POST /elsewhere"]


def test_an_error_gets_the_apps_handler_and_one_without_a_handler_propagates():
    app, reached_fastapi = _shortcut_app()
    response = _call(app, "POST", "/items/refused")
    assert (response.status_code, response.text) == (400, "refused refused")
    with pytest.raises(RuntimeError, match="no handler"):
        _call(app, "POST", "/items/broken")
    assert reached_fastapi == []


def test_an_endpoint_that_takes_more_than_the_request_is_refused():
    app = FastAPI()

    async def with_parameter(request: Request, top_k: int = 5) -> Response:
        return Response()

    app.add_api_route("/items/{name}", with_parameter, methods=["POST"])
    with pytest.raises(TypeError, match="must take the request alone"):
        Shortcut(app, app.router.routes[-1:], app.exception_handlers)
