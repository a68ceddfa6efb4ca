import contextlib
import json
import os
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# Prefect keeps its ephemeral API's database under PREFECT_HOME: one of its own per test process.
# Set, not defaulted: a pytest-xdist worker inherits the environment of the pytest process that
# started it, and two workers must not share one SQLite database.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="nnserve-prefect-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests run offline; Prefect's usage reporting would only log failures to reach its servers.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from support import (
    DIGITS_SPEC,
    SUMMARY_KEY,
    add_to_summary,
    prefect_server,
    retrain_without_model_server,
    summary,
)

# Directories whose test files share costly session fixtures: under `--dist loadfile` each of them
# goes to one worker whole. tests/robustness's two stacks (a model server and a gateway for each
# oneDNN setting) would otherwise start again for every file on every worker.
ONE_WORKER_DIRECTORIES = ("tests/robustness/",)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: called in the controller
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getoption("dist") != "loadfile":
        return None  # xdist's own scheduler for the mode asked for
    from xdist.scheduler import LoadFileScheduling

    class LoadFileKeepingDirectoriesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return next((d for d in ONE_WORKER_DIRECTORIES if path.startswith(d)), path)

    return LoadFileKeepingDirectoriesTogether(config, log)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: called in the controller
def pytest_testnodedown(node, error) -> None:
    """A worker's lines for the end of the report, marked with the worker's name."""
    lines = getattr(node, "workeroutput", {}).get(SUMMARY_KEY, [])
    add_to_summary(node.config, [f"[{node.gateway.id}] {line}" for line in lines])


def pytest_terminal_summary(terminalreporter) -> None:
    for line in summary(terminalreporter.config):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` on 127.0.0.1 (SQLite, scheduler on) shared by the session:
    this process's flow runs report to it, and its URL (the value for PREFECT_API_URL) is what
    the fixture gives, for the workers and commands a test starts. It dies with this process."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        prefect_server(tmp_path_factory.mktemp("prefect-server")) as api_url,
        temporary_settings(updates={PREFECT_API_URL: api_url}),
    ):
        yield api_url
        _drain_prefect_workers()


def _drain_prefect_workers() -> None:
    """Send the logs and events still queued before the server they go to stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):  # never started
        APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


@pytest.fixture(scope="session")
def trained_digits(prefect_api, tmp_path_factory: pytest.TempPathFactory):
    """digits-cnn trained once per session by the real Prefect flow, into a temporary repository,
    where it is the first and stable version."""
    root = tmp_path_factory.mktemp("digits")
    return retrain_without_model_server(
        DIGITS_SPEC, model_repo=str(root / "models"), runs_dir=str(root / "runs")
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


@dataclass
class Notifications:
    """A Prefect notification block posting to a webhook on 127.0.0.1, and what it received."""

    block: str  # as NNSERVE_NOTIFICATION_BLOCK names it: <block type>/<block name>
    received: list[dict] = field(default_factory=list)  # the JSON bodies posted, in order


@pytest.fixture
def notifications(prefect_api) -> Iterator[Notifications]:
    """A real custom-webhook block saved on the session's Prefect API, pointing at a local HTTP
    server that records what it is sent."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    name = f"nnserve-tests-{uuid.uuid4().hex[:8]}"
    CustomWebhookNotificationBlock(
        name="nnserve tests",
        url=f"http://127.0.0.1:{server.server_address[1]}/hook",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    ).save(name)
    try:
        yield Notifications(f"custom-webhook/{name}", received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
