"""The registry commands without a model server (`nnserve models / promote / rollback` as real
subprocesses) and pruning; tests/serving/ runs them against a model server."""

import json
import subprocess
from pathlib import Path

import pytest
from support import free_port, nnserve

from service import model_repository, registry, serving_config
from service.serving_config import PREVIOUS, STABLE


def add_version(repo: Path, model: str, version: int, complete: bool = True, **metadata) -> Path:
    path = repo / model / str(version)
    (path / "variables").mkdir(parents=True)
    if complete:
        (path / "saved_model.pb").write_bytes(b"graph")
    if metadata:
        (path / model_repository.METADATA_PATH).parent.mkdir()
        (path / model_repository.METADATA_PATH).write_text(json.dumps(metadata))
    return path


def run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """`nnserve ARGS` on `repo`, with no model server at NNSERVE_TFSERVING_ADDR."""
    env = {
        "NNSERVE_MODEL_REPO": str(repo),
        "NNSERVE_TFSERVING_ADDR": f"127.0.0.1:{free_port()}",
    }
    process = nnserve(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def labels_in(repo: Path, model: str) -> dict[str, int]:
    return serving_config.labels(serving_config.read(repo / "models.config"), model)


def test_models_lists_versions_labels_and_what_nnserve_json_says(tmp_path):
    add_version(
        tmp_path,
        "digits",
        1,
        metrics={"test_accuracy": 0.98125, "test_loss": 0.07},
        dataset_fingerprint="ab" * 32,
        created_at="2026-11-29T03:00:12+00:00",
        flow_run_id="0a1b2c3d-4e5f",
    )
    add_version(tmp_path, "digits", 2, decision={"accepted": False, "reason": "worse: 0.9 < 0.98"})
    add_version(tmp_path, "digits", 3, complete=False)
    assert run(tmp_path, "promote", "digits", "1").returncode == 0

    listing = run(tmp_path, "models", "--json")
    assert listing.returncode == 0, listing.stderr
    (digits,) = json.loads(listing.stdout)["models"]
    assert digits["labels"] == {STABLE: 1}
    versions = {v["version"]: v for v in digits["versions"]}
    assert [v["version"] for v in digits["versions"]] == [3, 2, 1]
    assert versions[1] == {
        "version": 1,
        "complete": True,
        "served": True,
        "labels": [STABLE],
        "metrics": {"test_accuracy": 0.98125, "test_loss": 0.07},
        "dataset_fingerprint": "ab" * 32,
        "created_at": "2026-11-29T03:00:12+00:00",
        "flow_run_id": "0a1b2c3d-4e5f",
        "decision": None,
        "metadata_error": None,
    }
    assert versions[2]["decision"] == {"accepted": False, "reason": "worse: 0.9 < 0.98"}
    assert (versions[2]["served"], versions[3]["complete"]) == (False, False)

    table = run(tmp_path, "models", "digits").stdout.splitlines()
    assert table[0] == f"digits  {tmp_path / 'digits'}"
    assert table[1].split() == [
        "VERSION",
        "LABELS",
        "SERVED",
        "METRICS",
        "DATASET",
        "CREATED",
        "FLOW",
        "RUN",
        "NOTE",
    ]
    assert table[2].split() == ["3", "-", "no", "-", "-", "-", "-", "incomplete"]
    assert table[3].split()[:3] == ["2", "-", "no"] and "rejected: worse: 0.9 < 0.98" in table[3]
    assert table[4].split() == [
        "1",
        STABLE,
        "yes",
        "test_accuracy=0.9812",
        "test_loss=0.07",
        "abababababab",
        "2026-11-29T03:00:12+00:00",
        "0a1b2c3d",
    ]


def test_models_names_an_unknown_model(tmp_path):
    result = run(tmp_path, "models", "nope")
    assert result.returncode == 2
    assert f"there is no model nope in {tmp_path} or in the model config" in result.stderr


def test_promote_refuses_incomplete_and_rejected_versions_unless_forced(tmp_path):
    add_version(tmp_path, "m", 1)
    add_version(tmp_path, "m", 2, decision={"accepted": False, "reason": "accuracy 0.5 < 0.9"})
    add_version(tmp_path, "m", 3, complete=False)
    assert run(tmp_path, "promote", "m", "1").returncode == 0
    for version, message in (
        ("2", "version 2 of m was rejected: accuracy 0.5 < 0.9 (--force promotes it anyway)"),
        ("3", f"version 3 of m is incomplete: {tmp_path / 'm' / '3'} has no saved_model.pb"),
        ("7", f"model m has no version 7 in {tmp_path / 'm'}"),
    ):
        result = run(tmp_path, "promote", "m", version)
        assert (result.returncode, result.stderr.strip()) == (
            2,
            f"nnserve promote: error: {message}",
        )
        assert labels_in(tmp_path, "m") == {STABLE: 1}
    forced = run(tmp_path, "promote", "m", "2", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "m version 2 is stable (previous: 1; served: 1, 2)" in forced.stdout
    assert labels_in(tmp_path, "m") == {STABLE: 2, PREVIOUS: 1}


def test_a_second_rollback_says_there_is_no_previous_version(tmp_path):
    for version in (1, 2):
        add_version(tmp_path, "m", version)
        assert run(tmp_path, "promote", "m", str(version)).returncode == 0
    first = run(tmp_path, "rollback", "m")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("m version 1 is stable again; no previous version is left")
    config = serving_config.read(tmp_path / "models.config")
    assert serving_config.served_versions(config, "m", [1, 2]) == {1}
    second = run(tmp_path, "rollback", "m")
    assert second.returncode == 2
    assert second.stderr.strip() == (
        "nnserve rollback: error: model m has no previous version to roll back to "
        "(stable is version 1)"
    )
    assert labels_in(tmp_path, "m") == {STABLE: 1}


def test_rollback_without_a_config_file_names_the_file(tmp_path):
    result = run(tmp_path, "rollback", "m")
    assert result.returncode == 2
    assert f"there is no model config file at {tmp_path / 'models.config'}" in result.stderr


@pytest.mark.parametrize("command", ["models", "promote", "rollback"])
def test_help_names_the_settings_read(command):
    process = nnserve(command, "--help", stdout=subprocess.PIPE, text=True)
    text = " ".join(process.communicate(timeout=60)[0].split())
    assert process.returncode == 0
    assert "NNSERVE_MODEL_CONFIG_FILE" in text and "NNSERVE_MODEL_REPO" in text
    if command != "models":
        assert "NNSERVE_TFSERVING_ADDR" in text


# Pruning


def test_prune_keeps_the_newest_and_every_labelled_or_served_version(tmp_path):
    for version in range(1, 9):
        add_version(tmp_path, "m", version, complete=version != 6)
    (tmp_path / "m" / ".incoming-3f2a").mkdir()
    config = serving_config.wire.ModelServerConfig()
    for version in (2, 3):
        staged = serving_config.stage(config, "m", version, tmp_path / "m")
        config = serving_config.settle(serving_config.label_stable(staged, "m", version), "m")
    config = serving_config.stage(config, "m", 4, tmp_path / "m")  # staged, not yet labelled
    assert serving_config.labels(config, "m") == {STABLE: 3, PREVIOUS: 2}

    deleted = registry.prune(tmp_path, "m", keep=2, config=config)

    assert deleted == [1, 5, 6]
    assert sorted(model_repository.list_versions(tmp_path / "m")) == [2, 3, 4, 7, 8]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        ".incoming-3f2a",
        "2",
        "3",
        "4",
        "7",
        "8",
    ]
    assert registry.prune(tmp_path, "m", keep=2, config=config) == []


def test_prune_of_a_model_the_config_lists_as_all_versions_deletes_nothing(tmp_path):
    for version in (1, 2, 3):
        add_version(tmp_path, "m", version)
    config = serving_config.stage(serving_config.wire.ModelServerConfig(), "m", 1, tmp_path / "m")
    serving_config.entry(config, "m").model_version_policy.all.SetInParent()
    assert registry.prune(tmp_path, "m", keep=1, config=config) == []
    with pytest.raises(ValueError, match="keep must be at least 1, got 0"):
        registry.prune(tmp_path, "m", keep=0, config=config)
