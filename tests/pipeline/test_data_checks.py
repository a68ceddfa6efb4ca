"""Data sanity before training: rare classes, labels of mixed kinds, image files of mixed sizes
or modes and examples in two splits are reported (or refused, as the spec says), naming the file,
line or class; the dataset's summary is logged first."""

import logging
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline import data_checks
from pipeline.datasets import DatasetError, load_dataset
from pipeline.spec import (
    CsvTableDataset,
    DatasetChecks,
    ImageFolderDataset,
    ImageListDataset,
    SpecError,
    load_spec,
)

DIGITS = [str(digit) for digit in range(4)]
ALL_ERRORS = DatasetChecks.model_validate("error")
PER_CLASS = 12


def save(path, value: int, size=(4, 4), mode="L") -> None:
    pixels = np.full((size[1], size[0], 3 if mode == "RGB" else 1), value, np.uint8)
    Image.fromarray(pixels.squeeze()).convert(mode).save(path)


@pytest.fixture
def handwritten(tmp_path):
    """An image-list dataset of four digit classes, 12 distinct images each, and one line
    `48.png five`: the mistake that once became an eleventh class with one example."""
    lines = []
    for i in range(4 * PER_CLASS):
        save(tmp_path / f"{i}.png", i * 5)
        lines.append(f"{i}.png {DIGITS[i % 4]}")
    save(tmp_path / "48.png", 250)
    lines.append("48.png five")
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def image_list(folder, **settings) -> ImageListDataset:
    return ImageListDataset(
        name="image-list",
        path=folder,
        labels_file=folder / "labels.txt",
        image_size=(4, 4),
        channels=1,
        **settings,
    )


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_word_among_digits_is_reported_with_its_line_and_the_summary_comes_first(
    handwritten, caplog
):
    with caplog.at_level(logging.INFO, logger="pipeline"):
        dataset = load_dataset(image_list(handwritten))
    assert dataset.labels == [*DIGITS, "five"]  # a warning: training goes on with it
    summary = caplog.records[0]
    assert summary.levelno == logging.INFO
    assert summary.getMessage() == (
        "dataset image-list: 49 examples; 5 classes: 0 (12), 1 (12), 2 (12), 3 (12), five (1); "
        "input image 4x4x1 float32, values 0..255; image files (width x height, mode): 49 4x4 L"
    )
    line = f"{handwritten / 'labels.txt'}:49: 48.png five"
    rare, mixed = warnings(caplog)
    assert rare.startswith(f"class 'five' has 1 example ({line}) where the median class has 12")
    assert "dataset.checks.rare_class" in rare
    assert mixed.startswith(
        f"labels mix numbers and words: class 'five' ({line}) is a word where 4 classes are "
        "numbers ('0', '1', '2', and 1 more)"
    )


def test_checks_set_to_error_stop_with_a_dataset_error_naming_the_line(handwritten):
    with pytest.raises(DatasetError) as raised:
        load_dataset(image_list(handwritten, checks={"mixed_labels": "error"}))
    message = str(raised.value)
    assert f"class 'five' ({handwritten / 'labels.txt'}:49: 48.png five) is a word" in message
    assert "rare" not in message and "median" not in message  # rare_class still only warns
    with pytest.raises(DatasetError, match="class 'five' has 1 example"):
        load_dataset(image_list(handwritten, checks="error"))


def test_checks_set_off_are_not_looked_for(handwritten, caplog):
    with caplog.at_level(logging.INFO, logger="pipeline"):
        load_dataset(image_list(handwritten, checks="off"))
    assert warnings(caplog) == []


def test_a_clean_dataset_has_no_findings(handwritten, caplog):
    (handwritten / "labels.txt").write_text(
        "".join(f"{i}.png {DIGITS[i % 4]}\n" for i in range(4 * PER_CLASS))
    )
    with caplog.at_level(logging.INFO, logger="pipeline"):
        load_dataset(image_list(handwritten, checks="error"))
    assert warnings(caplog) == []


def test_a_subset_names_the_lines_its_examples_came_from(handwritten):
    dataset = load_dataset(image_list(handwritten, max_examples=30, checks="off"))
    assert len(dataset.sources) == 30
    for source, target in zip(dataset.sources, dataset.targets, strict=True):
        assert source.rsplit(maxsplit=1)[1] == dataset.labels[target], source


def test_image_files_of_mixed_sizes_and_modes_are_named(tmp_path, caplog):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(5):
            save(tmp_path / name / f"{i}.png", 10 * i + (name == "dog"), size=(6, 4))
    save(tmp_path / "dog" / "big.png", 3, size=(64, 48))
    save(tmp_path / "cat" / "colour.png", 7, size=(6, 4), mode="RGB")
    spec = ImageFolderDataset(name="image-folder", path=tmp_path, image_size=(4, 6), channels=1)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        load_dataset(spec)
    sizes, modes = warnings(caplog)
    assert sizes.startswith(
        f"images of mixed sizes: 11 are 6x4, but 1 64x48 ({tmp_path / 'dog' / 'big.png'})"
    )
    assert modes.startswith(
        f"images of mixed modes: 11 are L, but 1 RGB ({tmp_path / 'cat' / 'colour.png'})"
    )
    with pytest.raises(DatasetError, match=r"big\.png"):
        load_dataset(spec.model_copy(update={"checks": DatasetChecks(mixed_images="error")}))


def test_class_folders_without_images_are_a_dataset_error(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text("no image here")
    spec = ImageFolderDataset(name="image-folder", path=tmp_path, image_size=(4, 4))
    with pytest.raises(DatasetError, match=r"no image files; expected some ending in \.bmp"):
        load_dataset(spec)


def test_csv_labels_of_mixed_kinds_name_the_row(tmp_path):
    rows = [f"{i},{i % 3}" for i in range(30)] + ["30,two"]
    (tmp_path / "table.csv").write_text("x,label\n" + "\n".join(rows) + "\n")
    spec = CsvTableDataset(
        name="csv-table", path=tmp_path / "table.csv", target="label", checks="error"
    )
    with pytest.raises(DatasetError, match=r"class 'two' \(\S+table.csv row 31\) is a word"):
        load_dataset(spec)


def test_examples_in_two_splits_are_named(handwritten, caplog):
    from pipeline.preprocess import split_dataset

    # Every image of class 0 copied once more, as a second file under the same label.
    lines = (handwritten / "labels.txt").read_text().splitlines()[: 4 * PER_CLASS]
    for i in range(0, 4 * PER_CLASS, 4):
        shutil.copy(handwritten / f"{i}.png", handwritten / f"copy-{i}.png")
        lines.append(f"copy-{i}.png 0")
    (handwritten / "labels.txt").write_text("\n".join(lines) + "\n")
    spec = image_list(handwritten)
    dataset = load_dataset(spec)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        split_dataset(dataset, spec)
    (found,) = warnings(caplog)
    assert "found in more than one split (" in found
    assert "dataset.checks.split_duplicates" in found
    # Each pair is named by its two lines, the original and its copy.
    first = found.split("): ", 1)[1].split(";")[0]
    original, copy = first.split(" = ")
    assert original.endswith(".png 0") and copy.endswith(".png 0")
    assert original.split(": ")[1].split()[0] == copy.split(": ")[1].split()[0].removeprefix(
        "copy-"
    )
    with pytest.raises(DatasetError, match="found in more than one split"):
        split_dataset(dataset, spec.model_copy(update={"checks": ALL_ERRORS}))


def test_the_checks_as_plain_functions():
    targets = np.array([0] * 20 + [1] * 20 + [2])
    assert [f.check for f in data_checks.rare_classes(targets, ["a", "b", "c"])] == ["rare_class"]
    assert data_checks.rare_classes(np.array([0] * 20 + [1] * 3), ["a", "b"]) == []
    assert data_checks.mixed_labels(targets, ["1", "2", "3.5"]) == []
    assert data_checks.mixed_labels(targets, ["cat", "dog", "bird"]) == []
    (mixed,) = data_checks.mixed_labels(targets, ["1", "2", "x"])
    assert "class 'x' is a word where 2 classes are numbers ('1', '2')" in mixed.message
    same = np.zeros((3, 2), np.float32)
    assert data_checks.split_duplicates(same, {"training": same[:2], "test": same[2:]}) != []
    distinct = np.arange(6, dtype=np.float32).reshape(3, 2)
    splits = {"training": distinct[:2], "test": distinct[2:]}
    assert data_checks.split_duplicates(distinct, splits) == []
    texts = np.array(["a b", "c", "a b"], dtype=object)
    (found,) = data_checks.split_duplicates(texts, {"training": texts[:2], "test": texts[2:]})
    assert "example 0 = example 2" in found.message


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ("error", ALL_ERRORS),
        ({"rare_class": "off"}, DatasetChecks(rare_class="off")),
    ],
)
def test_spec_checks_are_one_level_or_a_mapping(tmp_path, checks, expected):
    assert load_spec(spec_with_checks(tmp_path, checks)).dataset.checks == expected


@pytest.mark.parametrize(
    ("checks", "problem"),
    [
        ("strict", "dataset.checks: Value error, expected one of ['warn', 'error', 'off']"),
        ({"rare_class": "loud"}, "dataset.checks.rare_class: Input should be 'warn'"),
        ({"typo_check": "error"}, "dataset.checks.typo_check: unknown key"),
    ],
)
def test_spec_checks_are_validated(tmp_path, checks, problem):
    with pytest.raises(SpecError) as raised:
        load_spec(spec_with_checks(tmp_path, checks))
    assert problem in str(raised.value)


def spec_with_checks(folder, checks):
    document = {
        "name": "x",
        "dataset": {"name": "digits", "checks": checks},
        "model": {"architecture": "mlp"},
        "training": {"epochs": 1},
    }
    spec_file = folder / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(document))
    return spec_file
