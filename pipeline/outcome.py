"""What a retraining run did, and how it shows in Prefect: each epoch's metrics in the run's log
and a progress artifact while it trains; then a markdown report of the run, a table of the
metrics compared, the learning curves as a table of every epoch's metrics and a classifier's
confusion matrix, artifacts of the flow run under keys named after the model, so that the
Prefect UI lists each model's history."""

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from pipeline import reports, training
from pipeline.gate import Decision
from pipeline.training import Evaluation
from service.serving_config import PREVIOUS, STABLE, Promotion

PUBLISHED = "published"
REJECTED = "rejected"
SKIPPED = "skipped"
DECISION_FILE = "decision.json"
_METRICS = ("accuracy", "mae", "loss")


@dataclass(frozen=True)
class RetrainResult:
    model_name: str
    outcome: str  # PUBLISHED, REJECTED or SKIPPED
    message: str  # the gate's reason, or why nothing was trained
    evaluation: Evaluation | None = None  # the candidate's; None when nothing was trained
    stable_version: int | None = None
    # The stable version's on the candidate's test split; when skipped, from its nnserve.json.
    stable_evaluation: Evaluation | None = None
    decision: Decision | None = None
    version: int | None = None  # the version published
    version_dir: Path | None = None
    promotion: Promotion | None = None
    pruned: tuple[int, ...] = ()
    run_dir: Path | None = None  # reports, and the export (kept there when rejected)
    export_dir: Path | None = None
    epochs_trained: int = 0
    resumed_from_epoch: int = 0  # 0 for a fresh run


class CandidateRejected(RuntimeError):
    """The gate rejected the candidate: nothing was published. Carries the run's result."""

    def __init__(self, result: RetrainResult) -> None:
        super().__init__(result.message)
        self.result = result


class EpochsInPrefect(keras.callbacks.Callback):
    """Each finished epoch's metrics as a line of the run's log, and the share of epochs done
    as a progress artifact (`<model>-training`), both in the Prefect UI while training runs."""

    def __init__(self, model_name: str, log: logging.Logger | logging.LoggerAdapter) -> None:
        super().__init__()
        self.model_name = model_name
        self.log = log

    def on_train_begin(self, logs=None) -> None:
        self.progress = create_progress_artifact(
            0.0,
            key=f"{self.model_name}-training",
            description=f"epochs of {self.model_name} trained, in percent",
        )

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        epochs = self.params["epochs"]
        metrics = ", ".join(f"{name} {value:.4f}" for name, value in (logs or {}).items())
        self.log.info("epoch %d/%d: %s", epoch + 1, epochs, metrics)
        update_progress_artifact(self.progress, 100.0 * (epoch + 1) / epochs)


def publish_artifacts(result: RetrainResult) -> None:
    """The run's report, metrics table, learning curves and confusion matrix, as artifacts of
    the current flow run (the last two when the run trained, and wrote them)."""
    create_markdown_artifact(
        report(result),
        key=f"{result.model_name}-report",
        description=f"retraining of {result.model_name}: {result.outcome}",
    )
    create_table_artifact(
        metrics_table(result),
        key=f"{result.model_name}-metrics",
        description=f"test metrics of {result.model_name}: candidate and stable version",
    )
    if result.run_dir is None:
        return
    history = result.run_dir / training.HISTORY_FILE
    if history.is_file():
        create_table_artifact(
            _read_csv(history),
            key=f"{result.model_name}-learning-curves",
            description=f"learning curves of {result.model_name}: each epoch's training and "
            "validation metrics",
        )
    confusion = result.run_dir / reports.CONFUSION_TABLE_FILE
    if confusion.is_file():
        create_markdown_artifact(
            confusion_markdown(result.model_name, confusion),
            key=f"{result.model_name}-confusion-matrix",
            description=f"confusion matrix of {result.model_name} on the test split",
        )


def confusion_markdown(model_name: str, table_file: Path) -> str:
    """The confusion matrix CSV as a markdown table: a row per true class, a column per
    predicted one, the correct answers on the diagonal in bold."""
    with table_file.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    lines = [
        f"# {model_name}: confusion matrix (test split)",
        "",
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
    ]
    for index, (label, *counts) in enumerate(rows):
        cells = [f"**{n}**" if column == index else n for column, n in enumerate(counts)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def metrics_table(result: RetrainResult) -> list[dict]:
    """One row per model evaluated: the candidate and the stable version."""
    rows = []
    if result.evaluation is not None:
        rows.append(_row(result, "candidate", result.version, result.evaluation))
    if result.stable_evaluation is not None:
        rows.append(_row(result, "stable", result.stable_version, result.stable_evaluation))
    return rows


def _row(result: RetrainResult, role: str, version: int | None, evaluation: Evaluation) -> dict:
    return {
        "model": result.model_name,
        "role": role,
        "version": "" if version is None else str(version),
        **{metric: _value(evaluation, metric) for metric in _METRICS},
        "outcome": result.outcome,
    }


def report(result: RetrainResult) -> str:
    headline = {
        PUBLISHED: f"version {result.version} published and stable",
        REJECTED: "candidate rejected, nothing published",
        SKIPPED: "nothing new to train on",
    }[result.outcome]
    lines = [f"# {result.model_name}: {headline}", "", f"**{result.outcome}**: {result.message}"]
    lines += ["", *_metrics_side_by_side(result)]
    if result.promotion is not None:
        lines += ["", *_labels(result.promotion)]
    if result.pruned:
        lines += ["", f"Pruned versions {_listed(result.pruned)} (beyond keep_versions)."]
    if result.outcome == REJECTED:
        lines += [
            "",
            f"The candidate's export, reports and `{DECISION_FILE}` are kept in its run folder.",
        ]
    if result.run_dir is not None:
        lines += ["", "| report | path |", "| --- | --- |"]
        for name, path in _report_files(result):
            lines.append(f"| {name} | `{path}` |")
    return "\n".join(lines) + "\n"


def _metrics_side_by_side(result: RetrainResult) -> list[str]:
    columns = []
    if result.evaluation is not None:
        columns.append(("candidate", result.evaluation))
    if result.stable_evaluation is not None:
        columns.append((f"stable (version {result.stable_version})", result.stable_evaluation))
    if not columns:
        return []
    metrics = [m for m in _METRICS if any(_value(e, m) != "" for _, e in columns)]
    lines = [
        "| test metric | " + " | ".join(name for name, _ in columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for metric in metrics:
        lines.append(f"| {metric} | " + " | ".join(_value(e, metric) for _, e in columns) + " |")
    return lines


def _labels(promotion: Promotion) -> list[str]:
    labels = [f"`{STABLE}` = {promotion.version}"]
    if promotion.previous is not None:
        labels.append(f"`{PREVIOUS}` = {promotion.previous}")
    how = (
        "the model server had it AVAILABLE before the label moved"
        if promotion.confirmed_available
        else "no model server answered: the model config was written in one step"
    )
    return [f"Labels: {', '.join(labels)}; served versions: {_listed(promotion.served)} ({how})."]


def _report_files(result: RetrainResult) -> list[tuple[str, Path]]:
    files = [
        ("learning curves", result.run_dir / reports.CURVES_FILE),
        ("confusion matrix", result.run_dir / reports.CONFUSION_FILE),
        ("per-class precision and recall", result.run_dir / reports.PER_CLASS_FILE),
        ("decision", result.run_dir / DECISION_FILE),
    ]
    present = [(name, path) for name, path in files if path.is_file()]
    if result.version_dir is not None:
        present.append(("published version", result.version_dir))
    elif result.export_dir is not None:
        present.append(("export (not published)", result.export_dir))
    return [*present, ("run folder", result.run_dir)]


def _value(evaluation: Evaluation, metric: str) -> str:
    value = getattr(evaluation, metric)
    return "" if value is None else f"{value:.4f}"


def _listed(versions: tuple[int, ...]) -> str:
    return ", ".join(str(version) for version in versions)
