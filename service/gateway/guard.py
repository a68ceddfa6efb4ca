"""Protection in front of the API: optional API keys and a limit on request body size.

A plain ASGI middleware, so a refused request costs no routing, no body read and no backend call.
"""

import hmac

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROTECTED_PREFIX = "/v1/"


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body without (or with a false) Content-Length grows too big."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class Guard:
    def __init__(
        self, app: ASGIApp, api_keys: list[str], api_key_header: str, max_body_bytes: int
    ) -> None:
        self.app = app
        self.api_keys = [key.encode() for key in api_keys]
        self.header = api_key_header.lower().encode("latin-1")
        self.header_name = api_key_header
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, message = refusal
            await _answer(send, status, message)
            return
        limit, received = self.max_body_bytes, 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return 413, (
                f"request body of {int(length)} bytes is larger than the limit of "
                f"{self.max_body_bytes} bytes"
            )
        # CORS preflights (sent by browsers without the key) are answered before this guard.
        if self.api_keys and scope["path"].startswith(PROTECTED_PREFIX):
            key = headers.get(self.header)
            if key is None:
                return 401, f"missing API key: send it in the {self.header_name} header"
            if not any(hmac.compare_digest(key, known) for known in self.api_keys):
                return 403, f"the API key in the {self.header_name} header is not valid"
        return None


async def _answer(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
