"""`docker compose` from the repository root, with compose.yaml and the stand-ins' override given
by COMPOSE_FILE, so that each command is the one a user types; every call bounded in time, and
every failure message carrying the logs of the services concerned."""

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = "docker/standins/compose.override.yaml"
# Debian's CLI: the plugin directory it reads is where scripts/docker-engine.sh puts Compose v2.
DOCKER = "/usr/bin/docker"
LOG_LINES = 150
# Times measured on the way (up, training, down), printed after the tests for docs/benchmarks.md.
TIMINGS: dict[str, float] = {}


class ComposeError(AssertionError):
    pass


@dataclass
class Compose:
    """`docker compose ...` in the repository root, with every call bounded in time."""

    env: dict[str, str]

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run(
                [DOCKER, "compose", *args],
                cwd=REPO_ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                # No terminal, as in CI: `run` and `exec` allocate none and read nothing.
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise ComposeError(
                f"`docker compose {' '.join(args)}` did not finish within {timeout:.0f} s\n"
                f"{self.logs()}"
            ) from error
        if check and result.returncode != 0:
            raise ComposeError(
                f"`docker compose {' '.join(args)}` exited {result.returncode}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n{self.logs()}"
            )
        return result

    def start(self, *args: str, output: IO[str]) -> subprocess.Popen:
        """`docker compose ARGS` in the background, writing to `output` (a file: a pipe nobody
        reads while the command runs could fill up and stop it)."""
        return subprocess.Popen(
            [DOCKER, "compose", *args],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )

    def config(self) -> dict:
        return json.loads(self.run("config", "--format", "json").stdout)

    def containers(self) -> dict[str, dict]:
        """`docker inspect` of each of the project's containers (stopped ones too), by service;
        `docker compose run` containers are left out."""
        ids = self.run("ps", "--all", "--quiet").stdout.split()
        if not ids:
            return {}
        inspected = json.loads(docker("inspect", *ids).stdout)
        return {
            c["Config"]["Labels"]["com.docker.compose.service"]: c
            for c in inspected
            if c["Config"]["Labels"].get("com.docker.compose.oneoff") != "True"
        }

    def logs(self, *services: str) -> str:
        """The last lines of the given services' logs (every service's without any), for the
        failure messages."""
        try:
            result = subprocess.run(
                [DOCKER, "compose", "logs", "--no-color", "--tail", str(LOG_LINES), *services],
                cwd=REPO_ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return "(docker compose logs did not answer within 60 s)"
        which = ", ".join(services) or "every service"
        return f"--- last {LOG_LINES} log lines of {which} ---\n{result.stdout}{result.stderr}"


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=True
    )


def wait_for(what: str, ready, timeout: float, interval: float = 2.0, logs=lambda: ""):
    """Calls `ready()` until it returns something true, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = ready()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ComposeError(f"{what}: not within {timeout:.0f} s\n{logs()}")
        time.sleep(interval)
