"""What `nnserve` prints on a terminal: the user's progress lines, warnings and errors by default;
every library's log with `--verbose` or NNSERVE_LOG_LEVEL.

TensorFlow, absl and Prefect talk a lot on a CPU machine (oneDNN and CUDA banners, a failed CUDA
probe reported as an error, Prefect's request log and usage reporting). Their settings are put in
the environment before either is imported, so that the processes nnserve starts inherit them; the
user's own value of any of them wins.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# How training shows its progress: Keras's own log lines, a bar per epoch, or one for them all.
KERAS_LOG, EACH_EPOCH, OVERALL = "keras", "epochs", "overall"
# The progress lines of a command (one per step of the flow, say); on stdout, one plain line each.
STEPS = logging.getLogger("nnserve.steps")

_CONSOLE_HANDLER = "nnserve-console"
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's native INFO and WARNING lines
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # usage reporting, an error line when offline
}
# Native lines TensorFlow and absl write straight to descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL
# says: absl's notice before its log is set up, the INFO and WARNING lines that come with it, the
# second line of the CPU feature notice, and the failed CUDA probe of a machine with no NVIDIA
# driver (an "error" that changes nothing: training says which devices it uses).
_CUDA_PROBE = r"E\d{4} .*failed call to cuInit"
_CHATTER = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} "
    r"|To enable the following instructions: "
    rf"|{_CUDA_PROBE}"
)


def is_cuda_probe_failure(line: str) -> bool:
    """Whether a native line is TensorFlow's failed CUDA probe (a machine without NVIDIA's
    driver), which it writes as an error although nothing is wrong."""
    return re.match(_CUDA_PROBE, line) is not None


def is_quiet(verbose: bool) -> bool:
    """Quiet unless `--verbose` or NNSERVE_LOG_LEVEL asks for more."""
    return not verbose and not os.environ.get("NNSERVE_LOG_LEVEL")


def level(verbose: bool) -> str:
    """The level of everything but the progress lines: NNSERVE_LOG_LEVEL if set, INFO with
    `--verbose`, else WARNING."""
    return os.environ.get("NNSERVE_LOG_LEVEL") or ("INFO" if verbose else "WARNING")


def quiet_environment() -> None:
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def configure(verbose: bool) -> None:
    """Log records at `level(verbose)` and up to stderr; progress lines to stdout."""
    quiet = is_quiet(verbose)
    shown = level(verbose).upper()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _CONSOLE_HANDLER]:
        root.removeHandler(handler)  # main() run again in one process, as the tests do
    handler = logging.StreamHandler()
    handler.set_name(_CONSOLE_HANDLER)
    # Prefect's loggers have levels of their own (INFO, for the flow run's log in its UI):
    # what reaches the terminal is decided here.
    handler.setLevel(shown)
    brief, full = "%(levelname)s: %(message)s", "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(brief if quiet else full))
    if quiet:
        handler.addFilter(_no_prefect_failure_reports)
    root.addHandler(handler)
    root.setLevel(shown)
    STEPS.handlers[:] = []
    STEPS.propagate = False
    STEPS.setLevel(logging.INFO)
    if quiet:  # verbose: the same lines reach the log through the flow run's logger
        steps = logging.StreamHandler(sys.stdout)
        steps.setFormatter(logging.Formatter("%(message)s"))
        STEPS.addHandler(steps)


def _no_prefect_failure_reports(record: logging.LogRecord) -> bool:
    """Prefect reports a failed task or flow run with its traceback; the command then reports
    the same failure as one line (a user's error) or raises it (anything else)."""
    return not (record.name.startswith("prefect") and record.levelno >= logging.ERROR)


@contextlib.contextmanager
def native_chatter_hidden(verbose: bool) -> Iterator[None]:
    """Descriptor 2 into a file meanwhile (for importing TensorFlow and finding its devices);
    afterwards every line of it but TensorFlow's and absl's chatter goes to stderr."""
    if not is_quiet(verbose):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for raw in captured:
                line = raw.decode("utf-8", errors="backslashreplace")
                if not _CHATTER.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()
