"""What nnserve's commands print on a terminal: TensorFlow's native chatter is hidden, anything
else written meanwhile is kept; the CUDA probe of a machine without a GPU is no error."""

import os

from service import console, json_logging

CHATTER = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795950926.438375   29063 port.cc:153] oneDNN custom operations are on.",
    "I0000 00:00:1795950926.439047   29063 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.",
    "E0000 00:00:1795951037.334350   29741 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]
KEPT = [
    "E0000 00:00:1795951037.334350   29741 op_kernel.cc:1] a real error",
    "/some/module.py:3: UserWarning: something the user should see",
]


def test_native_chatter_is_hidden_and_everything_else_kept(capfd, monkeypatch):
    monkeypatch.delenv("NNSERVE_LOG_LEVEL", raising=False)
    with console.native_chatter_hidden(verbose=False):
        os.write(2, "".join(line + "\n" for line in CHATTER + KEPT).encode())
    assert capfd.readouterr().err.splitlines() == KEPT


def test_verbose_hides_nothing(capfd, monkeypatch):
    monkeypatch.delenv("NNSERVE_LOG_LEVEL", raising=False)
    with console.native_chatter_hidden(verbose=True):
        os.write(2, "".join(line + "\n" for line in CHATTER).encode())
    assert capfd.readouterr().err.splitlines() == CHATTER


def test_the_servers_log_a_failed_cuda_probe_as_info_and_other_errors_as_errors():
    assert json_logging.native_line(CHATTER[-1])[0] == "INFO"
    assert json_logging.native_line(KEPT[0])[0] == "ERROR"
