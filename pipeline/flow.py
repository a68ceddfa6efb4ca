"""The training flow: load -> preprocess -> train -> evaluate -> export -> publish."""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from pipeline import export, training
from pipeline.datasets import Dataset, load_dataset
from pipeline.models import build_model
from pipeline.preprocess import Splits, split_dataset
from pipeline.spec import Spec, load_spec
from service import model_repository
from service.settings import get_settings


@dataclass(frozen=True)
class TrainingResult:
    model_name: str
    version: int
    version_dir: Path
    run_dir: Path
    evaluation: training.Evaluation


# Arrays and Keras models pass between tasks in memory; hashing them for a cache key is waste.
@task(cache_policy=NO_CACHE)
def load(spec: Spec) -> Dataset:
    return load_dataset(spec.dataset)


@task(cache_policy=NO_CACHE)
def preprocess(spec: Spec, dataset: Dataset) -> Splits:
    return split_dataset(dataset, spec.dataset)


@task(cache_policy=NO_CACHE)
def train(spec: Spec, dataset: Dataset, splits: Splits, run_dir: Path) -> keras.Model:
    keras.utils.set_random_seed(spec.training.seed)
    model = build_model(spec.model, dataset.input_spec, num_classes=len(dataset.labels))
    training.fit(model, splits, spec.optimizer, spec.training, run_dir)
    model.save(run_dir / "model.keras")
    return model


@task(cache_policy=NO_CACHE)
def evaluate(spec: Spec, model: keras.Model, splits: Splits) -> training.Evaluation:
    evaluation = training.evaluate(model, splits.test)
    get_run_logger().info(
        "test accuracy %.4f, test loss %.4f", evaluation.accuracy, evaluation.loss
    )
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
        "labels": dataset.labels,
        "metrics": evaluation.to_json(),
        "dataset_fingerprint": dataset.fingerprint(),
        "spec": spec.model_dump(mode="json"),
        "flow_run_id": flow_run.get_id(),
    }
    return export.export_classifier(
        model, dataset.input_spec, run_dir / "export", metadata, example=splits.test.features[0]
    )


@task(cache_policy=NO_CACHE)
def publish(spec: Spec, export_dir: Path, model_repo: Path) -> int:
    version = model_repository.publish(export_dir, model_repo / spec.name)
    get_run_logger().info("published %s version %d", spec.name, version)
    return version


@flow(name="train-model", log_prints=True)
def train_model(
    spec_path: str, model_repo: str | None = None, runs_dir: str | None = None
) -> TrainingResult:
    """Train the model a spec describes; publish it as the next version if it passes the gate."""
    settings = get_settings()
    spec = load_spec(spec_path)
    repo = Path(model_repo) if model_repo else settings.model_repo
    run_dir = _new_run_dir(Path(runs_dir) if runs_dir else settings.runs_dir, spec.name)

    dataset = load(spec)
    splits = preprocess(spec, dataset)
    model = train(spec, dataset, splits, run_dir)
    evaluation = evaluate(spec, model, splits)
    export_dir = export_model(spec, model, dataset, splits, evaluation, run_dir)
    version = publish(spec, export_dir, repo)
    return TrainingResult(spec.name, version, repo / spec.name / str(version), run_dir, evaluation)


def _new_run_dir(runs_dir: Path, model_name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = flow_run.get_id() or "local"
    run_dir = runs_dir / model_name / f"{stamp}-{run_id[:8]}"
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir
