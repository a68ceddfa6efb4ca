"""What the benchmarks measure processes with: a free port, and a process's CPU time."""

import os
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int | str = "self", descendants: bool = False) -> float:
    """User plus system CPU time of a process (this one by default), all its threads, and with
    `descendants` the processes it started that still run (`nnserve model-server` serves from
    a child process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if not descendants:
        return own
    return own + sum(cpu_seconds(child, descendants=True) for child in child_pids(pid))


def child_pids(pid: int | str) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def rss_mb(pid: int | str, descendants: bool = False) -> float:
    """Resident memory of a process, and with `descendants` of those it started, in MB."""
    own = next(
        int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    if not descendants:
        return own
    return own + sum(rss_mb(child, descendants=True) for child in child_pids(pid))
