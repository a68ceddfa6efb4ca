"""docker/tfserving_config.py: the model config compose's TF Serving polls lists exactly the models
that have a complete version, in a file TF Serving's own parser takes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from deploy.helpers import REPO_ROOT, TFSERVING_CONFIG_SCRIPT, load_tfserving_config
from google.protobuf import text_format
from support import wait_until
from tensorflow_serving.config import model_server_config_pb2

tfserving_config = load_tfserving_config()


def add_version(repo: Path, model: str, version: str, complete: bool = True) -> Path:
    path = repo / model / version
    (path / "variables").mkdir(parents=True)
    if complete:
        (path / "saved_model.pb").write_bytes(b"graph")
    return path


def parse(text: str) -> dict[str, tuple[str, str]]:
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    return {
        entry.name: (entry.base_path, entry.model_platform)
        for entry in config.model_config_list.config
    }


def test_lists_only_models_with_a_complete_version(tmp_path):
    add_version(tmp_path, "digits-cnn", "1")
    add_version(tmp_path, "half-done", "2", complete=False)
    add_version(tmp_path, "half-done", ".incoming-3f2a")
    (tmp_path / "empty").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "models.config").write_text("old")
    assert tfserving_config.served_models(tmp_path) == ["digits-cnn"]


def test_render_is_a_model_server_config_with_absolute_paths(tmp_path):
    text = tfserving_config.render(Path("/models"), ["digits-cnn", 'odd "name"'])
    assert parse(text) == {
        "digits-cnn": ("/models/digits-cnn", "tensorflow"),
        'odd "name"': ('/models/odd "name"', "tensorflow"),
    }


def test_an_empty_repository_gives_an_empty_list(tmp_path):
    assert parse(tfserving_config.render(tmp_path, [])) == {}


def test_rewrites_only_on_change_and_leaves_no_staging_file(tmp_path):
    output = tmp_path / "models.config"
    assert tfserving_config.write_if_changed(output, "a")
    mtime = output.stat().st_mtime_ns
    assert not tfserving_config.write_if_changed(output, "a")
    assert output.stat().st_mtime_ns == mtime
    assert tfserving_config.write_if_changed(output, "b")
    assert output.read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.config"]


def run_script(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, str(TFSERVING_CONFIG_SCRIPT), *args], env=env, text=True, **popen
    )


def test_watch_adds_a_model_once_its_first_version_is_published(tmp_path):
    add_version(tmp_path, "digits-cnn", "1")
    output = tmp_path / "models.config"
    watcher = run_script("--repo", str(tmp_path), "--watch", "0.2", stdout=subprocess.DEVNULL)
    try:
        wait_until(output.exists, 30, "the first config", watcher)
        assert list(parse(output.read_text())) == ["digits-cnn"]
        add_version(tmp_path, "iris-mlp", "1")
        wait_until(lambda: "iris-mlp" in parse(output.read_text()), 30, "iris-mlp", watcher)
        assert parse(output.read_text())["iris-mlp"] == (str(tmp_path / "iris-mlp"), "tensorflow")
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
