"""A real `nnserve train` killed with SIGKILL mid-run and started again continues from its last
checkpoint: the epochs already done are not trained again and the optimizer state carries on."""

import csv
import json
import math
import signal
import subprocess

import keras
from support import nnserve, wait_until

from pipeline.datasets import load_dataset
from pipeline.preprocess import split_dataset
from pipeline.spec import load_spec

EPOCHS = 5
BATCH_SIZE = 8
SPEC = f"""\
name: resume-digits
dataset: {{name: digits, max_examples: 600}}
model: {{architecture: simple-cnn, conv_filters: [16, 16], dense_units: 32}}
optimizer: {{name: sgd, momentum: 0.9, learning_rate: 0.01}}
training: {{epochs: {EPOCHS}, batch_size: {BATCH_SIZE}, seed: 3}}
"""


def checkpointed_epoch(runs_dir) -> int:
    for metadata in runs_dir.glob("resume-digits/*/checkpoint/training_metadata.json"):
        try:
            return json.loads(metadata.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            return 0  # being written right now
    return 0


def test_a_run_killed_mid_epoch_resumes_from_its_last_checkpoint(prefect_api, tmp_path):
    from prefect.settings import PREFECT_API_URL

    spec_path = tmp_path / "resume-digits.yaml"
    spec_path.write_text(SPEC)
    runs_dir, repo = tmp_path / "runs", tmp_path / "models"
    env = {
        "NNSERVE_RUNS_DIR": str(runs_dir),
        "NNSERVE_MODEL_REPO": str(repo),
        # The session's Prefect API: no ephemeral one to start in each process.
        "PREFECT_API_URL": PREFECT_API_URL.value(),
    }

    first = nnserve(
        "train", str(spec_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(
            lambda: checkpointed_epoch(runs_dir) >= 1, 600, "a checkpoint after epoch 1", first
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    killed_after = checkpointed_epoch(runs_dir)
    assert 1 <= killed_after < EPOCHS
    assert not repo.exists()  # nothing was published by the killed run
    (run_dir,) = (runs_dir / "resume-digits").iterdir()

    second = nnserve(
        "train",
        str(spec_path),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = second.communicate(timeout=600)

    assert second.returncode == 0, output
    assert f"in {EPOCHS} epochs (resumed after epoch {killed_after})" in output
    # The progress bar shows the resumed epochs only, each finished.
    assert f"epoch {killed_after:>3}/{EPOCHS} [" not in output
    assert f"epoch {EPOCHS:>3}/{EPOCHS} [{'#' * 30}]" in output
    assert list((runs_dir / "resume-digits").iterdir()) == [run_dir]  # the same run continued
    assert (repo / "resume-digits" / "1" / "saved_model.pb").is_file()
    with open(run_dir / "history.csv", newline="") as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs[-(EPOCHS - killed_after) :] == list(range(killed_after, EPOCHS))

    # Had the optimizer restarted from zero, it would count only the resumed run's steps.
    spec = load_spec(spec_path)
    train = split_dataset(load_dataset(spec.dataset), spec.dataset).train
    steps_per_epoch = math.ceil(len(train.targets) / BATCH_SIZE)
    model = keras.saving.load_model(run_dir / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == EPOCHS * steps_per_epoch
