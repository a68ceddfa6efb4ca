"""docker/tfserving_config.py: the model config Compose's TF Serving polls gains every model that
has a complete version, labelled stable, keeps the versions and labels of the models it lists,
and is a file TF Serving's own parser takes. Here no model server answers; tests/promotion runs
the script against one."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from deploy.helpers import REPO_ROOT, TFSERVING_CONFIG_SCRIPT, load_tfserving_config
from google.protobuf import text_format
from support import free_port, wait_until
from tensorflow_serving.config import model_server_config_pb2

from service import serving_config

tfserving_config = load_tfserving_config()


def add_version(repo: Path, model: str, version: str, complete: bool = True) -> Path:
    path = repo / model / version
    (path / "variables").mkdir(parents=True)
    if complete:
        (path / "saved_model.pb").write_bytes(b"graph")
    return path


def parse(text: str) -> dict[str, tuple]:
    """Each model's (base path, platform, served versions, labels), by TF Serving's own proto."""
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    return {
        entry.name: (
            entry.base_path,
            entry.model_platform,
            list(entry.model_version_policy.specific.versions),
            dict(entry.version_labels),
        )
        for entry in config.model_config_list.config
    }


def test_adds_only_models_with_a_complete_version_their_newest_stable(tmp_path):
    add_version(tmp_path, "digits-cnn", "1")
    add_version(tmp_path, "digits-cnn", "2")
    add_version(tmp_path, "half-done", "2", complete=False)
    add_version(tmp_path, "half-done", ".incoming-3f2a")
    (tmp_path / "empty").mkdir()
    (tmp_path / ".hidden").mkdir()
    output = tmp_path / "models.config"
    assert tfserving_config.update(tmp_path, output, None, 5) == ["digits-cnn"]
    assert parse(output.read_text()) == {
        "digits-cnn": (str(tmp_path / "digits-cnn"), "tensorflow", [2], {"stable": 2})
    }


def test_keeps_the_versions_and_labels_of_the_models_it_lists(tmp_path):
    for version in ("1", "2", "3"):
        add_version(tmp_path, "m", version)
    output = tmp_path / "models.config"
    for version in (1, 2):
        serving_config.promote(output, "m", version, tmp_path / "m", None)
    listed = parse(output.read_text())["m"]
    add_version(tmp_path, 'odd "name"', "4")
    assert tfserving_config.update(tmp_path, output, None, 5) == ['odd "name"']
    assert parse(output.read_text()) == {
        "m": listed,
        'odd "name"': (str(tmp_path / 'odd "name"'), "tensorflow", [4], {"stable": 4}),
    }
    assert listed == (str(tmp_path / "m"), "tensorflow", [1, 2], {"stable": 2, "previous": 1})
    mtime = output.stat().st_mtime_ns
    assert tfserving_config.update(tmp_path, output, None, 5) == []
    assert output.stat().st_mtime_ns == mtime  # nothing to add: not rewritten
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        ".models.config.lock",
        "models.config",
    ]


def test_an_empty_repository_gives_an_empty_list(tmp_path):
    output = tmp_path / "models.config"
    assert tfserving_config.update(tmp_path, output, None, 5) == []
    assert output.read_text() == "model_config_list {\n}\n"
    assert parse(output.read_text()) == {}


def run_script(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, str(TFSERVING_CONFIG_SCRIPT), *args], env=env, text=True, **popen
    )


def test_watch_adds_a_model_once_its_first_version_is_published(tmp_path):
    add_version(tmp_path, "digits-cnn", "1")
    output = tmp_path / "models.config"
    nobody = f"127.0.0.1:{free_port()}"
    watcher = run_script(
        "--repo", str(tmp_path), "--model-server", nobody, "--watch", "0.2", stdout=subprocess.PIPE
    )
    try:
        wait_until(output.exists, 30, "the first config", watcher)
        assert list(parse(output.read_text())) == ["digits-cnn"]
        add_version(tmp_path, "iris-mlp", "1")
        wait_until(lambda: "iris-mlp" in parse(output.read_text()), 30, "iris-mlp", watcher)
        assert parse(output.read_text())["iris-mlp"] == (
            str(tmp_path / "iris-mlp"),
            "tensorflow",
            [1],
            {"stable": 1},
        )
    finally:
        watcher.kill()
        watcher.wait()
    assert f"{output}: serving iris-mlp version 1 (stable)" in watcher.stdout.read()


def test_watch_stops_on_sigterm_between_looks(tmp_path):
    """`docker compose down` sends SIGTERM to the container's main process, which has no default
    handling for it: the watcher must stop by itself, not wait to be killed."""
    add_version(tmp_path, "digits-cnn", "1")
    output = tmp_path / "models.config"
    watcher = run_script(
        "--repo", str(tmp_path), "--model-server", f"127.0.0.1:{free_port()}", "--watch", "60"
    )
    try:
        wait_until(output.exists, 30, "the first config", watcher)
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(timeout=20) == 0
    finally:
        watcher.kill()
        watcher.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--watch", "0"], "--watch takes a positive number of seconds, got 0.0"),
        (["--output", "/no/such/dir/models.config"], "/no/such/dir is not a directory"),
    ],
)
def test_bad_arguments_are_named(tmp_path, args, message):
    process = run_script("--repo", str(tmp_path), *args, stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert message in stderr


def test_a_config_it_cannot_read_is_an_error_naming_it(tmp_path):
    add_version(tmp_path, "m", "1")
    (tmp_path / "models.config").write_text("model_config_list { config { nme: 'm' } }")
    process = run_script(
        "--repo",
        str(tmp_path),
        "--model-server",
        f"127.0.0.1:{free_port()}",
        stderr=subprocess.PIPE,
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"{tmp_path / 'models.config'} is not a ModelServerConfig in text format" in stderr
