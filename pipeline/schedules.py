"""Scheduled retraining: one Prefect deployment of the `retrain` flow per spec that has a
`retraining.cron`. `nnserve schedule` serves them from one process; `prefect.yaml` declares the
same ones for a Prefect server with work pools. Both are built here, so they cannot drift."""

import asyncio
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

import pipeline
from pipeline.spec import SpecError, load_spec

SPECS_DIR = Path(pipeline.__file__).parent / "specs"
FLOW_NAME = "retrain"
# A module path, not a file path: the nnserve-trainer image has the package installed but not
# pipeline/flow.py as a file, and a module path loads from any working directory.
ENTRYPOINT = "pipeline.flow.retrain"
# The pool the Compose worker (process) and the Kubernetes worker (GPU Jobs) both serve.
WORK_POOL = "training"
PREFECT_YAML = "prefect.yaml"

logger = logging.getLogger(__name__)


class ScheduleError(ValueError):
    """No spec to schedule, or a spec that cannot be read: one line for the user."""


@dataclass(frozen=True)
class Schedule:
    """One spec's retraining deployment: what the deployment is called, when it runs and with
    which parameters of the `retrain` flow."""

    model: str
    spec_path: str
    cron: str
    timezone: str
    parameters: dict[str, Any]

    @property
    def deployment(self) -> str:
        """The name Prefect shows and `prefect deployment run` takes: flow/deployment."""
        return f"{FLOW_NAME}/{self.model}"

    def next_run(self, after: datetime | None = None) -> datetime:
        """When the schedule fires next, as Prefect's scheduler computes it."""
        from prefect.server.schemas.schedules import CronSchedule

        schedule = CronSchedule(cron=self.cron, timezone=self.timezone)
        return asyncio.run(schedule.get_dates(n=1, start=after))[0]


def find_schedules(
    spec_paths: list[Path] | None = None, base: Path | None = None
) -> list[Schedule]:
    """The schedules of `spec_paths` (default: every spec in pipeline/specs/) that have a
    `retraining.cron`. Spec paths inside `base` (default: the working directory) are recorded
    relative to it, as the working directory of the flow runs will be."""
    base = (base or Path.cwd()).resolve()
    paths = spec_paths if spec_paths else sorted(SPECS_DIR.glob("*.yaml"))
    schedules = []
    for path in paths:
        try:
            spec = load_spec(path)
        except SpecError as error:
            raise ScheduleError(str(error)) from error
        retraining = spec.retraining
        if retraining is None or retraining.cron is None:
            continue
        spec_path = _relative(Path(path), base)
        parameters = retraining.parameters
        schedules.append(
            Schedule(
                model=spec.name,
                spec_path=spec_path,
                cron=retraining.cron,
                timezone=retraining.timezone,
                parameters={
                    "spec_path": spec_path,
                    "overrides": parameters.overrides,
                    "force": parameters.force,
                    "dataset_source": parameters.dataset_source,
                },
            )
        )
    if not schedules:
        where = ", ".join(map(str, paths)) if spec_paths else f"{SPECS_DIR}/*.yaml"
        raise ScheduleError(
            f"no spec has a retraining schedule (retraining.cron) in {where}; add one such as\n"
            '  retraining:\n    cron: "0 3 * * *"\n    timezone: UTC'
        )
    duplicated = {s.model for s in schedules if [t.model for t in schedules].count(s.model) > 1}
    if duplicated:
        raise ScheduleError(
            f"more than one spec is named {', '.join(sorted(duplicated))}: each model's "
            "deployment is named after it"
        )
    return schedules


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path.resolve())


def deployments(schedules: list[Schedule]):
    """Prefect RunnerDeployments of the `retrain` flow, one per schedule, for `serve`."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import EntrypointType

    from pipeline.flow import retrain

    return [
        retrain.to_deployment(
            name=schedule.model,
            schedules=[CronSchedule(cron=schedule.cron, timezone=schedule.timezone)],
            parameters=schedule.parameters,
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for schedule in schedules
    ]


def serve(schedules: list[Schedule]) -> None:
    """Serve the schedules' deployments from this process until Ctrl-C or SIGTERM: Prefect's
    `serve` registers them and runs each flow run it finds due in a subprocess of its own."""
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL

    # Prefect's runner stops on SIGTERM with exit status 0 once it runs; the same before, while
    # it registers the deployments.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    stop = threading.Event()
    api = PREFECT_API_URL.value()
    if not api:
        # Prefect's ephemeral API runs no scheduler service, so nothing would ever fall due:
        # ask it to schedule each deployment's coming runs, as a server's scheduler does. The
        # temporary server is started first, here: a client that finds another thread starting
        # it connects before it listens.
        from prefect import get_client

        with get_client(sync_client=True) as client:
            client.api_healthcheck()
            where = (
                f"Prefect's temporary API at {client.api_url} (no UI; set PREFECT_API_URL to "
                "use a server and its UI)"
            )
        threading.Thread(
            target=_keep_runs_scheduled,
            args=([s.deployment for s in schedules], stop),
            name="schedule-runs",
            daemon=True,
        ).start()
    else:
        where = api
    for schedule in schedules:
        print(
            f"{schedule.deployment}  cron {schedule.cron!r} ({schedule.timezone})  "
            f"next run {schedule.next_run().isoformat()}  spec {schedule.spec_path}"
        )
    print(
        f"serving {len(schedules)} retraining deployment(s) on {where}; Ctrl-C or SIGTERM stops",
        flush=True,
    )
    try:
        prefect_serve(*deployments(schedules), print_starting_message=False)
    finally:
        stop.set()


SCHEDULER_LOOP_SECONDS = 60  # as a Prefect server's scheduler service


def _keep_runs_scheduled(names: list[str], stop: threading.Event) -> None:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    pending = list(names)
    ids: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        while not stop.is_set():
            for name in list(pending):  # registered by `serve` once it has started
                try:
                    ids[name] = client.read_deployment_by_name(name).id
                    pending.remove(name)
                except ObjectNotFound:
                    continue
            for name, deployment_id in ids.items():
                try:
                    client.request(
                        "POST",
                        "/deployments/{id}/schedule",
                        path_params={"id": deployment_id},
                        json={},
                    )
                except Exception as error:  # the next round tries again
                    logger.warning("could not schedule the runs of %s: %s", name, error)
            stop.wait(1 if pending else SCHEDULER_LOOP_SECONDS)


def prefect_yaml(schedules: list[Schedule]) -> str:
    """The text of prefect.yaml declaring the same deployments on the `training` work pool."""
    document = {
        "name": "nnserve",
        "deployments": [
            {
                "name": schedule.model,
                "entrypoint": ENTRYPOINT,
                "parameters": schedule.parameters,
                "schedules": [{"cron": schedule.cron, "timezone": schedule.timezone}],
                "work_pool": {"name": WORK_POOL},
            }
            for schedule in schedules
        ],
    }
    return PREFECT_YAML_HEADER + yaml.safe_dump(document, sort_keys=False)


PREFECT_YAML_HEADER = """\
# Generated by `nnserve schedule --write-prefect-yaml` from the `retraining` sections of
# pipeline/specs/*.yaml: change the specs, then run it again (tests/test_schedules.py fails while
# the two disagree).
#
# `prefect deploy --all`, run from the directory that holds pipeline/specs/ (the repository root,
# or /opt/nnserve/app in the nnserve-trainer image), registers these deployments with the server
# at PREFECT_API_URL. The work pool `training` must exist: the Compose worker creates it as a
# process pool, the Kubernetes worker as a pool of GPU Jobs (k8s/base/training-job-template.json).
# With no `pull` steps, the workers run the flow in the directory `prefect deploy` ran in.
"""
