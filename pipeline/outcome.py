"""What a retraining run did, and how it shows in Prefect: a markdown report of the run and a
table of the metrics compared, artifacts of the flow run under keys named after the model, so
that the Prefect UI lists each model's history."""

from dataclasses import dataclass
from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipeline import reports
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


def publish_artifacts(result: RetrainResult) -> None:
    """The run's report and metrics table, as artifacts of the current flow run."""
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
