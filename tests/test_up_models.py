"""`nnserve up --models` refuses, before anything starts, a name it could not serve. What it
serves once up is in tests/gateway/test_served_set.py."""

from pathlib import Path

import pytest
from support import free_port, refused_start


def fake_version(repo: Path, model: str, version: int) -> None:
    """A complete version as far as the repository's layout tells: nothing here loads it."""
    (repo / model / str(version)).mkdir(parents=True)
    (repo / model / str(version) / "saved_model.pb").touch()


@pytest.fixture
def repo_and_spec(tmp_path) -> tuple[Path, Path]:
    repo = tmp_path / "models"
    fake_version(repo, "alpha", 1)
    fake_version(repo, "beta", 3)
    spec = tmp_path / "alpha.yaml"
    spec.write_text(
        "name: alpha\ndataset: {name: iris}\nmodel: {architecture: mlp}\ntraining: {epochs: 1}\n"
    )
    return repo, spec


def refused_up(repo: Path, spec: Path, *options: str) -> str:
    return refused_start(
        "up",
        "--spec",
        str(spec),
        "--grpc-port",
        str(free_port()),
        "--http-port",
        str(free_port()),
        "--engine",
        "embedded",
        *options,
        env={"NNSERVE_MODEL_REPO": str(repo)},
        timeout=60,
    )


def test_a_model_neither_on_disk_nor_in_the_model_config_is_refused(repo_and_spec):
    repo, spec = repo_and_spec
    stderr = refused_up(repo, spec, "--models", "beta,gamma", "--models", "delta")
    assert stderr == (
        f"nnserve up: error: --models: no model named delta, gamma in the model repository "
        f"{repo} or its model config; models there: alpha, beta\n"
    )
    assert sorted(path.name for path in repo.iterdir()) == ["alpha", "beta"]  # no config made


def test_an_empty_name_is_refused(repo_and_spec):
    stderr = refused_up(*repo_and_spec, "--models", "alpha,,beta")
    assert "argument --models: expected model names separated by commas" in stderr
    assert "got 'alpha,,beta'" in stderr
