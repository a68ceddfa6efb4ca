"""uvicorn's HTTP/1.1 protocol (httptools) with what the gateway needs on top of it.

Bounded request heads. httptools sets no limit on a request head: it collects an unfinished header
value in memory as long as bytes keep coming (an unfinished 100 MB one took the gateway from 91 to
221 MB), and uvicorn passes on any number of headers. Here a head over `max_head_bytes` (request
line and headers) or with more than `max_headers` header fields is answered 431 and the connection
is closed. Complete heads are measured exactly, field by field; a head still unfinished after a
read is measured by the bytes received since it began. After a 431 the connection reads and drops
what the client still sends for REFUSAL_LINGER_SECONDS before it closes: closing with unread bytes
would send a reset, which can destroy the answer before the client reads it.

Graceful shutdown. On SIGTERM uvicorn closes at once every connection that is not busy with a
response, even one whose next request has begun to arrive, or is on its way: its client gets a
reset. Here a connection that has begun a request is left to finish it, and an idle one is kept
for IDLE_GRACE_SECONDS more, so that a request its client sent before it could know is answered;
every answer after the signal carries `Connection: close`.
"""

import asyncio
import logging

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# How long an idle keep-alive connection is kept after SIGTERM, for a request already on its way.
IDLE_GRACE_SECONDS = 1.0
REFUSAL_LINGER_SECONDS = 1.0

log = logging.getLogger("nnserve.gateway")


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head over a limit."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    # Set by `http_protocol`.
    max_head_bytes: int
    max_headers: int
    head_bytes_setting: str
    headers_setting: str

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the next bytes belong to a request head
        self._head_begun = False  # a request's first bytes have been parsed, its head not all
        self._unfinished_head_bytes = 0
        self._head_bytes = 0
        self._header_count = 0
        self._refusal: str | None = None
        self._refused = False  # a 431 has been sent
        self._shutting_down = False

    # --- bounded request heads ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._unfinished_head_bytes += len(data)
        super().data_received(data)
        # Still in the same head after this read: everything since it began is head.
        if (
            self._in_head
            and self._unfinished_head_bytes > self.max_head_bytes
            and not self._refused
            and not self.transport.is_closing()
        ):
            self._refuse(self._head_too_large(f"more than {self._unfinished_head_bytes} bytes"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True
        self._head_bytes = self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._count_head_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head_bytes(len(name) + len(value) + 4)  # ": " and CRLF
        self._header_count += 1
        if self._header_count > self.max_headers:
            self._refusal = (
                f"request has more than {self.max_headers} header fields, the limit "
                f"({self.headers_setting})"
            )
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = self._head_begun = False
        self._unfinished_head_bytes = 0
        super().on_headers_complete()
        if self._shutting_down and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers any parser error 400; a callback's refusal stopped the parser here.
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(self._refusal)

    def _count_head_bytes(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            self._refusal = self._head_too_large(f"at least {self._head_bytes} bytes")
            raise _HeadRefused

    def _head_too_large(self, size: str) -> str:
        return (
            f"request line and headers are {size}, more than the limit of {self.max_head_bytes} "
            f"bytes ({self.head_bytes_setting})"
        )

    def _refuse(self, message: str) -> None:
        log.warning("refused a request head: %s", message)
        body = orjson.dumps({"error": message})
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self._refused = True
        self.transport.write_eof()
        asyncio.get_running_loop().call_later(REFUSAL_LINGER_SECONDS, self.transport.close)

    # --- graceful shutdown --------------------------------------------------------------------

    def shutdown(self) -> None:
        self._shutting_down = True
        if self._busy():
            if self.cycle is not None:
                self.cycle.keep_alive = False
            return
        asyncio.get_running_loop().call_later(IDLE_GRACE_SECONDS, self._close_if_idle)

    def _busy(self) -> bool:
        responding = self.cycle is not None and not self.cycle.response_complete
        return responding or self._head_begun or bool(self.pipeline)

    def _close_if_idle(self) -> None:
        # A request that arrived meanwhile closes the connection once answered.
        if not self._busy() and not self.transport.is_closing():
            self.transport.close()


def http_protocol(
    max_head_bytes: int, max_headers: int, head_bytes_setting: str, headers_setting: str
) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to give uvicorn (`http=`), with these limits."""
    return type(
        "GatewayHttpProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "max_head_bytes": max_head_bytes,
            "max_headers": max_headers,
            "head_bytes_setting": head_bytes_setting,
            "headers_setting": headers_setting,
        },
    )
