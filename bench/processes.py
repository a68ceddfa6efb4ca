"""What the benchmarks measure processes with: a free port, CPU time and memory; and training
that promotes into the benchmark's own repository."""

import contextlib
import os
import socket
from collections.abc import Iterator

from service.processes import child_pids, cpu_seconds, resident_bytes
from service.settings import env_name, get_settings

__all__ = ["child_pids", "cpu_seconds", "free_port", "no_model_server", "rss_mb"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def no_model_server() -> Iterator[None]:
    """Meanwhile, NNSERVE_TFSERVING_ADDR is a free port: the retraining flow then makes what it
    trains stable in the benchmark's repository in one step, instead of waiting for a model
    server that serves another repository (`nnserve up`'s, at the default address)."""
    name = env_name("tfserving_addr")
    before = os.environ.get(name)
    os.environ[name] = f"127.0.0.1:{free_port()}"
    get_settings.cache_clear()
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before
        get_settings.cache_clear()


def rss_mb(pid: int | str, descendants: bool = False) -> float:
    """Resident memory of a process, and with `descendants` of those under it, in MB."""
    return resident_bytes(pid, descendants) / 2**20
