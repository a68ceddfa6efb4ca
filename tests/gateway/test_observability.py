"""The gateway's JSON log lines."""

import json
import logging
from pathlib import Path

import pytest

from service.json_logging import JsonFormatter


@pytest.mark.parametrize("path", ["/v1/models/digits:predict", "/v1/models/zürich:predict"])
def test_a_log_line_is_ascii_json_with_the_message_and_fields(path):
    record = logging.LogRecord(
        "nnserve.gateway.access", logging.INFO, __file__, 1, "%s %s", ("POST", path), None
    )
    record.fields = {"path": path, "status": 200, "model_dir": Path("/models/digits")}

    line = JsonFormatter().format(record)

    assert line.isascii() and "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == f"POST {path}"
    assert (entry["level"], entry["logger"]) == ("INFO", "nnserve.gateway.access")
    assert (entry["path"], entry["status"], entry["model_dir"]) == (path, 200, "/models/digits")
    assert entry["time"].endswith("+00:00")
