from pathlib import Path

import pytest

from pipeline.spec import SpecError, load_spec

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
        (MINIMAL.replace("digits", "mnist"), ["dataset.name", "digits"]),
        (MINIMAL.replace("training: {epochs: 1}\n", ""), ["training", "required"]),
        ("- a\n- b\n", ["expected a mapping"]),
        ("name: [unclosed\n", ["not valid YAML"]),
    ],
    ids=[
        "unknown-top-level-key",
        "unknown-nested-key",
        "wrong-type",
        "unknown-dataset",
        "missing-section",
        "not-a-mapping",
        "bad-yaml",
    ],
)
def test_bad_specs_are_errors_naming_the_file_and_the_key(tmp_path, text, names):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for name in names:
        assert name in message


def test_a_missing_spec_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.yaml: cannot read spec file"):
        load_spec(tmp_path / "nope.yaml")
