"""The gate: absolute thresholds first, then the candidate against the stable version, the
direction of the comparison taken from the metric, and reasons that give both numbers."""

import pytest

from pipeline.gate import Decision, GateError, decide
from pipeline.spec import GateSpec
from pipeline.training import Evaluation


def classifier(accuracy: float, loss: float = 0.1) -> Evaluation:
    return Evaluation(loss=loss, accuracy=accuracy)


def regressor(mae: float, loss: float = 1.0) -> Evaluation:
    return Evaluation(loss=loss, mae=mae)


def test_a_worse_candidate_is_rejected_with_both_numbers_and_the_tolerance():
    decision = decide(
        classifier(0.962), GateSpec(max_regression=0.005), classifier(0.989), stable_version=3
    )
    assert decision == Decision(
        accepted=False,
        reason="candidate accuracy 0.962 < stable 0.989 - 0.005",
        metric="accuracy",
        candidate=0.962,
        stable=0.989,
        stable_version=3,
        max_regression=0.005,
    )


def test_a_candidate_within_the_tolerance_is_accepted():
    decision = decide(classifier(0.985), GateSpec(max_regression=0.005), classifier(0.989), 3)
    assert decision.accepted
    assert decision.reason == "candidate accuracy 0.985 >= stable 0.989 - 0.005"


def test_without_a_tolerance_an_equal_candidate_passes_and_a_lower_one_fails():
    assert decide(classifier(0.9), GateSpec(), classifier(0.9), 1).reason == (
        "candidate accuracy 0.9 >= stable 0.9"
    )
    rejected = decide(classifier(0.8999), GateSpec(), classifier(0.9), 1)
    assert (rejected.accepted, rejected.reason) == (False, "candidate accuracy 0.8999 < stable 0.9")


def test_lower_is_better_for_mae_and_loss():
    worse = decide(regressor(3.2), GateSpec(max_regression=0.1), regressor(2.9), 2)
    assert (worse.accepted, worse.reason) == (False, "candidate mae 3.2 > stable 2.9 + 0.1")
    better = decide(regressor(2.5), GateSpec(), regressor(2.9), 2)
    assert (better.accepted, better.reason) == (True, "candidate mae 2.5 <= stable 2.9")
    by_loss = decide(classifier(0.99, loss=0.3), GateSpec(metric="loss"), classifier(0.9, 0.2), 2)
    assert (by_loss.accepted, by_loss.reason) == (False, "candidate loss 0.3 > stable 0.2")


def test_the_absolute_thresholds_come_first():
    decision = decide(classifier(0.95), GateSpec(min_accuracy=0.97), classifier(0.5), 1)
    assert (decision.accepted, decision.reason) == (
        False,
        "candidate accuracy 0.95 < gate.min_accuracy 0.97",
    )
    decision = decide(regressor(5.0), GateSpec(max_mae=4.0), regressor(9.0), 1)
    assert (decision.accepted, decision.reason) == (False, "candidate mae 5 > gate.max_mae 4.0")


def test_the_first_version_passes_on_the_absolute_thresholds_alone():
    first = decide(classifier(0.5), GateSpec(min_accuracy=0.4, max_regression=0.0))
    assert first.accepted
    assert first.reason == "first version: accuracy 0.5 >= gate.min_accuracy 0.4"
    assert (first.stable, first.stable_version) == (None, None)
    assert decide(regressor(7.0), GateSpec()).reason == (
        "first version: mae 7, and the gate sets no max_mae"
    )
    assert not decide(classifier(0.3), GateSpec(min_accuracy=0.4)).accepted


def test_numbers_that_differ_are_never_shown_equal():
    decision = decide(classifier(0.98389), GateSpec(max_regression=0.005), classifier(0.9889), 1)
    assert decision.reason == "candidate accuracy 0.98389 < stable 0.9889 - 0.005"


def test_a_metric_the_model_has_no_value_of_is_an_error():
    with pytest.raises(GateError, match=r"gate\.metric mae does not apply .* test_accuracy"):
        decide(classifier(0.9), GateSpec(metric="mae"), classifier(0.9), 1)
