"""`nnserve train` checks the spec and its dataset files before it imports TensorFlow or Prefect:
a mistake is one line, exit code 2, and none of the heavy imports (whose cost made a typo wait
half a minute) has happened, as Python's own import log (-X importtime) shows."""

import os
import re
import subprocess
import sys

import pytest
from support import REPO_ROOT, TEST_QUIETING

HEAVY = ("tensorflow", "keras", "prefect")
# A line of -X importtime's log: self and cumulative microseconds, then the indented module name.
_TOP_LEVEL_IMPORT = r"^import time:\s+\d+ \|\s+\d+ \|\s+(\w+)"

VALID = """\
name: tiny
dataset: {DATASET}
model: {architecture: mlp}
training: {epochs: 1}
"""


def _train(spec_path) -> tuple[int, str, set[str]]:
    """Exit code, the error line, and the top-level packages imported."""
    process = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "service.cli", "train", str(spec_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    imported = set(re.findall(_TOP_LEVEL_IMPORT, process.stderr, re.M))
    errors = [line for line in process.stderr.splitlines() if not line.startswith("import time")]
    return process.returncode, "\n".join(errors), imported


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not read before training")
    return folder


@pytest.mark.parametrize(
    ("dataset", "problem"),
    [
        (
            "{name: digits}\nretraining: {cron: '0 3 * *'}",
            'retraining.cron: Value error, Invalid cron string: "0 3 * *"',
        ),
        ("{name: digits, seed: x}", "dataset.seed: Input should be a valid integer"),
        (
            "{name: image-list, path: IMAGES, labels_file: IMAGES/labels.txt, image_size: [8, 8]}",
            "labels.txt:2: expected '<file name> <label>', got 'b.png'",
        ),
        (
            "{name: image-list, path: IMAGES, labels_file: IMAGES/more.txt, image_size: [8, 8]}",
            "more.txt:2: no image file 'c.png' in",
        ),
        ("{name: image-folder, path: IMAGES, image_size: [8, 8]}", "expected one subfolder"),
        ("{name: csv-table, path: IMAGES/table.csv, target: y}", "no column 'y'; the columns"),
    ],
    ids=["cron", "type", "labels-line", "labels-file", "class-folders", "csv-column"],
)
def test_a_bad_spec_is_one_line_before_any_heavy_import(tmp_path, images, dataset, problem):
    (images / "labels.txt").write_text("a.png 1\nb.png\n")
    (images / "more.txt").write_text("a.png 1\nc.png 2\n")
    (images / "table.csv").write_text("x1,x2,label\n1,2,3\n")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(VALID.replace("{DATASET}", dataset.replace("IMAGES", str(images))))

    status, error, imported = _train(spec_path)

    assert status == 2, error
    assert error.startswith("nnserve train: error: ") and "\n" not in error, error
    assert problem in error
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_the_import_log_shows_a_heavy_import():
    """The check above can fail: where Prefect is imported, the import log names it."""
    process = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import service.cli, prefect"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "prefect" in re.findall(_TOP_LEVEL_IMPORT, process.stderr, re.M)


def test_a_dataset_that_fails_to_load_is_one_line_without_prefects_traceback(tmp_path):
    """An image that cannot be read is found only when the flow loads the data: Prefect logs
    the failed task and flow run with their tracebacks, TensorFlow its notices; the user sees
    the progress line and the error, nothing else."""
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
    (tmp_path / "images" / "a" / "x.png").write_bytes(b"not an image")
    (tmp_path / "images" / "b" / "y.png").write_bytes(b"not an image either")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        VALID.replace(
            "{DATASET}",
            f"{{name: image-folder, path: {tmp_path / 'images'}, image_size: [8, 8], channels: 1}}",
        )
    )
    environment = {
        **os.environ,
        "NNSERVE_MODEL_REPO": str(tmp_path / "models"),
        "NNSERVE_RUNS_DIR": str(tmp_path / "runs"),
    }
    for quieting in TEST_QUIETING:  # what a user's shell does not set
        environment.pop(quieting, None)
    process = subprocess.run(
        [sys.executable, "-m", "service.cli", "train", str(spec_path)],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 2, process.stderr
    assert (
        process.stdout == "tiny: spec and dataset files checked; loading TensorFlow and Prefect\n"
    )
    (error,) = process.stderr.splitlines()
    assert error.startswith("nnserve train: error: ") and "not a readable image" in error
