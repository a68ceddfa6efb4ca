"""Child processes that never outlive the process that started them."""

import ctypes
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def dies_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` asking Linux to send `signum` to the child when its parent dies, however
    it dies (kill -9, an abort): no server is left holding a port. Linux counts the death of the
    thread that started the child, so start children from a thread that lives as long."""

    def set_parent_death_signal() -> None:
        if sys.platform == "linux":
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)

    return set_parent_death_signal
