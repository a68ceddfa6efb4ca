"""Importing the wire package must not import TensorFlow (4 s, 670 MB in the gateway)."""

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, json, pkgutil, sys
import service.wire, service.wire.methods, service.wire.gen as gen
imported = ["service.wire", "service.wire.methods"]
for info in pkgutil.walk_packages(gen.__path__, "service.wire.gen."):
    importlib.import_module(info.name)
    imported.append(info.name)
{extra}
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_serving"))
print(json.dumps({{"imported": imported, "leaked": leaked}}))
"""


def _probe(extra: str = "") -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(extra=extra)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_wire_imports_leave_tensorflow_out():
    report = _probe()
    generated = [m for m in report["imported"] if m.endswith("_pb2")]
    assert len(generated) >= 20, report["imported"]
    assert report["leaked"] == []


def test_probe_would_notice_tensorflow():
    # Control: the same probe does report TensorFlow once an official module is imported.
    report = _probe("import tensorflow_serving.apis.predict_pb2")
    assert "tensorflow" in report["leaked"]
