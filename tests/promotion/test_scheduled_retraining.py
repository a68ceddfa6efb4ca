"""Scheduled retraining as a Prefect server runs it: `prefect deploy --all` from prefect.yaml onto
a process work pool, a real `prefect worker start`, a run of the deployment triggered through the
API with a tiny version of the spec, and the new version labelled stable in a running
`nnserve model-server` while clients keep calling the gateway without a failed request."""

import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from promotion.stack import Load, start_stack
from support import (
    DIGITS_SPEC,
    REPO_ROOT,
    nnserve_settings,
    prefect_environment,
    stop,
    wait_until,
)

from pipeline import schedules
from service import serving_config
from service.processes import dies_with_parent

MODEL = "digits-cnn"
# The shipped spec, cut down so that a run trains in seconds; the comparison with the stable
# version passes whatever the tiny model scores (this test is about the schedule's plumbing).
TINY = {
    "dataset": {"max_examples": 300},
    "model": {"conv_filters": [4], "dense_units": 16},
    "training": {"epochs": 1},
    "gate": {"min_accuracy": 0.0, "max_regression": 1.0},
}
RUN_TIMEOUT = 600


def prefect(*args: str, env: dict[str, str], **popen) -> subprocess.Popen:
    """Prefect's own CLI from the repository root, as a user runs it there."""
    return subprocess.Popen(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO_ROOT,
        env=env,
        preexec_fn=dies_with_parent(),
        **popen,
    )


def run_to_end(*args: str, env: dict[str, str], timeout: float = 300) -> str:
    command = prefect(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = command.communicate(timeout=timeout)
    assert command.returncode == 0, f"prefect {' '.join(args)}:\n{output}"
    return output


@pytest.fixture(scope="module")
def stack(prefect_api, tmp_path_factory):
    """A model server and gateway serving digits-cnn version 1 (stable), trained in this process
    through the retrain flow with the tiny overrides."""
    from pipeline.flow import retrain

    root = tmp_path_factory.mktemp("scheduled")
    started = start_stack(root, {})
    try:
        with nnserve_settings(tfserving_addr=started.grpc_address):
            retrain(
                str(DIGITS_SPEC),
                overrides=TINY,
                model_repo=str(started.repo),
                runs_dir=str(root / "runs"),
            )
        wait_until(lambda: _stable_version(started) == 1, 60, "version 1 stable", None)
        yield started
    finally:
        stop(started.gateway)
        stop(started.model_server)


def test_a_deployment_from_prefect_yaml_runs_on_a_worker_and_promotes_under_load(
    prefect_api, stack, tmp_path
):
    env = {
        **os.environ,
        **prefect_environment(tmp_path / "prefect", prefect_api),
        # What the Compose worker's containers get: where models, runs and the model server are.
        "NNSERVE_MODEL_REPO": str(stack.repo),
        "NNSERVE_RUNS_DIR": str(tmp_path / "runs"),
        "NNSERVE_TFSERVING_ADDR": stack.grpc_address,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    run_to_end("work-pool", "create", schedules.WORK_POOL, "--type", "process", env=env)
    run_to_end("--no-prompt", "deploy", "--all", env=env)

    listed = json.loads(run_to_end("deployment", "ls", "--output", "json", env=env))
    declared = schedules.find_schedules(base=REPO_ROOT)
    by_name = {d["name"]: d for d in listed if d["work_pool_name"] == schedules.WORK_POOL}
    assert set(by_name) == {s.model for s in declared}
    for schedule in declared:
        (on_server,) = by_name[schedule.model]["schedules"]
        assert on_server["schedule"]["cron"] == schedule.cron
        assert on_server["schedule"]["timezone"] == schedule.timezone
        assert on_server["active"] is True

    worker = prefect(
        "worker",
        "start",
        "--pool",
        schedules.WORK_POOL,
        env=env,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        with Load(
            stack,
            MODEL,
            http_clients=4,
            grpc_clients=0,
            http_body={"instances": np.zeros((1, 8, 8, 1)).tolist()},
            answer_value=lambda answer: answer["predictions"][0]["class_id"],
            # A training run lasts minutes: clients keep calling until it is promoted.
            max_requests_per_client=100_000,
            pause_seconds=0.02,
        ) as load:
            # The UI's "Custom run" and `prefect deployment run --param` send these parameters.
            flow_run = _run_deployment(f"retrain/{MODEL}", {"overrides": TINY, "force": True})
            state = _final_state(flow_run, worker)
            assert state.type.value == "COMPLETED", f"{state.name}: {state.message}"
            wait_until(lambda: _stable_version(stack) == 2, 60, "version 2 stable", worker)
            moment = time.monotonic()
            load.wait_for_answers_started_after(moment, 3)
        failures = [answer for answer in load.answers if answer.error is not None]
        assert not failures, failures[:5]
        labels = httpx.get(f"{stack.gateway_url}/v1/models", timeout=30).json()["models"]
        assert {m["name"]: m["labels"] for m in labels}[MODEL] == {"stable": "2", "previous": "1"}

        # The next scheduled run finds the data and the spec as version 2 had them.
        again = _run_deployment(f"retrain/{MODEL}", {"overrides": TINY})
        state = _final_state(again, worker)
        assert state.type.value == "COMPLETED", f"{state.name}: {state.message}"
        assert state.message == "no new data since version 2"
        assert _stable_version(stack) == 2
        assert sorted(p.name for p in (stack.repo / MODEL).iterdir() if p.name.isdigit()) == [
            "1",
            "2",
        ]
    finally:
        stop(worker)


def _stable_version(stack) -> int | None:
    config = serving_config.read(stack.config_file, missing_ok=True)
    return serving_config.labels(config, MODEL).get(serving_config.STABLE)


def _run_deployment(name: str, parameters: dict):
    from prefect import get_client

    async def create():
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(name)
            return await client.create_flow_run_from_deployment(
                deployment.id, parameters=parameters
            )

    return asyncio.run(create())


def _final_state(flow_run, worker: subprocess.Popen):
    from prefect import get_client

    async def read():
        async with get_client() as client:
            return (await client.read_flow_run(flow_run.id)).state

    states = []
    wait_until(
        lambda: states.append(asyncio.run(read())) or states[-1].is_final(),
        RUN_TIMEOUT,
        f"flow run {flow_run.name} to end",
        worker,
    )
    return states[-1]
