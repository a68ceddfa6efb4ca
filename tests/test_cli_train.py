"""`nnserve train SPEC [--set KEY=VALUE] [--force]`: dotted keys into the spec, values read as
YAML, clear errors for a malformed `--set` or a key the spec does not have; what it says when
nothing changed, when it publishes and promotes, and when the gate rejects the candidate."""

import json
import re

import pytest
from support import free_port

from service import model_repository, serving_config
from service.cli import main

SPEC = """\
name: tiny-digits
dataset: {name: digits, max_examples: 200}
model: {architecture: simple-cnn, conv_filters: [4], dense_units: 16}
training: {epochs: 5, batch_size: 32}
"""


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "tiny-digits.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def places(fresh_settings, tmp_path, monkeypatch):
    """The model repository and runs folder `nnserve train` reads from its settings, and no
    model server where it promotes."""
    monkeypatch.setenv("NNSERVE_MODEL_REPO", str(tmp_path / "models"))
    monkeypatch.setenv("NNSERVE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("NNSERVE_TFSERVING_ADDR", f"127.0.0.1:{free_port()}")
    return tmp_path


def test_set_overrides_reach_the_trained_model(prefect_api, places, spec_path, capsys):
    status = main(
        [
            "train",
            str(spec_path),
            "--set",
            "training.epochs=1",
            "--set",
            "model.conv_filters=[2, 3]",
            "--set",
            "optimizer.learning_rate=0.01",
            "--set",
            "model.dense_units=8",
            "--set",
            "model.dense_units=4",  # the last --set of a key wins
        ]
    )

    assert status == 0
    assert "trained tiny-digits version 1 in 1 epochs" in capsys.readouterr().out
    metadata = places / "models" / "tiny-digits" / "1" / "assets.extra" / "nnserve.json"
    spec = json.loads(metadata.read_text())["spec"]
    assert (spec["training"]["epochs"], spec["training"]["batch_size"]) == (1, 32)
    assert (spec["model"]["conv_filters"], spec["model"]["dense_units"]) == ([2, 3], 4)
    assert spec["optimizer"]["learning_rate"] == 0.01
    assert spec["dataset"]["max_examples"] == 200  # what no --set touched stays as in the file


MALFORMED = "expected KEY=VALUE with a dotted KEY, such as training.epochs=3; got {!r}"


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("training.epochs", MALFORMED.format("training.epochs")),
        ("=3", MALFORMED.format("=3")),
        ("training..epochs=3", MALFORMED.format("training..epochs=3")),
        (".epochs=3", MALFORMED.format(".epochs=3")),
        ("training.epochs=[1", "training.epochs: '[1' is not a YAML value"),
    ],
    ids=["no-equals", "empty-key", "empty-part", "leading-dot", "bad-yaml"],
)
def test_a_malformed_set_is_a_usage_error(spec_path, capsys, override, problem):
    with pytest.raises(SystemExit) as caught:
        main(["train", str(spec_path), "--set", override])
    assert caught.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "usage: nnserve train [-h] [--set KEY=VALUE] [--force] spec",
        f"nnserve train: error: argument --set: {problem}",
    ]


def test_an_unknown_key_names_the_key_the_file_and_the_set(places, spec_path, capsys):
    status = main(["train", str(spec_path), "--set", "training.epoch=3"])
    assert status == 2
    assert capsys.readouterr().err == (
        f"nnserve train: error: {spec_path}: training.epoch: unknown key (from --set)\n"
    )
    assert not (places / "runs").exists()  # refused before any training started


def test_only_the_problems_of_set_values_are_marked_as_theirs(places, spec_path, capsys):
    spec_path.write_text(SPEC.replace("batch_size: 32", "batch_size: 32, lr: 1"))
    status = main(["train", str(spec_path), "--set", "training.epochs=none"])
    assert status == 2
    problems = capsys.readouterr().err.removeprefix(f"nnserve train: error: {spec_path}: ")
    assert sorted(problems.strip().split("; ")) == [
        "training.epochs: Input should be a valid integer, unable to parse string as an integer"
        " (from --set)",
        "training.lr: unknown key",
    ]


def test_train_skips_what_nothing_changed_retrains_with_force_and_fails_on_rejection(
    prefect_api, places, spec_path, capsys
):
    one_epoch = ["--set", "training.epochs=1"]
    assert main(["train", str(spec_path), *one_epoch]) == 0
    capsys.readouterr()

    assert main(["train", str(spec_path), *one_epoch]) == 0
    assert capsys.readouterr().out == (
        "tiny-digits: no new data since version 1; nothing trained (--force trains anyway)\n"
    )

    # The gate is no part of what is trained: changing it alone is no reason to train.
    tolerant = [*one_epoch, "--set", "gate.max_regression=1"]
    assert main(["train", str(spec_path), *tolerant, "--force"]) == 0
    output = capsys.readouterr().out
    assert "trained tiny-digits version 2 in 1 epochs" in output
    assert re.search(r"\n  gate: +accepted, candidate accuracy \S+ >= stable \S+ - 1\n", output)
    assert "\n  serving: version 2 is stable, previous: 1 (served: 1, 2)\n" in output
    config_file = places / "models" / model_repository.CONFIG_FILE_NAME
    labels = serving_config.labels(serving_config.read(config_file), "tiny-digits")
    assert labels == {"stable": 2, "previous": 1}

    demanding = [*one_epoch, "--set", "gate.min_accuracy=1"]
    assert main(["train", str(spec_path), *demanding, "--force"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after the flow run's log lines
    rejected = re.fullmatch(
        r"nnserve train: error: tiny-digits not published: candidate accuracy \S+ < "
        r"gate\.min_accuracy 1\.0; the candidate, its reports and decision\.json are in (\S+)",
        error,
    )
    assert rejected, error
    assert json.loads((places / rejected[1] / "decision.json").read_text())["accepted"] is False
    assert sorted(model_repository.list_versions(places / "models" / "tiny-digits")) == [1, 2]
