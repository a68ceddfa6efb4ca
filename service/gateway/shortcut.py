"""A shortcut for the hot path: some routes' endpoints called without FastAPI's routing.

Measured with bench/gateway.py's request, driven in process with the backend's answer canned:
a predict took 0.40 ms of CPU through FastAPI's router, exception middleware and endpoint
wrapper, and 0.29 ms through this shortcut. `Shortcut` sits innermost among the gateway's
middleware (so API keys, body limits, CORS, metrics and logs all still apply), matches a request
against the same route objects FastAPI registered (same URLs, convertors and OpenAPI entries)
and calls the route's endpoint itself. An error goes to the exception handler the app registered
for it, so answers are the same either way. Every other request, and a request to a shortcut URL
with another method (FastAPI answers that), goes on to FastAPI.

FastAPI's parameter and dependency handling does not run here, so only endpoints that take the
request alone may be given.
"""

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

ExceptionHandler = Callable[[Request, Any], Awaitable[Response]]


class Shortcut:
    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[Route],
        exception_handlers: Mapping[Any, ExceptionHandler],
    ) -> None:
        for route in routes:
            parameters = list(inspect.signature(route.endpoint).parameters)
            if len(parameters) != 1:
                raise TypeError(
                    f"route {route.path}: a shortcut endpoint must take the request alone, "
                    f"{route.endpoint.__name__} takes {parameters}"
                )
        self.app = app
        self.routes = routes
        self.exception_handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    await self._serve(route, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request)
        except Exception as error:
            handler = self._handler_for(error)
            if handler is None:
                raise
            response = await handler(request, error)
        await response(scope, receive, send)

    def _handler_for(self, error: Exception) -> ExceptionHandler | None:
        # As Starlette's ExceptionMiddleware: the handler of the nearest class in the MRO.
        for cls in type(error).__mro__:
            if cls in self.exception_handlers:
                return self.exception_handlers[cls]
        return None
