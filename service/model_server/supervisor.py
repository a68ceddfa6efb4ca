"""`nnserve model-server` as a supervisor of the process that serves: it outlives that process's
crashes.

TensorFlow's kernels can abort the whole process on inputs they do not expect (a C++ CHECK
failure, not an exception; which kernels do depends on the CPU). The request checks in feeds.py
keep the known cases out; this is the second line. The serving process runs as a child. If it
dies by a signal (SIGABRT, SIGSEGV, the OOM killer's SIGKILL), the supervisor logs which signal
and the child's last native line, and starts it again after a pause that grows while it keeps
dying. Every line the child writes reaches stderr as one JSON object. SIGTERM or SIGINT stop the
child gracefully; the supervisor then exits with the child's status. It imports no TensorFlow, so
it costs little memory.
"""

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from service import json_logging
from service.processes import dies_with_parent

log = logging.getLogger("nnserve.model_server.supervisor")

# What the serving process gets unless the environment says otherwise. TensorFlow's oneDNN
# kernels abort the process on some inputs its default kernels refuse with an error (a rank-3
# tensor into a Conv2D, on CPUs with AVX-512); measured here (docs/benchmarks.md), the default
# kernels are no slower for the models served: 0.31 against 0.47 ms for the digits CNN, within
# 2 % for ResNet50.
SERVING_ENVIRONMENT_DEFAULTS = {"TF_ENABLE_ONEDNN_OPTS": "0"}
RESTART_DELAYS_SECONDS = (1, 2, 4, 8, 16, 30)
STABLE_SECONDS = 60  # a child that ran this long before dying starts again after the first delay
STOP_TIMEOUT_SECONDS = 45  # the child's own grace for calls in flight is 30 s


def supervise(command: Sequence[str], level: str) -> int:
    """Run `command` until it exits by itself or is stopped; restart it when it dies by a
    signal. Returns its exit status."""
    writer = json_logging.LineWriter(2)
    json_logging.configure(level, writer)
    stopping = threading.Event()
    current: list[subprocess.Popen] = []

    def stop(signum: int, _frame) -> None:
        stopping.set()
        for child in current:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)

    deaths = 0
    while True:
        started = time.monotonic()
        # A session of its own: a terminal's Ctrl-C reaches the supervisor, which passes it on.
        child = subprocess.Popen(
            command,
            env={**SERVING_ENVIRONMENT_DEFAULTS, **os.environ},
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=dies_with_parent(signal.SIGTERM),
        )
        current[:] = [child]
        if stopping.is_set():  # a signal that came before `current` held this child
            child.send_signal(signal.SIGTERM)
        last_native: collections.deque[str] = collections.deque(maxlen=1)
        relay = threading.Thread(
            target=json_logging.relay,
            args=(child.stderr, writer, level, last_native.append),
            daemon=True,
        )
        relay.start()
        status = _wait(child, stopping)
        relay.join(timeout=5)
        if stopping.is_set() or status >= 0:
            return status if status >= 0 else 128 - status
        name = signal.Signals(-status).name
        if time.monotonic() - started > STABLE_SECONDS:
            deaths = 0
        delay = RESTART_DELAYS_SECONDS[min(deaths, len(RESTART_DELAYS_SECONDS) - 1)]
        deaths += 1
        log.error(
            "the serving process died by %s; starting it again in %d s",
            name,
            delay,
            extra={
                "fields": {
                    "signal": name,
                    "pid": child.pid,
                    "last_native_line": last_native[0] if last_native else "",
                    "restart_in_seconds": delay,
                }
            },
        )
        if stopping.wait(delay):
            return 0


def _wait(child: subprocess.Popen, stopping: threading.Event) -> int:
    """The child's status; once stopping, it gets STOP_TIMEOUT_SECONDS before SIGKILL."""
    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if stopping.is_set():
                break
    try:
        return child.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        log.error("the serving process did not stop within %d s; killing it", STOP_TIMEOUT_SECONDS)
        child.kill()
        return child.wait()


def main(argv: Sequence[str]) -> int:
    """`python -m service.model_server.supervisor LEVEL COMMAND...`, as `nnserve model-server`
    runs it once the settings gave LEVEL."""
    level, *command = argv
    return supervise(command, level)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
