"""Helpers the tests share: free ports, bounded waits, and `nnserve` run as a real subprocess."""

import contextlib
import itertools
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.processes import child_pids, dies_with_parent

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_TESTDATA = REPO_ROOT.parent / "shared" / "tfserving-testdata"
DIGITS_SPEC = REPO_ROOT / "pipeline" / "specs" / "digits-cnn.yaml"
# What tests/conftest.py sets for the whole session to quiet TensorFlow and Prefect.
TEST_QUIETING = ("TF_CPP_MIN_LOG_LEVEL", "PREFECT_SERVER_ANALYTICS_ENABLED")


# Ports for the servers tests start come from below the kernel's ephemeral range, where neither a
# bind to port 0 nor a client connection's source port can take one between free_port() and the
# server's bind; under pytest-xdist each worker has a block of its own, so no two workers draw the
# same port. A random start within the block keeps two test sessions on one machine apart too.
LOWEST_TEST_PORT = 10000


def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _port_block() -> range:
    """This process's block of ports: all of them, or its share under pytest-xdist (whose
    workers are named gw0, gw1, ... and told how many they are)."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = (_ephemeral_ports_start() - LOWEST_TEST_PORT) // workers
    if size < 100:
        raise RuntimeError(f"too few ports below the ephemeral range for {workers} test workers")
    start = LOWEST_TEST_PORT + worker * size
    return range(start, start + size)


_PORT_BLOCK = _port_block()
_port_draws = itertools.count(random.randrange(len(_PORT_BLOCK)))


def free_port() -> int:
    """A port on 127.0.0.1 that nothing holds now, from this process's block, not one handed out
    before (until the block wraps around)."""
    for _ in range(len(_PORT_BLOCK)):
        port = _PORT_BLOCK[next(_port_draws) % len(_PORT_BLOCK)]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # taken, or still in TIME_WAIT from an earlier test's server
                continue
            return port
    raise RuntimeError(f"no free port in {_PORT_BLOCK}")


# What the tests add to the end of pytest's report; a pytest-xdist worker's report is not shown, so
# a worker hands its lines to the controller in xdist's `workeroutput` under this key.
SUMMARY_KEY = "nnserve_summary"
_SUMMARY = pytest.StashKey[list[str]]()


def add_to_summary(config: pytest.Config, lines: list[str]) -> None:
    """Lines to print at the end of pytest's report, whichever process runs the tests."""
    workeroutput = getattr(config, "workeroutput", None)  # set in pytest-xdist workers only
    if workeroutput is not None:
        workeroutput.setdefault(SUMMARY_KEY, []).extend(lines)
    else:
        config.stash.setdefault(_SUMMARY, []).extend(lines)


def summary(config: pytest.Config) -> list[str]:
    return config.stash.get(_SUMMARY, [])


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    process: subprocess.Popen | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"process exited with {process.returncode} while waiting for {what}"
            )
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextlib.contextmanager
def nnserve_settings(**values: str) -> Iterator[None]:
    """NNSERVE_* settings (given by field name) for what this process runs meanwhile; the
    settings are read anew inside and after."""
    from service.settings import env_name, get_settings

    try:
        with pytest.MonkeyPatch.context() as patch:
            for field, value in values.items():
                patch.setenv(env_name(field), value)
            get_settings.cache_clear()
            yield
    finally:
        get_settings.cache_clear()


def retrain_without_model_server(spec_path: str | Path, **parameters):
    """The retraining flow, run in this process with no model server at NNSERVE_TFSERVING_ADDR,
    so that its promotion writes the model config in one step whatever listens on the default
    address."""
    from pipeline.flow import retrain

    with nnserve_settings(tfserving_addr=f"127.0.0.1:{free_port()}"):
        return retrain(str(spec_path), **parameters)


def artifacts_of(flow_run_id) -> dict:
    """The artifacts a flow run published, by key, as Prefect's own client reads them."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact for artifact in artifacts}


def latest_artifact(key: str):
    """The newest artifact under `key`, as Prefect's own client reads it."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return artifact


def flow_run_log(flow_run_id) -> list[str]:
    """The messages of a flow run's log, as Prefect's UI shows them."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return [log.message for log in logs]


def nnserve(*args: str, env: dict[str, str | None] | None = None, **popen) -> subprocess.Popen:
    """Start `nnserve ARGS` as a real subprocess, as a user would (`env` adds to this process's
    environment; a None value leaves a variable out). It is killed if the test process dies
    first, even by a crash that runs no fixture's teardown."""
    environment = {**os.environ, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        cwd=REPO_ROOT,
        env={name: value for name, value in environment.items() if value is not None},
        preexec_fn=dies_with_parent(signal.SIGKILL),
        **popen,
    )


def start_up(
    spec: Path, repo: Path, runs_dir: Path, *options: str, as_users_run_it: bool = False
) -> tuple[subprocess.Popen, int, int]:
    """`nnserve up --spec SPEC OPTIONS` on free ports, serving `repo`, its stdout a text pipe;
    returns the process and its gRPC and HTTP ports. `as_users_run_it`: stderr goes into the same
    pipe, and the quieting settings the tests themselves set are left out."""
    grpc_port, http_port = free_port(), free_port()
    process = nnserve(
        "up",
        "--spec",
        str(spec),
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        *options,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if as_users_run_it else None,
        text=True,
        env={
            "NNSERVE_MODEL_REPO": str(repo),
            "NNSERVE_RUNS_DIR": str(runs_dir),
            **(dict.fromkeys(TEST_QUIETING) if as_users_run_it else {}),
        },
    )
    return process, grpc_port, http_port


def refused_start(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run `nnserve ARGS`, which must refuse to start with exit code 2; returns its stderr."""
    process = nnserve(*args, env=env, stderr=subprocess.PIPE, text=True)
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 2, stderr
    return stderr


def serving_pid(model_server: subprocess.Popen, timeout: float = 60) -> int:
    """The process of a running `nnserve model-server` that loads TensorFlow and serves: the
    child running `service.model_server` (a child seen between fork and exec still runs the
    supervisor's command, with the supervisor's environment)."""
    found: list[int] = []

    def serving(pid: int) -> bool:
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:  # ended meanwhile
            return False
        # The supervisor's own command line names the serving command among its arguments.
        return arguments[1:3] == [b"-m", b"service.model_server"]

    wait_until(
        lambda: bool(found.extend(filter(serving, child_pids(model_server.pid))) or found),
        timeout,
        "the model server's serving process",
        model_server,
    )
    return found[0]


def stop(process: subprocess.Popen, timeout: float = 60) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` (the status is then -9). The
    default outlasts the 45 s a model server's supervisor gives its child before SIGKILL."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@contextlib.contextmanager
def model_server_and_gateway(
    *server_flags: str, gateway_env: dict[str, str] | None = None, grpc_port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen, subprocess.Popen]]:
    """`nnserve model-server FLAGS` on `grpc_port` (default: a free one) and `nnserve gateway`
    in front of it: yields the gateway's URL and both processes, and stops both at the end
    (their exit statuses are then in `returncode`)."""
    grpc_port, http_port = grpc_port or free_port(), free_port()
    server = nnserve("model-server", "--host=127.0.0.1", f"--port={grpc_port}", *server_flags)
    gateway = nnserve(
        "gateway",
        "--port",
        str(http_port),
        env={"NNSERVE_TFSERVING_ADDR": f"127.0.0.1:{grpc_port}", **(gateway_env or {})},
    )
    try:
        yield f"http://127.0.0.1:{http_port}", server, gateway
    finally:
        stop(gateway)
        stop(server)


def read_until(process: subprocess.Popen, marker: str, timeout: float = 300) -> str:
    """What a process printed on stdout up to and including the line holding `marker`."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)  # end of output: the process closed stdout

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} not printed within {timeout} s; output:\n{''.join(seen)}")


def is_available(url: str) -> bool:
    """Whether the gateway reports a version AVAILABLE at `url` (/v1/models/NAME)."""
    try:
        statuses = httpx.get(url, timeout=2).json()["model_version_status"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return any(status["state"] == "AVAILABLE" for status in statuses)


def prefect_environment(home: Path, api_url: str | None = None) -> dict[str, str]:
    """Environment for a Prefect process of a test: its own PREFECT_HOME (profiles, SQLite
    database), no usage reporting, and the API it talks to."""
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **({"PREFECT_API_URL": api_url} if api_url else {}),
    }


@contextlib.contextmanager
def prefect_server(home: Path, timeout: float = 180) -> Iterator[str]:
    """A real `prefect server start` on 127.0.0.1 with SQLite under `home`; yields its API URL.
    Killed if the test process dies first; on a busy machine its first start (the database
    migrations) takes a while."""
    port = free_port()
    start = ["server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", *start, "--analytics-off"],
        env={
            **os.environ,
            **prefect_environment(home),
            # Scheduled runs are made within seconds of a deployment's registration, not a minute.
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=dies_with_parent(signal.SIGKILL),
    )
    api_url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        try:
            return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout, f"prefect server ({home / 'server.log'})", server)
        yield api_url
    finally:
        stop(server)
        log.close()
