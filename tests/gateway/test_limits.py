"""Requests as large as the gateway's limits allow, and larger: refused early with a 4xx naming
the limit, and the gateway's memory stays bounded."""

import httpx
import pytest
from gateway.servers import HALF_PLUS_TWO

needs_testdata = pytest.mark.skipif(
    not HALF_PLUS_TWO.is_dir(), reason="../shared/tfserving-testdata is not present"
)


def memory_mb(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (the peak so far) of a process, in MB."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


@needs_testdata
def test_the_largest_json_requests_keep_the_gateway_within_200_mb_more(model_server, gateways):
    # A gateway of its own, so that its peak memory (VmHWM) is this test's.
    gateway = gateways(model_server.address, model_config_file=str(model_server.config_file))
    url = f"{gateway.url}/v1/models/default:predict"
    assert httpx.post(url, json={"instances": [1.0]}).status_code == 200
    at_rest = memory_mb(gateway.process.pid, "VmRSS")
    refused = [
        b'{"instances": [' + b"0," * 8_000_000 + b"0]}",  # 16 MB: 8M numbers
        b'{"instances": [' + b"[]," * 5_000_000 + b"[]]}",  # 15 MB: 5M empty lists
        b'{"instances": [' + b'{"x":0},' * 1_900_000 + b'{"x":0}]}',  # 15 MB: 1.9M objects
    ]
    for body in refused:
        response = httpx.post(url, content=body, timeout=120)
        assert response.status_code == 400
        assert "NNSERVE_MAX_JSON_VALUES" in response.json()["error"]
    # Just under NNSERVE_MAX_JSON_VALUES: the costliest JSON per value the limits let through.
    largest = b'{"instances": [' + b'{"x":0},' * 524_285 + b'{"x":0}]}'
    response = httpx.post(url, content=largest, timeout=120)
    assert response.status_code == 200, response.text[:200]
    assert len(response.json()["predictions"]) == 524_286
    assert memory_mb(gateway.process.pid, "VmHWM") - at_rest < 200
