"""A server a test starts never outlives the test process, however that process dies."""

import signal
import subprocess
import sys
import textwrap

import pytest
from support import REPO_ROOT, free_port, wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a Linux parent-death signal")


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1].startswith("Z")  # a zombie no longer runs
    except FileNotFoundError:
        return True


def test_a_server_a_test_started_dies_when_the_test_process_is_killed():
    # A stand-in for a pytest process that crashes: it starts a gateway the way the tests do,
    # reports its pid, and kills itself, so no fixture teardown runs.
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
        from support import nnserve
        gateway = nnserve("gateway", "--port", "{free_port()}")
        print(gateway.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    parent = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    gateway = int(parent.stdout.split()[0])
    wait_until(lambda: gone(gateway), 30, "the gateway to die with the process that started it")
