"""The gateway serves TF Serving's API without TensorFlow anywhere in its process."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
from support import REPO_ROOT

SERVE_IN_PROCESS = """
import json, sys
from fastapi.testclient import TestClient
from service.gateway.app import create_app
from service.settings import Settings

settings = Settings(tfserving_addr=sys.argv[1], model_config_file=sys.argv[2])
with TestClient(create_app(settings)) as client:
    body = json.loads(open(sys.argv[3]).read())
    statuses = [
        client.post("/v1/models/digits-cnn:predict", json=body).status_code,
        client.get("/v1/models/digits-cnn/metadata").status_code,
        client.get("/v1/models").status_code,
    ]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(json.dumps({"statuses": statuses, "loaded": loaded}))
"""


def test_serving_requests_loads_no_tensorflow_module(model_server, trained_digits):
    example = trained_digits.version_dir / "assets.extra" / "example_request.json"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE_IN_PROCESS,
            model_server.address,
            str(model_server.config_file),
            str(example),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["statuses"] == [200, 200, 200]
    assert report["loaded"] == []


def test_the_gateway_process_maps_no_tensorflow_library(gateway, trained_digits):
    example = (trained_digits.version_dir / "assets.extra" / "example_request.json").read_bytes()
    response = httpx.post(f"{gateway.url}/v1/models/digits-cnn:predict", content=example)
    assert response.status_code == 200
    maps = Path(f"/proc/{gateway.process.pid}/maps").read_text()
    # `nnserve gateway` runs as `python -m service.cli`: the pid is the gateway itself.
    assert "site-packages/tensorflow" not in maps
    assert "grpc" in maps  # the check looks at the right process
