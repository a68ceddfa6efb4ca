"""The robustness suite's system: one model server and one gateway per oneDNN setting.

TensorFlow's oneDNN kernels abort on some inputs the default kernels refuse cleanly, so every case
runs against a model server with TF_ENABLE_ONEDNN_OPTS=1 and one with =0. The two stacks are
session-scoped and parametrized: pytest runs every case of one setting, stops that stack, then
starts the other, so only one model server holds memory at a time.
"""

from collections.abc import Iterator

import pytest
from google.protobuf import text_format
from robustness.stack import (
    DIGITS,
    HALF_PLUS_TWO,
    ServedModels,
    Stack,
    model_server_config,
    read_digit,
)
from savedmodels import write_half_plus_two
from support import SHARED_TESTDATA, add_to_summary

STACKS: list[Stack] = []


@pytest.fixture(scope="session")
def served_models(trained_digits, tmp_path_factory) -> ServedModels:
    root = tmp_path_factory.mktemp("robustness")
    shared = SHARED_TESTDATA / "saved_model_half_plus_two_cpu"
    base_paths = {
        HALF_PLUS_TWO: shared if shared.is_dir() else write_half_plus_two(root / HALF_PLUS_TWO),
        DIGITS: trained_digits.version_dir.parent,
    }
    config_file = root / "models.config"
    config_file.write_text(text_format.MessageToString(model_server_config(base_paths)))
    repository = root / "repository"
    repository.mkdir()
    return ServedModels(base_paths, config_file, repository, read_digit(trained_digits.version_dir))


@pytest.fixture(scope="session", params=["1", "0"], ids=["onednn-on", "onednn-off"])
def started_stack(request, served_models, tmp_path_factory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp(f"robustness-onednn-{request.param}")
    stack = Stack(request.param, served_models, logs)
    STACKS.append(stack)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def stack(started_stack: Stack) -> Stack:
    """The stack, with whatever an earlier case killed started again."""
    started_stack.ensure_running()
    return started_stack


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Restarts and memory, per oneDNN setting: the evidence a failing case leaves behind."""
    add_to_summary(
        session.config,
        [
            f"robustness, TF_ENABLE_ONEDNN_OPTS={stack.onednn}: "
            f"restarts: {stack.restarts or 'none'}; RSS MiB (warm-up -> highest seen at a "
            f"health check): {stack.memory_report()}; generated requests' answers: "
            f"{dict(sorted(stack.tally.items()))}"
            for stack in STACKS
        ],
    )
