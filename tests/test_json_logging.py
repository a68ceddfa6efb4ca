"""JSON log lines: the cached timestamp and the line writer's whole lines."""

import os
from datetime import UTC, datetime

import pytest

from service import json_logging


@pytest.mark.parametrize(
    "created",
    [
        1_700_000_000.0,
        1_700_000_000.0004,
        1_700_000_000.0005,
        1_700_000_000.9994,
        1_700_000_000.9995,
        1_700_000_000.9999996,  # rounds up into the next second
        1_700_000_001.25,
        1_700_000_000.5,  # back to a second before the cached one
        0.0,
        -1.5,
    ],
)
def test_timestamps_are_what_datetime_writes(created):
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert json_logging._timestamp(created) == expected


def test_the_line_writer_writes_whole_lines_however_the_text_comes(tmp_path):
    path = tmp_path / "lines"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        writer = json_logging.LineWriter(fd)
        writer.write('{"a": 1}\n')
        writer.write('{"b"')
        writer.write(': 2}\n{"c": 3}\n{"d"')
        writer.write(": 4}\n")
    finally:
        os.close(fd)
    assert path.read_text().splitlines() == ['{"a": 1}', '{"b": 2}', '{"c": 3}', '{"d": 4}']
