from pathlib import Path

import pytest

from pipeline.spec import SpecError, load_spec, training_digest

SPECS = sorted((Path(__file__).resolve().parents[2] / "pipeline" / "specs").glob("*.yaml"))

MINIMAL = """\
name: m
dataset: {name: digits}
model: {architecture: simple-cnn}
training: {epochs: 1}
"""


@pytest.mark.parametrize("path", SPECS, ids=lambda path: path.stem)
def test_every_shipped_spec_loads_and_is_named_after_its_file(path):
    assert load_spec(path).name == path.stem


def test_defaults_fill_what_a_minimal_spec_leaves_out(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MINIMAL)
    spec = load_spec(path)
    assert (spec.optimizer.name, spec.training.batch_size, spec.dataset.test_fraction) == (
        "adam",
        32,
        0.2,
    )


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (MINIMAL + "trainig: {epochs: 3}\n", ["trainig", "unknown key"]),
        (MINIMAL.replace("{epochs: 1}", "{epochs: 1, lr: 3}"), ["training.lr", "unknown key"]),
        (MINIMAL.replace("{epochs: 1}", "{epochs: many}"), ["training.epochs"]),
        (MINIMAL.replace("digits", "mnist2"), ["dataset.name", "'mnist2'", "'digits'"]),
        (MINIMAL.replace("simple-cnn", "vgg19"), ["model.architecture", "'vgg16'"]),
        (MINIMAL.replace("{name: digits}", "{name: digits, path: x}"), ["dataset.path", "unknown"]),
        (MINIMAL.replace("{name: digits}", "{test_fraction: 0.2}"), ["dataset.name", "required"]),
        (MINIMAL + "optimizer: {name: adam, momentum: 0.9}\n", ["optimizer", "sgd and rmsprop"]),
        (
            MINIMAL + "optimizer: {learning_rate: {initial_rate: 0.1, decay_rate: 0.9}}\n",
            ["optimizer.learning_rate.decay_steps", "required"],
        ),
        (
            MINIMAL.replace("{epochs: 1}", "{epochs: 1, loss: {name: categorical_crossentropy}}"),
            ["labels: one-hot"],
        ),
        (MINIMAL.replace("simple-cnn", "custom"), ["model.function", "required"]),
        (MINIMAL.replace("training: {epochs: 1}\n", ""), ["training", "required"]),
        ("- a\n- b\n", ["expected a mapping"]),
        ("name: [unclosed\n", ["not valid YAML"]),
    ],
    ids=[
        "unknown-top-level-key",
        "unknown-nested-key",
        "wrong-type",
        "unknown-dataset",
        "unknown-architecture",
        "key-of-another-dataset-kind",
        "missing-dataset-name",
        "momentum-for-adam",
        "incomplete-decay",
        "loss-needs-one-hot",
        "custom-without-function",
        "missing-section",
        "not-a-mapping",
        "bad-yaml",
    ],
)
def test_bad_specs_are_errors_naming_the_file_and_the_key(tmp_path, text, names):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    _assert_refused_naming(path, names)


def _assert_refused_naming(path, names) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for name in names:
        assert name in message


def test_a_missing_spec_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.yaml: cannot read spec file"):
        load_spec(tmp_path / "nope.yaml")


def test_overrides_replace_nested_values_and_keep_the_rest(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MINIMAL.replace("{name: digits}", "{name: digits, seed: 5}"))
    spec = load_spec(path, {"dataset": {"max_examples": 50}, "training": {"epochs": 2}})
    assert (spec.dataset.seed, spec.dataset.max_examples, spec.training.epochs) == (5, 50, 2)


def test_overrides_are_validated_like_the_file(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MINIMAL)
    with pytest.raises(SpecError, match=r"training\.epochs"):
        load_spec(path, {"training": {"epochs": 0}})


def test_problems_of_values_the_overrides_gave_say_so(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MINIMAL.replace("{epochs: 1}", "{epochs: 1, lr: 3}"))
    overrides = {"model": {"conv_filters": [8, -1]}, "training": {"epoch": 2}}
    with pytest.raises(SpecError) as caught:
        load_spec(path, overrides, overrides_from="--set")
    assert str(caught.value).split("; ") == [
        f"{path}: model.conv_filters.1: Input should be greater than 0 (from --set)",
        "training.lr: unknown key",
        "training.epoch: unknown key (from --set)",
    ]
    with pytest.raises(
        SpecError, match=r"dataset\.name: unknown 'mnst', .* \(from the overrides\); "
    ):
        load_spec(path, {"dataset": {"name": "mnst"}})


def test_every_training_technique_has_a_place_in_a_spec(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        """\
name: m
dataset: {name: sunspots, window: 8, horizon: 2}
model: {architecture: rnn-stack, cell: gru, units: [8, 4], dropout: 0.1, l1: 0.001, l2: 0.01}
optimizer:
  name: sgd
  momentum: 0.9
  nesterov: true
  learning_rate: {initial_rate: 0.1, decay_rate: 0.96, decay_steps: 100, staircase: true}
training:
  epochs: 3
  loss: {name: asymmetric, over_price: 1, under_price: 3}
  early_stopping: {monitor: val_loss, patience: 2}
  mixed_precision: true
  xla: true
gate: {max_mae: 20}
"""
    )
    spec = load_spec(path)
    assert spec.optimizer.learning_rate.staircase is True
    assert spec.training.loss.under_price == 3
    assert spec.model.cell == "gru" and spec.dataset.horizon == 2


def test_a_missing_data_file_is_an_error_naming_the_spec_and_the_key(tmp_path):
    path = tmp_path / "m.yaml"
    missing = tmp_path / "nowhere.csv"
    path.write_text(
        MINIMAL.replace("{name: digits}", f"{{name: csv-table, path: {missing}, target: y}}")
    )
    with pytest.raises(SpecError, match=rf"^{path}: dataset\.path: Path does not point to a file"):
        load_spec(path)


RETRAINING = MINIMAL + (
    "retraining:\n"
    "  cron: '0 3 * * *'\n"
    "  timezone: Europe/Berlin\n"
    "  keep_versions: 3\n"
    "  parameters: {overrides: {training: {epochs: 2}}, force: true}\n"
)


def test_a_retraining_section_gives_schedule_parameters_and_versions_kept(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(RETRAINING)
    retraining = load_spec(path).retraining
    assert (retraining.cron, retraining.timezone, retraining.keep_versions) == (
        "0 3 * * *",
        "Europe/Berlin",
        3,
    )
    assert retraining.parameters.overrides == {"training": {"epochs": 2}}
    assert retraining.parameters.force is True
    assert retraining.parameters.dataset_source is None


def test_without_a_retraining_section_five_versions_are_kept(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MINIMAL)
    spec = load_spec(path)
    assert spec.retraining is None
    assert spec.keep_versions == 5


def test_what_the_spec_accepts_as_a_schedule_prefect_accepts(tmp_path):
    """The schedule package builds Prefect CronSchedules from these keys: they must not fail."""
    from prefect.client.schemas.schedules import CronSchedule

    path = tmp_path / "m.yaml"
    path.write_text(RETRAINING.replace("'0 3 * * *'", "'30 2 * * 1-5'"))
    retraining = load_spec(path).retraining
    schedule = CronSchedule(cron=retraining.cron, timezone=retraining.timezone)
    assert (schedule.cron, schedule.timezone) == ("30 2 * * 1-5", "Europe/Berlin")


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (("'0 3 * * *'", "'0 3 * *'"), ["retraining.cron", 'Invalid cron string: "0 3 * *"']),
        (("'0 3 * * *'", "'61 3 * * *'"), ["retraining.cron", "Invalid cron string"]),
        (("'0 3 * * *'", "'H 3 * * *'"), ["retraining.cron", "Invalid cron string"]),
        (
            ("Europe/Berlin", "Europe/Berlinn"),
            ["retraining.timezone", "unknown time zone 'Europe/Berlinn'"],
        ),
        (("Europe/Berlin", "CEST"), ["retraining.timezone", "unknown time zone 'CEST'"]),
        (("keep_versions: 3", "keep_versions: 0"), ["retraining.keep_versions", "greater than 0"]),
        (("force: true", "forced: true"), ["retraining.parameters.forced", "unknown key"]),
        (("keep_versions: 3", "keep: 3"), ["retraining.keep", "unknown key"]),
        (
            ("{epochs: 2}", "{epochs: 0}"),
            ["training.epochs", "(from retraining.parameters.overrides)"],
        ),
        (
            ("force: true", "dataset_source: /data"),
            ["retraining.parameters.dataset_source", "'digits' has no source or path"],
        ),
    ],
    ids=[
        "four-fields",
        "minute-61",
        "hashed",
        "unknown-zone",
        "abbreviation",
        "keep-none",
        "unknown-parameter",
        "unknown-key",
        "bad-scheduled-override",
        "source-of-a-packaged-dataset",
    ],
)
def test_a_bad_retraining_section_is_an_error_naming_the_key(tmp_path, change, names):
    path = tmp_path / "m.yaml"
    text = RETRAINING.replace(*change)
    assert text != RETRAINING
    path.write_text(text)
    _assert_refused_naming(path, names)


def test_a_dataset_source_replaces_the_path_or_source_the_dataset_is_read_from(tmp_path):
    table = tmp_path / "now.csv"
    table.write_text("x,y\n1,0\n")
    path = tmp_path / "m.yaml"
    old = f"{{name: csv-table, path: {tmp_path / 'old.csv'}, target: y}}"
    path.write_text(MINIMAL.replace("{name: digits}", old))
    assert load_spec(path, dataset_source=str(table)).dataset.path == table

    path.write_text(MINIMAL.replace("{name: digits}", "{name: mnist}"))
    spec = load_spec(path, dataset_source="http://127.0.0.1:1/mirror/")
    assert spec.dataset.source == "http://127.0.0.1:1/mirror/"


def test_a_bad_dataset_source_is_an_error_naming_it(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        MINIMAL.replace("{name: digits}", f"{{name: csv-table, path: {path}, target: y}}")
    )
    with pytest.raises(SpecError) as caught:
        load_spec(path, dataset_source=str(tmp_path / "missing.csv"))
    assert str(caught.value) == (
        f"{path}: dataset.path: Path does not point to a file (from dataset_source)"
    )
    path.write_text(MINIMAL)
    with pytest.raises(SpecError, match=r": dataset_source: dataset 'digits' has no source"):
        load_spec(path, dataset_source="/data")


def test_the_training_digest_ignores_the_gate_the_schedule_and_the_data_checks(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MINIMAL)
    plain = load_spec(path)
    path.write_text(
        RETRAINING.replace("dataset: {name: digits}", "dataset: {name: digits, checks: error}")
        + "gate: {min_accuracy: 0.5, max_regression: 0.01}\n"
    )
    judged = load_spec(path)
    assert judged.dataset.checks != plain.dataset.checks
    assert training_digest(plain) == training_digest(judged)
    path.write_text(MINIMAL.replace("{epochs: 1}", "{epochs: 2}"))
    assert training_digest(load_spec(path)) != training_digest(plain)


CRON_EXAMPLES = [
    "0 3 * * *",
    "30 2 * * 1-5",
    "*/15 * * * *",
    "0 0 1 jan *",
    "@daily",
    "0 3 * *",
    "61 3 * * *",
    "H 3 * * *",
    "R 3 * * *",
    "0 3 * * 8",
    "0 0 L * *",
    "not cron",
]


@pytest.mark.parametrize("cron", CRON_EXAMPLES)
def test_the_cron_check_says_what_prefects_cron_schedule_says(cron):
    """pipeline/cron.py checks without importing Prefect; Prefect's CronSchedule is the judge."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    from pipeline.cron import cron_problem

    try:
        CronSchedule(cron=cron)
    except ValidationError as error:
        assert cron_problem(cron) == error.errors()[0]["msg"].removeprefix("Value error, ")
    else:
        assert cron_problem(cron) is None
