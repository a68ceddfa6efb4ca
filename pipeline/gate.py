"""The gate a candidate must pass to be published: the spec's absolute thresholds, then the
champion/challenger comparison with the stable version, both evaluated on the same test split.

The first version of a model (no stable version yet) passes on the absolute thresholds alone.
"""

from dataclasses import asdict, dataclass

from pipeline.spec import GateSpec
from pipeline.training import Evaluation

HIGHER_IS_BETTER = {"accuracy": True, "mae": False, "loss": False}
# Numbers in a reason are shown with this many decimals at least, more where fewer would show
# a candidate and its threshold as equal when they are not.
_DECIMALS = 4
_MOST_DECIMALS = 12


class GateError(ValueError):
    """The gate asks for a comparison this model cannot have (a metric it has no value of)."""


@dataclass(frozen=True)
class Decision:
    """The gate's verdict; `to_json` is what nnserve.json's `decision` and decision.json hold."""

    accepted: bool
    reason: str
    metric: str
    candidate: float
    stable: float | None = None  # the stable version's value of the metric, on the same split
    stable_version: int | None = None
    max_regression: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def metric_of(evaluation: Evaluation, metric: str) -> float | None:
    return {"accuracy": evaluation.accuracy, "mae": evaluation.mae, "loss": evaluation.loss}[metric]


def decide(
    candidate: Evaluation,
    gate: GateSpec,
    stable: Evaluation | None = None,
    stable_version: int | None = None,
) -> Decision:
    """Accept or reject `candidate`, saying why with the numbers compared."""
    metric = gate.metric or ("accuracy" if candidate.accuracy is not None else "mae")
    value = metric_of(candidate, metric)
    if value is None:
        raise GateError(
            f"gate.metric {metric} does not apply to this model: its test metrics are "
            f"{', '.join(sorted(candidate.to_json()))}"
        )
    stable_value = metric_of(stable, metric) if stable is not None else None
    verdict = {
        "metric": metric,
        "candidate": value,
        "stable": stable_value,
        "stable_version": stable_version,
        "max_regression": gate.max_regression,
    }
    failure = _absolute_failure(candidate, gate)
    if failure is not None:
        return Decision(False, failure, **verdict)
    if stable_value is None:
        return Decision(True, f"first version: {_absolute_pass(candidate, gate)}", **verdict)
    if HIGHER_IS_BETTER[metric]:
        threshold, sign = stable_value - gate.max_regression, "-"
        worse = value < threshold
        relation = "<" if worse else ">="
    else:
        threshold, sign = stable_value + gate.max_regression, "+"
        worse = value > threshold
        relation = ">" if worse else "<="
    shown = _shown(value, threshold, stable_value, gate.max_regression)
    tolerance = f" {sign} {shown[3]}" if gate.max_regression else ""
    reason = f"candidate {metric} {shown[0]} {relation} stable {shown[2]}{tolerance}"
    return Decision(not worse, reason, **verdict)


def _absolute_failure(candidate: Evaluation, gate: GateSpec) -> str | None:
    if candidate.accuracy is not None and candidate.accuracy < gate.min_accuracy:
        accuracy = _number(candidate.accuracy)
        return f"candidate accuracy {accuracy} < gate.min_accuracy {gate.min_accuracy}"
    if candidate.mae is not None and gate.max_mae is not None and candidate.mae > gate.max_mae:
        return f"candidate mae {_number(candidate.mae)} > gate.max_mae {gate.max_mae}"
    return None


def _absolute_pass(candidate: Evaluation, gate: GateSpec) -> str:
    if candidate.accuracy is not None:
        return f"accuracy {_number(candidate.accuracy)} >= gate.min_accuracy {gate.min_accuracy}"
    if gate.max_mae is not None:
        return f"mae {_number(candidate.mae)} <= gate.max_mae {gate.max_mae}"
    return f"mae {_number(candidate.mae)}, and the gate sets no max_mae"


def _shown(value: float, threshold: float, *others: float) -> list[str]:
    """`value`, `threshold` and `others` as text, with enough decimals that a candidate that
    differs from its threshold is not shown equal to it."""
    decimals = _DECIMALS
    while (
        decimals < _MOST_DECIMALS
        and value != threshold
        and _number(value, decimals) == _number(threshold, decimals)
    ):
        decimals += 1
    return [_number(number, decimals) for number in (value, threshold, *others)]


def _number(value: float, decimals: int = _DECIMALS) -> str:
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".")
