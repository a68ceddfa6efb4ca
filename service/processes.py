"""Child processes: ones that never outlive the process that started them, and what /proc says
of a process and those under it (children, memory, CPU time)."""

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def dies_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` asking Linux to send `signum` to the child when its parent dies, however
    it dies (kill -9, an abort): no server is left holding a port. Linux counts the death of the
    thread that started the child, so start children from a thread that lives as long."""

    def set_parent_death_signal() -> None:
        if sys.platform == "linux":
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)

    return set_parent_death_signal


def child_pids(pid: int | str) -> list[int]:
    """The processes `pid` started that still run (Linux /proc); none once it has ended."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:  # the thread, or the whole process, ended meanwhile
            continue
    return children


def descendant_pids(pid: int | str) -> list[int]:
    """Children, their children, and so on."""
    found: list[int] = []
    for child in child_pids(pid):
        found += [child, *descendant_pids(child)]
    return found


def resident_bytes(pid: int | str, descendants: bool = False) -> int:
    """Resident memory (VmRSS) of a process, and with `descendants` of every process under it;
    0 for one that has ended (or is a zombie)."""
    pids = [pid, *descendant_pids(pid)] if descendants else [pid]
    return sum(_vm_rss(each) for each in pids)


def cpu_seconds(pid: int | str = "self", descendants: bool = False) -> float:
    """User plus system CPU time of a process (this one by default), all its threads, and with
    `descendants` of every process under it that still runs."""
    pids = [pid, *descendant_pids(pid)] if descendants else [pid]
    return sum(_cpu(each) for each in pids)


def _vm_rss(pid: int | str) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next(
        (int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")),
        0,
    )


def _cpu(pid: int | str) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
