"""What operators see: a request id on every answer, JSON log lines, Prometheus metrics.

`RequestObserver` is a plain ASGI middleware (no per-request task or body copy): it gives each
request an id (the client's `X-Request-ID` when it is a sane token), returns it as a header,
writes one access log line and records the request's metrics.
"""

import logging
import re
import secrets
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Clients choose model names, versions and labels, so they must not choose label values: a model
# becomes a label value once it has been answered with 2xx, and so does each of its versions and
# labels, up to VALUES_PER_MODEL of them; anything else is counted as "(other)". Every value is
# cut to MAX_LABEL_VALUE_LENGTH characters.
OTHER = "(other)"
VALUES_PER_MODEL = 20
MAX_LABEL_VALUE_LENGTH = 100
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

access_log = logging.getLogger("nnserve.gateway.access")
log = logging.getLogger("nnserve.gateway")


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nnserve_gateway_requests",
            "HTTP requests by model, version, operation and status code",
            ["model", "version", "operation", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "nnserve_gateway_request_seconds",
            "Whole-request latency in the gateway, by operation",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.backend_seconds = Histogram(
            "nnserve_gateway_backend_seconds",
            "Latency of calls to the model server, by gRPC method and status code",
            ["method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Model -> its versions and labels answered with 2xx (see VALUES_PER_MODEL).
        self.known: dict[str, set[str]] = {}
        # (metric, label values) -> the metric's child. `labels()` checks and locks on every
        # call (three calls were 7 us of a predict); the values are bounded as above, so this
        # holds no more than the metrics themselves do.
        self._children: dict[tuple, Any] = {}

    def observe_backend(self, method: str, code: str, seconds: float) -> None:
        self._child(self.backend_seconds, method, code).observe(seconds)

    def observe_request(self, scope: Scope, status: int, seconds: float) -> None:
        model, version = self._model_and_version(scope.get("path_params", {}), status)
        operation = _operation(scope)
        self._child(self.requests, model, version, operation, str(status)).inc()
        self._child(self.request_seconds, operation).observe(seconds)

    def _child(self, metric: Counter | Histogram, *values: str) -> Any:
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def _model_and_version(self, params: dict, status: int) -> tuple[str, str]:
        if "name" not in params:
            return "", ""
        model = _cut(params["name"])
        if "version" in params:
            version = _cut(str(params["version"]))
        else:
            version = _cut(params.get("label", "latest"))
        versions = self.known.get(model)
        if 200 <= status < 300:
            versions = self.known.setdefault(model, set())
            if len(versions) < VALUES_PER_MODEL:
                versions.add(version)
        if versions is None:
            return OTHER, ""
        return model, version if version in versions else OTHER


def _cut(value: str) -> str:
    if len(value) <= MAX_LABEL_VALUE_LENGTH:
        return value
    return value[: MAX_LABEL_VALUE_LENGTH - 3] + "..."


def _operation(scope: Scope) -> str:
    """The route's operation: "predict", "metadata", "status" ... or the path of other routes."""
    path = getattr(scope.get("route"), "path", None)
    if path is None:
        return "unmatched"
    if "}" not in path:
        return path
    return path.rsplit("}", 1)[1].lstrip(":/") or "status"


def request_id_of(scope: Scope) -> str:
    return scope.get("state", {}).get("request_id", "")


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status, status_sent = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status, status_sent = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER, request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Logged here with its request id; the client gets the id, never the traceback.
            log.exception("unhandled error", extra={"fields": {"request_id": request_id}})
            if status_sent:
                raise
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            body = {"error": f"internal error in the gateway (request id {request_id})"}
            await send({"type": "http.response.body", "body": orjson.dumps(body)})
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe_request(scope, status, seconds)
            access_log.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                    }
                },
            )


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(text):
                return text
            break
    # 128 random bits in 32 hex digits, as uuid4().hex but without building a UUID (half of
    # the 3 us it took).
    return secrets.token_hex(16)
