"""The training flow: load -> preprocess -> train -> evaluate -> export -> publish."""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from pipeline import export, reports, training
from pipeline.datasets import Dataset, load_dataset
from pipeline.devices import placed, plan_devices
from pipeline.models import Head, build_model, repeatable_default_seeds
from pipeline.preprocess import Splits, split_dataset
from pipeline.spec import Spec, load_spec
from service import model_repository
from service.settings import get_settings

SPEC_FILE = "spec.json"
KERAS_MODEL_FILE = "model.keras"


@dataclass(frozen=True)
class TrainingResult:
    model_name: str
    version: int
    version_dir: Path
    run_dir: Path
    evaluation: training.Evaluation
    epochs_trained: int
    resumed_from_epoch: int  # 0 for a fresh run


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


# Arrays and Keras models pass between tasks in memory; hashing them for a cache key is waste.
@task(cache_policy=NO_CACHE)
def load(spec: Spec) -> Dataset:
    return load_dataset(spec.dataset, get_run_logger())


@task(cache_policy=NO_CACHE)
def preprocess(spec: Spec, dataset: Dataset) -> Splits:
    return split_dataset(dataset, spec.dataset, get_run_logger())


@task(cache_policy=NO_CACHE)
def train(spec: Spec, dataset: Dataset, splits: Splits, run_dir: Path, progress: bool) -> Trained:
    logger = get_run_logger()
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
            model, splits, spec.training, spec.preprocessing, head, run_dir, progress
        )
    model.save(run_dir / KERAS_MODEL_FILE)
    reports.write_model_summary(model, run_dir / reports.SUMMARY_FILE)
    reports.dump_weights(model, run_dir / reports.WEIGHTS_FILE)
    reports.plot_curves(run_dir / training.HISTORY_FILE, run_dir / reports.CURVES_FILE)
    return Trained(model, resumed_from + len(history.epoch), resumed_from)


@task(cache_policy=NO_CACHE)
def evaluate(
    spec: Spec, model: keras.Model, dataset: Dataset, splits: Splits, run_dir: Path
) -> training.Evaluation:
    head = head_of(spec, dataset)
    evaluation = training.evaluate(
        model, splits.test, head, training.loss_spec(spec.training, head)
    )
    if head.is_classifier:
        predicted = training.predict(model, splits.test.features, head).argmax(axis=-1)
        reports.classification_report(splits.test.targets, predicted, dataset.labels, run_dir)
    get_run_logger().info(evaluation.describe())
    training.check_gate(evaluation, spec.gate)
    return evaluation


@task(cache_policy=NO_CACHE)
def export_model(
    spec: Spec,
    model: keras.Model,
    dataset: Dataset,
    splits: Splits,
    evaluation: training.Evaluation,
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
    }
    return export.export_model(
        model,
        dataset.input_spec,
        head_of(spec, dataset),
        run_dir / "export",
        metadata,
        held_out=splits.test.features,
    )


@task(cache_policy=NO_CACHE)
def publish(spec: Spec, export_dir: Path, model_repo: Path) -> int:
    version = model_repository.publish(export_dir, model_repo / spec.name)
    get_run_logger().info("published %s version %d", spec.name, version)
    return version


@flow(name="train-model", log_prints=True)
def train_model(
    spec_path: str,
    model_repo: str | None = None,
    runs_dir: str | None = None,
    overrides: dict | None = None,
    progress: bool = False,
) -> TrainingResult:
    """Train the model a spec describes; publish it as the next version if it passes the gate.

    `overrides` replace values of the spec file (nested keys, as in the YAML). A run of the same
    spec that was killed before it finished is resumed from its last checkpoint.
    `progress` draws a bar per epoch, filling as batches finish, instead of Keras's log lines.
    """
    settings = get_settings()
    spec = load_spec(spec_path, overrides)
    repo = Path(model_repo) if model_repo else settings.model_repo
    run_dir = _run_dir(Path(runs_dir) if runs_dir else settings.runs_dir, spec)

    dataset = load(spec)
    splits = preprocess(spec, dataset)
    trained = train(spec, dataset, splits, run_dir, progress)
    evaluation = evaluate(spec, trained.model, dataset, splits, run_dir)
    export_dir = export_model(spec, trained.model, dataset, splits, evaluation, run_dir)
    version = publish(spec, export_dir, repo)
    return TrainingResult(
        spec.name,
        version,
        repo / spec.name / str(version),
        run_dir,
        evaluation,
        trained.epochs_trained,
        trained.resumed_from_epoch,
    )


def _run_dir(runs_dir: Path, spec: Spec) -> Path:
    """The unfinished run of this very spec if one left a checkpoint, else a new folder."""
    document = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    digest = hashlib.sha256(document.encode()).hexdigest()
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
        json.dumps({"digest": digest, "spec": json.loads(document)}, indent=2) + "\n"
    )
    return run_dir


def _checkpointed_epochs(run_dir: Path) -> int:
    """Epochs a killed run finished, from the metadata Keras's BackupAndRestore writes."""
    metadata = run_dir / training.CHECKPOINT_DIR / "training_metadata.json"
    try:
        return int(json.loads(metadata.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0
