"""One JSON object per log line, for every nnserve server process.

Python's own records go through `JsonFormatter`. Native libraries (gRPC core, TensorFlow, absl)
write plain lines straight to file descriptor 2; `capture_native_stderr` routes that descriptor
through a pipe and turns each such line into a JSON record too, so a log reader never meets a line
it cannot parse, and a client-chosen name with a newline in it cannot forge a line.
"""

import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, TextIO

import orjson

from service.console import is_cuda_probe_failure

# absl / glog lines: a severity letter, MMDD, then the time ("E0000 00:00:17... file.cc:12] ...").
_NATIVE_SEVERITY = re.compile(r"([IWEF])\d{4} ")
_NATIVE_LEVELS = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}
NATIVE_LOGGER = "native"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `fields` extra."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return dumps(entry)


def dumps(entry: dict) -> str:
    """A log entry as one line of ASCII JSON (a stderr that cannot encode a character would
    otherwise break the line)."""
    line = orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS)
    if line.isascii():
        return line.decode()
    return json.dumps(entry, default=str, ensure_ascii=True, separators=(",", ":"))


def native_line(text: str, created: float | None = None) -> tuple[str, str]:
    """(level, JSON line) for one line a native library or a child process wrote as plain text."""
    text = text.rstrip("\r\n")
    match = _NATIVE_SEVERITY.match(text)
    level = _NATIVE_LEVELS[match.group(1)] if match else "INFO"
    if is_cuda_probe_failure(text):  # an "error" on every machine without a GPU
        level = "INFO"
    entry = {
        "time": _timestamp(time.time() if created is None else created),
        "level": level,
        "logger": NATIVE_LOGGER,
        "message": text,
    }
    return level, dumps(entry)


def is_json_line(text: str) -> bool:
    """Whether a line is already one JSON object (a record this module wrote)."""
    if not text.startswith("{"):
        return False
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return False


def configure(level: str, stream: "TextIO | LineWriter | None" = None) -> None:
    """Send every Python log record at `level` or above to `stream` (stderr) as a JSON line."""
    # A line holds none of the caller's file, line, thread or process, which logging otherwise
    # looks up for every record: a quarter of the gateway's access log line (28 -> 22 us).
    logging._srcfile = None  # the switch the logging HOWTO's "Optimization" section names
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = _LineHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def capture_native_stderr(level: str) -> "LineWriter":
    """Route descriptor 2 through a pipe whose lines become JSON records; returns a writer on the
    real stderr for Python's own records (pass it to `configure`)."""
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    writer = LineWriter(real_stderr)
    # Python code that writes to sys.stderr (warnings, a thread's traceback) reaches the pipe too.
    sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    pipe = os.fdopen(read_end, "rb")
    threading.Thread(
        target=relay, args=(pipe, writer, level), name="native-stderr", daemon=True
    ).start()
    return writer


def relay(
    stream: IO[bytes],
    writer: "LineWriter",
    level: str,
    on_native_line: Callable[[str], None] | None = None,
) -> None:
    """Copy a byte stream's lines to `writer` until it ends: JSON records as they are, any other
    line (a native library's, a fatal error's report) wrapped as a record, unless below `level`.
    `on_native_line` sees each wrapped line's text."""
    threshold = logging.getLevelName(level.upper())
    with stream:
        for raw in stream:
            text = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
            if not text.strip():
                continue
            if is_json_line(text):
                writer.write_line(text)
                continue
            if on_native_line is not None:
                on_native_line(text)
            line_level, line = native_line(text)
            if logging.getLevelName(line_level) >= threshold:
                writer.write_line(line)


class _LineHandler(logging.StreamHandler):
    def flush(self) -> None:
        # A LineWriter has written each line by the time `write` returns; a stream handler
        # flushes after every record, under a lock (2 us of a gateway access line).
        if not isinstance(self.stream, LineWriter):
            super().flush()


class LineWriter:
    """A text stream on a file descriptor that writes each line with whole write(2) calls under
    a lock, so lines from Python's records and from a relay never interleave."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._pending = ""

    def write(self, text: str) -> int:
        if not self._pending and text.find("\n") == len(text) - 1:  # one whole line, as a rule
            self.write_line(text[:-1])
            return len(text)
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self.write_line(line)
        return len(text)

    def write_line(self, line: str) -> None:
        data = memoryview((line + "\n").encode("utf-8", errors="backslashreplace"))
        with self._lock:
            while data:
                data = data[os.write(self._fd, data) :]

    def flush(self) -> None:
        pass


# The date and time to the second of the last record, which the next is likely to share: the
# gateway writes a line per request, and isoformat took 4 us of its 28.
_last_second: tuple[float, str] = (-1.0, "")


def _timestamp(created: float) -> str:
    """`created` as datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")."""
    global _last_second
    fraction, second = math.modf(created)
    microseconds = round(fraction * 1_000_000)  # rounded as datetime rounds
    if microseconds >= 1_000_000 or fraction < 0:
        return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    if second != _last_second[0]:
        text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
        _last_second = second, text[: -len("+00:00")]
    return f"{_last_second[1]}.{microseconds // 1000:03d}+00:00"
