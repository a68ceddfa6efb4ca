"""One JSON object per log line, for every nnserve server process.

Python's own records go through `JsonFormatter`. Native libraries (gRPC core, TensorFlow, absl)
write plain lines straight to file descriptor 2; `capture_native_stderr` routes that descriptor
through a pipe and turns each such line into a JSON record too, so a log reader never meets a line
it cannot parse, and a client-chosen name with a newline in it cannot forge a line.
"""

import json
import logging
import os
import re
import sys
import threading
import time
from datetime import UTC, datetime
from typing import TextIO

import orjson

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


def configure(level: str, stream: TextIO | None = None) -> None:
    """Send every Python log record at `level` or above to `stream` (stderr) as a JSON line."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def capture_native_stderr(level: str) -> TextIO:
    """Route descriptor 2 through a pipe whose lines become JSON records; returns a stream on the
    real stderr for Python's own records (pass it to `configure`).

    Lines below `level` are dropped, as Python's records are.
    """
    threshold = logging.getLevelName(level.upper())
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    lock = threading.Lock()
    stream = _LineWriter(real_stderr, lock)
    # Python code that writes to sys.stderr (warnings, a thread's traceback) reaches the pipe too.
    sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace")

    def relay() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                text = raw.decode("utf-8", errors="backslashreplace")
                if not text.strip():
                    continue
                line_level, line = native_line(text)
                if logging.getLevelName(line_level) >= threshold:
                    stream.write_line(line)

    threading.Thread(target=relay, name="native-stderr", daemon=True).start()
    return stream


class _LineWriter:
    """A text stream on a descriptor that writes each line with one write(2), under a lock, so
    lines from Python's records and from the relay never interleave."""

    def __init__(self, fd: int, lock: threading.Lock) -> None:
        self._fd = fd
        self._lock = lock
        self._pending = ""

    def write(self, text: str) -> int:
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


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
