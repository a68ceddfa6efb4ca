"""What the benchmarks measure processes with: a free port, CPU time and memory."""

import socket

from service.processes import child_pids, cpu_seconds, resident_bytes

__all__ = ["child_pids", "cpu_seconds", "free_port", "rss_mb"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int | str, descendants: bool = False) -> float:
    """Resident memory of a process, and with `descendants` of those under it, in MB."""
    return resident_bytes(pid, descendants) / 2**20
