"""The retraining flow on real Prefect flow runs, without a model server: a run whose data and
spec are the stable version's trains and publishes nothing, failed runs are announced through a
Prefect notification block, flow runs are named after what ran, and only a broken download is
loaded again. (Promotion and the gate against a served stable version: tests/promotion.)"""

import hashlib
import re
import shutil
from zoneinfo import ZoneInfo

import prefect
from prefect.exceptions import ObjectNotFound
from support import (
    DIGITS_SPEC,
    artifacts_of,
    nnserve_settings,
    retrain_without_model_server,
    wait_until,
)

from pipeline import flow as retraining
from pipeline.datasets import DatasetError
from pipeline.outcome import SKIPPED
from pipeline.spec import load_spec
from service import model_repository, serving_config

RUN_NAME_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d"


def write_spec(path, dataset: str, extra: str = "") -> str:
    path.write_text(
        f"name: {path.stem}\n"
        f"dataset: {dataset}\n"
        "model: {architecture: simple-cnn, conv_filters: [4], dense_units: 16}\n"
        "training: {epochs: 1}\n" + extra
    )
    return str(path)


def test_unchanged_data_and_spec_train_and_publish_nothing(trained_digits, tmp_path):
    repo, runs = tmp_path / "models", tmp_path / "runs"
    shutil.copytree(trained_digits.version_dir, repo / "digits-cnn" / "1")
    config_file = repo / model_repository.CONFIG_FILE_NAME
    serving_config.promote(config_file, "digits-cnn", 1, repo / "digits-cnn", model_server=None)
    config_before = config_file.read_text()

    state = retrain_without_model_server(
        DIGITS_SPEC, model_repo=str(repo), runs_dir=str(runs), return_state=True
    )

    assert state.is_completed()
    assert state.message == "no new data since version 1"
    result = state.result()
    assert (result.outcome, result.stable_version, result.version) == (SKIPPED, 1, None)
    assert not runs.exists()  # nothing was trained
    assert sorted(model_repository.list_versions(repo / "digits-cnn")) == [1]
    assert config_file.read_text() == config_before
    artifacts = artifacts_of(state.state_details.flow_run_id)
    report = artifacts["digits-cnn-report"].data
    assert report.startswith("# digits-cnn: nothing new to train on\n")
    assert "**skipped**: no new data since version 1" in report
    accuracy = f"{trained_digits.evaluation.accuracy:.4f}"
    assert f"| accuracy | {accuracy} |" in report  # the stable version's, as it recorded them

    flow_run_id = state.state_details.flow_run_id
    with prefect.get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    assert re.fullmatch(f"digits-cnn-{RUN_NAME_TIME}", run.name)
    assert "digits-cnn" in run.tags
    task_runs = recorded_task_runs(flow_run_id, count=2)
    assert sorted(task_run.name for task_run in task_runs) == [
        "load digits",
        "report skipped",
    ]
    assert all("digits-cnn" in task_run.tags for task_run in task_runs)


def recorded_task_runs(flow_run_id, count: int) -> list:
    """The flow run's task runs, once the API has recorded `count` of them (it learns of task
    runs from events, shortly after they happen)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    seen = []

    def recorded() -> bool:
        with prefect.get_client(sync_client=True) as client:
            seen[:] = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        return len(seen) >= count

    wait_until(recorded, 60, f"{count} task runs of the flow run in the Prefect API")
    return seen


def test_a_failed_run_is_named_after_its_spec_and_announced(notifications, tmp_path):
    missing = tmp_path / "nightly.yaml"
    with nnserve_settings(notification_block=notifications.block):
        state = retrain_without_model_server(missing, return_state=True)

    assert state.is_failed()
    assert "cannot read spec file" in state.message
    (notification,) = notifications.received
    with prefect.get_client(sync_client=True) as client:
        name = client.read_flow_run(state.state_details.flow_run_id).name
    assert re.fullmatch(f"nightly-{RUN_NAME_TIME}", name)
    assert notification["subject"] == f"nnserve: {name} Failed"
    assert f"{missing}: cannot read spec file" in notification["body"]
    assert (
        f"flow run {name} ({state.state_details.flow_run_id}) of retrain: Failed"
        in (notification["body"])
    )


def test_a_notification_that_cannot_be_sent_leaves_the_failure_as_it_was(tmp_path):
    with nnserve_settings(notification_block="custom-webhook/no-such-block"):
        state = retrain_without_model_server(tmp_path / "nightly.yaml", return_state=True)
    assert state.is_failed()
    assert "cannot read spec file" in state.message


def test_run_names_give_the_start_time_in_the_schedules_time_zone(prefect_api, tmp_path):
    spec_path = write_spec(
        tmp_path / "nightly.yaml", "{name: digits}", "retraining: {timezone: Asia/Kathmandu}\n"
    )

    @prefect.flow(flow_run_name=retraining.run_name)
    def named(spec_path: str, overrides: dict | None = None):
        from prefect.runtime import flow_run

        return flow_run.get_name(), flow_run.get_scheduled_start_time()

    name, started = named(spec_path)
    # Kathmandu is UTC+5:45: the minutes say which zone the name was written in.
    assert name == f"nightly-{started.astimezone(ZoneInfo('Asia/Kathmandu')):%Y-%m-%dT%H:%M}"


@prefect.flow
def load_once(spec_path: str) -> tuple[object, int]:
    """The flow's load task, retried at once instead of after its backoff: what it loaded (or
    the error it ended with) and how often it ran."""
    quick = retraining.load.with_options(retry_delay_seconds=0)
    state = quick(load_spec(spec_path), return_state=True)
    return state.result(raise_on_failure=False), final_run_count(state.state_details.task_run_id)


def final_run_count(task_run_id) -> int:
    """How often the task run ran, once the API has recorded how it ended (it learns of task
    runs from events, shortly after they happen)."""
    seen = []

    def ended() -> bool:
        with prefect.get_client(sync_client=True) as client:
            try:
                task_run = client.read_task_run(task_run_id)
            except ObjectNotFound:
                return False
        seen[:] = [task_run.run_count]
        return task_run.state is not None and task_run.state.is_final()

    wait_until(ended, 60, "the task run's final state in the Prefect API")
    return seen[0]


def test_a_broken_download_is_loaded_again(prefect_api, file_server, datasets_upstream, tmp_path):
    file_server.files = dict(datasets_upstream["mnist"])
    file_server.cut_next = {"mnist.npz"}  # the first transfer breaks halfway
    checksum = hashlib.sha256(file_server.files["mnist.npz"]).hexdigest()
    spec_path = write_spec(
        tmp_path / "mnist.yaml",
        f"{{name: mnist, source: '{file_server.url}', cache_dir: '{tmp_path / 'cache'}',"
        # No quick retry inside the download: the task itself must load again.
        f" retries: 0, checksums: {{mnist.npz: {checksum}}}}}",
    )

    dataset, run_count = load_once(spec_path)

    assert run_count == 2
    assert len(dataset.targets) == 300
    assert [name for name, _ in file_server.requests] == ["mnist.npz", "mnist.npz"]


def test_a_bad_data_file_is_not_loaded_again(prefect_api, tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("x,label\n1,a\n2,b\n")
    spec_path = write_spec(
        tmp_path / "table.yaml", f"{{name: csv-table, path: {table}, target: y}}"
    )

    error, run_count = load_once(spec_path)

    assert isinstance(error, DatasetError)
    assert run_count == 1
