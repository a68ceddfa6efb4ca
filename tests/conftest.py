import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

# Prefect keeps its ephemeral API's database under PREFECT_HOME: one of its own per test session.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="nnserve-prefect-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests run offline; Prefect's usage reporting would only log failures to reach its servers.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from support import DIGITS_SPEC


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real, temporary Prefect API for flow runs, stopped before the session ends."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def trained_digits(prefect_api, tmp_path_factory: pytest.TempPathFactory):
    """digits-cnn trained once per session by the real Prefect flow, into a temporary repository."""
    from pipeline.flow import train_model

    root = tmp_path_factory.mktemp("digits")
    return train_model(
        str(DIGITS_SPEC), model_repo=str(root / "models"), runs_dir=str(root / "runs")
    )


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """Settings read anew from the environment the test sets (with monkeypatch), and again
    after it: `get_settings` keeps what it read first."""
    from service.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; whatever is still running at the end is stopped."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
