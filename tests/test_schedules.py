"""Scheduled retraining: prefect.yaml declares exactly the deployments `nnserve schedule` serves,
and `nnserve schedule` registers them with a real Prefect server, lists them with their next run
and stops cleanly on SIGTERM."""

import asyncio
import re
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from support import (
    DIGITS_SPEC,
    REPO_ROOT,
    nnserve,
    prefect_environment,
    read_until,
    refused_start,
    stop,
    wait_until,
)

from pipeline import schedules

PREFECT_YAML = REPO_ROOT / "prefect.yaml"


def test_prefect_yaml_is_what_nnserve_schedule_writes():
    expected = schedules.prefect_yaml(schedules.find_schedules(base=REPO_ROOT))
    assert PREFECT_YAML.read_text() == expected, (
        "prefect.yaml and the specs' retraining sections disagree: run "
        "`nnserve schedule --write-prefect-yaml` from the repository root"
    )


def test_write_prefect_yaml_writes_it(tmp_path):
    written = tmp_path / "prefect.yaml"
    command = nnserve("schedule", "--write-prefect-yaml", str(written), stdout=subprocess.PIPE)
    assert command.wait(120) == 0
    assert written.read_text() == PREFECT_YAML.read_text()


def test_prefect_yaml_declares_the_deployments_nnserve_schedule_serves(monkeypatch):
    """Read as Prefect reads it, prefect.yaml names the same deployments, entrypoint, schedules
    and parameters as the RunnerDeployments `nnserve schedule` hands to Prefect's serve."""
    from prefect.cli.deploy._models import PrefectYamlModel

    declared = PrefectYamlModel.model_validate(yaml.safe_load(PREFECT_YAML.read_text()))
    monkeypatch.chdir(REPO_ROOT)  # where `prefect deploy --all` runs
    served = schedules.deployments(schedules.find_schedules())
    assert served, "no shipped spec has a retraining schedule"

    def described(name, entrypoint, schedule_list, parameters):
        crons = [(s.cron, s.timezone) for s in schedule_list]
        return name, entrypoint, crons, parameters

    assert [
        described(d.name, d.entrypoint, d.schedules, d.parameters) for d in declared.deployments
    ] == [
        described(d.name, d.entrypoint, [s.schedule for s in d.schedules], d.parameters)
        for d in served
    ]
    assert {d.work_pool.name for d in declared.deployments} == {schedules.WORK_POOL}
    # The flow the deployments run is the one `nnserve train` runs.
    assert all(d.flow_name == "retrain" for d in served)


def test_the_demo_spec_is_retrained_every_night():
    (digits,) = [s for s in schedules.find_schedules() if s.model == "digits-cnn"]
    assert (digits.cron, digits.timezone) == ("0 3 * * *", "UTC")
    assert digits.next_run(datetime(2026, 11, 29, 12, tzinfo=UTC)) == datetime(
        2026, 11, 30, 3, tzinfo=UTC
    )


def test_a_time_zone_moves_the_next_run(tmp_path):
    spec = _spec(tmp_path, "berlin", 'cron: "0 3 * * *"\n  timezone: Europe/Berlin')
    (berlin,) = schedules.find_schedules([spec])
    # 03:00 in Berlin in winter (UTC+1) is 02:00 UTC.
    assert berlin.next_run(datetime(2026, 11, 29, 12, tzinfo=UTC)) == datetime(
        2026, 11, 30, 2, tzinfo=UTC
    )


def test_schedule_refuses_specs_without_a_schedule(tmp_path):
    unscheduled = _spec(tmp_path, "unscheduled", "keep_versions: 3")
    stderr = refused_start("schedule", str(unscheduled))
    assert "no spec has a retraining schedule (retraining.cron)" in stderr
    assert str(unscheduled) in stderr


def test_schedule_refuses_a_bad_spec_naming_the_key(tmp_path):
    bad = _spec(tmp_path, "bad-cron", 'cron: "every night"')
    stderr = refused_start("schedule", str(DIGITS_SPEC), str(bad))
    assert "nnserve schedule: error:" in stderr
    assert "retraining.cron" in stderr and str(bad) in stderr


def test_schedule_serves_lists_and_stops_on_sigterm(prefect_api, tmp_path):
    spec = _spec(tmp_path, "hourly-digits", 'cron: "30 * * * *"\n  timezone: Europe/Berlin')
    served = nnserve(
        "schedule",
        str(DIGITS_SPEC),
        str(spec),
        env=prefect_environment(tmp_path / "prefect", prefect_api),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        listing = read_until(served, "Ctrl-C or SIGTERM stops", timeout=180)
        lines = {line.split()[0]: line for line in listing.splitlines() if "next run" in line}
        assert set(lines) == {"retrain/digits-cnn", "retrain/hourly-digits"}
        assert "'0 3 * * *' (UTC)" in lines["retrain/digits-cnn"]
        assert "'30 * * * *' (Europe/Berlin)" in lines["retrain/hourly-digits"]
        for line in lines.values():
            when = datetime.fromisoformat(re.search(r"next run (\S+)", line).group(1))
            assert 0 < (when - datetime.now(UTC)).total_seconds() <= 24 * 3600
        assert prefect_api in listing

        found = {}
        wait_until(
            lambda: bool(found.update(_deployments(("digits-cnn", "hourly-digits")))) or found,
            120,
            "the served deployments on the Prefect server",
            served,
        )
        hourly = found["hourly-digits"]
        assert [(s.schedule.cron, s.schedule.timezone) for s in hourly.schedules] == [
            ("30 * * * *", "Europe/Berlin")
        ]
        assert hourly.parameters == {
            "spec_path": str(spec),  # outside the working directory: absolute
            "overrides": None,
            "force": False,
            "dataset_source": None,
        }
        assert found["digits-cnn"].parameters["spec_path"] == "pipeline/specs/digits-cnn.yaml"
        assert found["digits-cnn"].entrypoint == schedules.ENTRYPOINT
        # The server's scheduler makes the coming runs, at the spec's time in its time zone.
        for run in _scheduled_runs(prefect_api, "hourly-digits", served):
            assert run.expected_start_time.astimezone(ZoneInfo("Europe/Berlin")).minute == 30

        served.send_signal(signal.SIGTERM)
        assert served.wait(60) == 0
    finally:
        stop(served)


def test_schedule_without_a_server_schedules_the_runs_itself(tmp_path, monkeypatch):
    """Prefect's ephemeral API runs no scheduler service: `nnserve schedule` asks it to schedule
    the coming runs, or nothing would ever fall due."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    spec = _spec(tmp_path, "nightly-digits", 'cron: "0 3 * * *"')
    served = nnserve(
        "schedule",
        str(spec),
        env=prefect_environment(tmp_path / "prefect"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = read_until(served, "Ctrl-C or SIGTERM stops", timeout=180)
        api_url = re.search(r"temporary API at (http://127\.0\.0\.1:\d+/api)", output).group(1)
        for run in _scheduled_runs(api_url, "nightly-digits", served):
            start = run.expected_start_time.astimezone(UTC)
            assert (start.hour, start.minute) == (3, 0), start
        served.send_signal(signal.SIGTERM)
        assert served.wait(60) == 0
    finally:
        stop(served)


def _scheduled_runs(api_url: str, deployment: str, served: subprocess.Popen) -> list:
    """The scheduled runs of `deployment` on the API at `api_url`, once there are any (at most
    two minutes, while `served` runs)."""
    found: list = []
    wait_until(
        lambda: found.extend(_read_scheduled_runs(api_url, deployment)) or found,
        120,
        f"runs of {deployment} scheduled on {api_url}",
        served,
    )
    return found


def _read_scheduled_runs(api_url: str, deployment: str) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    only_scheduled = FlowRunFilterStateType(any_=[StateType.SCHEDULED])
    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=only_scheduled)),
        )


def _deployments(names: tuple[str, ...]) -> dict:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    async def read() -> dict:
        found = {}
        async with get_client() as client:
            for name in names:
                try:
                    found[name] = await client.read_deployment_by_name(f"retrain/{name}")
                except ObjectNotFound:
                    return {}
        return found

    return asyncio.run(read())


def _spec(folder: Path, name: str, retraining: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        "dataset: {name: digits}\n"
        "model: {architecture: simple-cnn, conv_filters: [4], dense_units: 16}\n"
        "training: {epochs: 1}\n"
        f"retraining:\n  {retraining}\n"
    )
    return path
