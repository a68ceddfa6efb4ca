"""The retraining flow: load -> (skip when nothing changed) -> preprocess -> train -> evaluate the
candidate and the stable version -> decide -> export -> publish -> promote -> prune.

One lifecycle: `nnserve train`, `nnserve up`, the tests and scheduled deployments all run
`retrain` (entrypoint `pipeline/flow.py:retrain`).
"""

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import keras
from prefect import flow, get_client, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.tasks import exponential_backoff

from pipeline import export, reports, stable, training
from pipeline.datasets import Dataset, load_dataset
from pipeline.devices import placed, plan_devices
from pipeline.downloads import DownloadError
from pipeline.gate import Decision, decide
from pipeline.models import Head, build_model, repeatable_default_seeds
from pipeline.notifications import notify_failure
from pipeline.outcome import (
    DECISION_FILE,
    PUBLISHED,
    REJECTED,
    SKIPPED,
    CandidateRejected,
    EpochsInPrefect,
    RetrainResult,
    publish_artifacts,
)
from pipeline.preprocess import Splits, split_dataset
from pipeline.spec import Spec, SpecError, load_spec, training_digest
from pipeline.stable import StableVersion
from service import model_repository, registry, served_view, serving_config
from service.console import KERAS_LOG, STEPS
from service.model_status import ModelStatusClient
from service.settings import get_settings

SPEC_FILE = "spec.json"
KERAS_MODEL_FILE = "model.keras"
# Whole-download retries, after downloads.fetch's own quick ones: for an outage of minutes.
LOAD_RETRIES = 2
LOAD_RETRY_BACKOFF_SECONDS = 30


class _Steps(logging.LoggerAdapter):
    """A run logger (the flow run's log in Prefect) whose INFO lines are also the progress lines
    `nnserve train` prints (service/console.py) while the user waits for training; its warnings
    reach the terminal by themselves. What the later steps find, the command's summary says."""

    def info(self, msg, *args, **kwargs) -> None:
        STEPS.info(msg, *args)
        self.logger.info(msg, *args, **kwargs)


def _log() -> logging.LoggerAdapter:
    return _Steps(get_run_logger())


@dataclass(frozen=True)
class Trained:
    model: keras.Model
    epochs_trained: int
    resumed_from_epoch: int


def head_of(spec: Spec, dataset: Dataset) -> Head:
    from_logits = spec.training.loss is not None and spec.training.loss.from_logits
    return Head.for_dataset(dataset, from_logits)


def model_for(spec: Spec, dataset: Dataset, splits: Splits) -> keras.Model:
    """The spec's model, untrained. What it learns before training (vocabulary, scaling, the
    target range) comes from the training split alone; its initial weights from the seed alone."""
    with repeatable_default_seeds(spec.training.seed):
        return build_model(
            spec.model,
            dataset.input_spec,
            head_of(spec, dataset),
            spec.preprocessing.augmentation,
            training_features=splits.train.features,
            training_targets=splits.train.targets,
        )


def _transient(task, task_run, state: State) -> bool:
    """Retry a load only when a download broke: a bad spec or file stays bad."""
    return isinstance(state.result(raise_on_failure=False), DownloadError)


# Arrays and Keras models pass between tasks in memory; hashing them for a cache key is waste.
@task(
    name="load data",
    task_run_name="load {spec.dataset.name}",
    cache_policy=NO_CACHE,
    retries=LOAD_RETRIES,
    retry_delay_seconds=exponential_backoff(LOAD_RETRY_BACKOFF_SECONDS),
    retry_condition_fn=_transient,
)
def load(spec: Spec) -> Dataset:
    return load_dataset(spec.dataset, _log())


@task(name="split", task_run_name="split {spec.dataset.name}", cache_policy=NO_CACHE)
def preprocess(spec: Spec, dataset: Dataset) -> Splits:
    return split_dataset(dataset, spec.dataset, _log())


@task(name="train", task_run_name="train {spec.name}", cache_policy=NO_CACHE)
def train(spec: Spec, dataset: Dataset, splits: Splits, run_dir: Path, progress: str) -> Trained:
    logger = _log()
    keras.utils.set_random_seed(spec.training.seed)
    plan = plan_devices(spec.training)
    logger.info("training on %s", plan.describe())
    resumed_from = _checkpointed_epochs(run_dir)
    if resumed_from:
        logger.info("resuming %s from its checkpoint after epoch %d", run_dir, resumed_from)
    head = head_of(spec, dataset)
    with placed(plan):
        model = model_for(spec, dataset, splits)
        loss = training.loss_spec(spec.training, head)
        training.compile_model(model, spec.optimizer, loss, head, plan.xla)
        history = training.fit(
            model,
            splits,
            spec.training,
            spec.preprocessing,
            head,
            run_dir,
            progress,
            callbacks=[EpochsInPrefect(spec.name, get_run_logger())],
        )
    model.save(run_dir / KERAS_MODEL_FILE)
    reports.write_model_summary(model, run_dir / reports.SUMMARY_FILE)
    reports.dump_weights(model, run_dir / reports.WEIGHTS_FILE)
    reports.plot_curves(run_dir / training.HISTORY_FILE, run_dir / reports.CURVES_FILE)
    return Trained(model, resumed_from + len(history.epoch), resumed_from)


@task(name="evaluate candidate", task_run_name="evaluate candidate", cache_policy=NO_CACHE)
def evaluate_candidate(
    spec: Spec, model: keras.Model, dataset: Dataset, splits: Splits, run_dir: Path
) -> training.Evaluation:
    head = head_of(spec, dataset)
    evaluation = training.evaluate(
        model, splits.test, head, training.loss_spec(spec.training, head)
    )
    if head.is_classifier:
        predicted = training.predict(model, splits.test.features, head).argmax(axis=-1)
        reports.classification_report(splits.test.targets, predicted, dataset.labels, run_dir)
    get_run_logger().info("candidate: %s", evaluation.describe())
    return evaluation


@task(
    name="evaluate stable version",
    task_run_name="evaluate stable version {champion.version}",
    cache_policy=NO_CACHE,
)
def evaluate_stable(
    spec: Spec, champion: StableVersion, dataset: Dataset, splits: Splits
) -> training.Evaluation:
    """The stable version on the candidate's test split, fed raw features through its
    SavedModel's serving_default, its answers scored as the candidate's are."""
    head = head_of(spec, dataset)
    answers = stable.answers(champion, splits.test.features, head)
    evaluation = training.evaluation_of(
        answers, splits.test.targets, head, training.loss_spec(spec.training, head)
    )
    get_run_logger().info("stable version %d: %s", champion.version, evaluation.describe())
    return evaluation


@task(name="decide", task_run_name="decide", cache_policy=NO_CACHE)
def judge(
    spec: Spec,
    candidate: training.Evaluation,
    champion: StableVersion | None,
    champion_evaluation: training.Evaluation | None,
    run_dir: Path,
) -> Decision:
    decision = decide(
        candidate, spec.gate, champion_evaluation, champion.version if champion else None
    )
    (run_dir / DECISION_FILE).write_text(json.dumps(decision.to_json(), indent=2) + "\n")
    get_run_logger().info(
        "%s: %s", "accepted" if decision.accepted else "rejected", decision.reason
    )
    return decision


@task(name="export", task_run_name="export {spec.name}", cache_policy=NO_CACHE)
def export_model(
    spec: Spec,
    model: keras.Model,
    dataset: Dataset,
    splits: Splits,
    evaluation: training.Evaluation,
    decision: Decision,
    run_dir: Path,
) -> Path:
    metadata = {
        "model_name": spec.name,
        "task": dataset.task,
        "labels": dataset.labels,
        "metrics": evaluation.to_json(),
        "dataset_fingerprint": dataset.fingerprint(),
        "spec": spec.model_dump(mode="json"),
        "flow_run_id": flow_run.get_id(),
        model_repository.DECISION: decision.to_json(),
    }
    return export.export_model(
        model,
        dataset.input_spec,
        head_of(spec, dataset),
        run_dir / "export",
        metadata,
        held_out=splits.test.features,
    )


@task(name="publish", task_run_name="publish {spec.name}", cache_policy=NO_CACHE)
def publish(spec: Spec, export_dir: Path, base_path: Path) -> int:
    version = model_repository.publish(export_dir, base_path)
    get_run_logger().info("published %s version %d", spec.name, version)
    return version


@task(
    name="promote",
    task_run_name="promote {spec.name} version {version}",
    cache_policy=NO_CACHE,
)
def promote(
    spec: Spec, version: int, base_path: Path, config_file: Path
) -> serving_config.Promotion:
    """Make the version stable through the model server's steps (service/serving_config.py);
    the status calls there are retried with backoff until the promotion's timeout."""
    settings = get_settings()
    left_out = served_view.leaves_out(config_file, settings.tfserving_addr, spec.name)
    if left_out:
        get_run_logger().warning("%s: promoting without waiting for it", left_out)
    with ModelStatusClient(settings.tfserving_addr) as model_server:
        promotion = serving_config.promote(
            config_file,
            spec.name,
            version,
            base_path,
            None if left_out else model_server,
            settings.promotion_timeout_seconds,
        )
    get_run_logger().info(
        "%s version %d is stable (previous: %s; served: %s)",
        spec.name,
        version,
        promotion.previous,
        ", ".join(map(str, promotion.served)),
    )
    return promotion


@task(name="prune", task_run_name="prune {spec.name}", cache_policy=NO_CACHE)
def prune(spec: Spec, repo: Path, config_file: Path) -> tuple[int, ...]:
    deleted = registry.prune(
        repo, spec.name, spec.keep_versions, serving_config.read(config_file, missing_ok=True)
    )
    if deleted:
        get_run_logger().info("pruned versions %s of %s", deleted, spec.name)
    return tuple(deleted)


@task(name="report", task_run_name="report {result.outcome}", cache_policy=NO_CACHE)
def report(result: RetrainResult) -> None:
    publish_artifacts(result)


def run_name() -> str:
    """`<model>-<start time>`, in the time zone of the spec's schedule (UTC without one), so
    that a run's name says what ran and which scheduled run it was."""
    parameters = flow_run.get_parameters()
    try:
        spec = load_spec(parameters["spec_path"], parameters.get("overrides"))
    except SpecError:  # the run itself fails with the full message
        return f"{Path(parameters['spec_path']).stem}-{datetime.now(UTC):%Y-%m-%dT%H:%M}"
    zone = ZoneInfo(spec.retraining.timezone if spec.retraining else "UTC")
    return f"{spec.name}-{flow_run.get_scheduled_start_time().astimezone(zone):%Y-%m-%dT%H:%M}"


@flow(
    name="retrain",
    flow_run_name=run_name,
    on_failure=[notify_failure],
    on_crashed=[notify_failure],
    log_prints=True,
)
def retrain(
    spec_path: str,
    overrides: dict | None = None,
    force: bool = False,
    dataset_source: str | None = None,
    model_repo: str | None = None,
    runs_dir: str | None = None,
    progress: str = KERAS_LOG,
) -> RetrainResult:
    """Retrain the model a spec describes; publish and promote the candidate if it passes.

    - `overrides` replace values of the spec file (nested keys, as in the YAML);
      `dataset_source` replaces where its data comes from (`dataset.source` or `dataset.path`).
    - Skipped (Completed, nothing published) when the data and what the spec trains are those
      of the stable version, unless `force`.
    - The candidate and the stable version are evaluated on the same test split; a candidate
      the gate rejects is kept under its run folder and the run ends Failed, saying why.
    - An accepted candidate is published, made stable (NNSERVE_TFSERVING_ADDR's model server
      loads it first), and versions beyond `retraining.keep_versions` are pruned.
    - `model_repo` and `runs_dir` default to NNSERVE_MODEL_REPO and NNSERVE_RUNS_DIR; a run of
      the same spec killed before it finished is resumed from its last checkpoint. `progress`
      draws a bar per epoch (`epochs`) or one for all (`overall`) instead of Keras's log lines.
    """
    spec = load_spec(spec_path, overrides, dataset_source=dataset_source)
    _tag_flow_run(spec.name)
    with tags(spec.name):  # and every task run of it
        return _retrain(spec, force, model_repo, runs_dir, progress)


def _retrain(
    spec: Spec, force: bool, model_repo: str | None, runs_dir: str | None, progress: str
) -> State:
    settings = get_settings()
    repo = (Path(model_repo) if model_repo else settings.model_repo).absolute()
    config_file = settings.model_config_file or repo / model_repository.CONFIG_FILE_NAME
    config = serving_config.read(config_file, missing_ok=True)
    base_path = _base_path(config, repo, spec.name)
    champion = stable.find(config, spec.name, base_path)

    dataset = load(spec)
    if champion and not force and stable.unchanged_since(champion, dataset.fingerprint(), spec):
        result = RetrainResult(
            spec.name,
            SKIPPED,
            f"no new data since version {champion.version}",
            stable_version=champion.version,
            stable_evaluation=_recorded_evaluation(champion),
            version_dir=champion.version_dir,
        )
        report(result)
        return Completed(message=result.message, data=result)

    run_dir = _run_dir(Path(runs_dir) if runs_dir else settings.runs_dir, spec)
    splits = preprocess(spec, dataset)
    trained = train(spec, dataset, splits, run_dir, progress)
    candidate = evaluate_candidate(spec, trained.model, dataset, splits, run_dir)
    champion_evaluation = evaluate_stable(spec, champion, dataset, splits) if champion else None
    decision = judge(spec, candidate, champion, champion_evaluation, run_dir)
    export_dir = export_model(spec, trained.model, dataset, splits, candidate, decision, run_dir)
    outcome = {
        "model_name": spec.name,
        "message": decision.reason,
        "evaluation": candidate,
        "stable_version": champion.version if champion else None,
        "stable_evaluation": champion_evaluation,
        "decision": decision,
        "run_dir": run_dir,
        "export_dir": export_dir,
        "epochs_trained": trained.epochs_trained,
        "resumed_from_epoch": trained.resumed_from_epoch,
    }
    if not decision.accepted:
        result = RetrainResult(outcome=REJECTED, **outcome)
        report(result)
        return Failed(message=decision.reason, data=CandidateRejected(result))

    version = publish(spec, export_dir, base_path)
    promotion = promote(spec, version, base_path, config_file)
    pruned = prune(spec, repo, config_file)
    result = RetrainResult(
        outcome=PUBLISHED,
        version=version,
        version_dir=base_path / str(version),
        promotion=promotion,
        pruned=pruned,
        **outcome,
    )
    report(result)
    return Completed(message=f"version {version} is stable: {decision.reason}", data=result)


def _tag_flow_run(model: str) -> None:
    """Tag the running flow run with the model's name, so that the Prefect UI filters a model's
    runs (its name is known once the spec is read, after the run has started)."""
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.get_id(), tags=sorted({*flow_run.get_tags(), model}))


def _base_path(config: serving_config.Config, repo: Path, model: str) -> Path:
    """Where versions of `model` are published: `<repo>/<model>`, which the model config, where
    it lists the model, must name too (found now rather than after training)."""
    base_path = repo / model
    listed = registry.base_path(repo, config, model)
    if Path(listed).absolute() != base_path:
        raise serving_config.ServingConfigError(
            f"the model config serves {model} from {listed}, not from {base_path}, where this "
            "run would publish it"
        )
    return base_path


def _recorded_evaluation(champion: StableVersion) -> training.Evaluation | None:
    metrics = champion.metadata.get("metrics")
    return training.Evaluation.from_json(metrics) if metrics else None


def _run_dir(runs_dir: Path, spec: Spec) -> Path:
    """The unfinished run of what this spec trains if one left a checkpoint, else a new folder."""
    digest = training_digest(spec)
    model_runs = runs_dir / spec.name
    if model_runs.is_dir():
        for candidate in sorted(model_runs.iterdir(), reverse=True):
            spec_file = candidate / SPEC_FILE
            if (
                (candidate / training.CHECKPOINT_DIR).is_dir()
                and spec_file.is_file()
                and json.loads(spec_file.read_text()).get("digest") == digest
            ):
                return candidate
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = flow_run.get_id() or "local"
    run_dir = model_runs / f"{stamp}-{run_id[:8]}"
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / SPEC_FILE).write_text(
        json.dumps({"digest": digest, "spec": spec.model_dump(mode="json")}, indent=2) + "\n"
    )
    return run_dir


def _checkpointed_epochs(run_dir: Path) -> int:
    """Epochs a killed run finished, from the metadata Keras's BackupAndRestore writes."""
    metadata = run_dir / training.CHECKPOINT_DIR / "training_metadata.json"
    try:
        return int(json.loads(metadata.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0
