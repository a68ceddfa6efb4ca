"""The Compose project under a real Docker engine. Run by `make test-compose` only, after
scripts/docker-engine.sh and docker/standins/build.sh; `make test` leaves this folder out."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from compose.helpers import DOCKER, OVERRIDE, TIMINGS, Compose


@pytest.fixture(scope="session")
def compose() -> Iterator[Compose]:
    """The project from a clean state (its containers and volumes removed first), taken down with
    its volumes afterwards unless NNSERVE_COMPOSE_KEEP=1."""
    if not Path(DOCKER).is_file() or not shutil.which("dockerd"):
        pytest.fail(f"{DOCKER} is missing: run scripts/docker-engine.sh (make test-compose does)")
    env = {**os.environ, "COMPOSE_FILE": f"compose.yaml:{OVERRIDE}", "COMPOSE_PROGRESS": "plain"}
    env.pop("COMPOSE_PROJECT_NAME", None)
    project = Compose(env)
    project.run("down", "--volumes", "--remove-orphans", timeout=180)
    yield project
    if os.environ.get("NNSERVE_COMPOSE_KEEP") != "1":
        project.run("down", "--volumes", "--remove-orphans", timeout=180, check=False)


def pytest_terminal_summary(terminalreporter) -> None:
    for what, seconds in TIMINGS.items():
        terminalreporter.write_line(f"compose timing: {what}: {seconds:.0f} s")
