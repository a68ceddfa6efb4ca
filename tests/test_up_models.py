"""`nnserve up --models` without a model server: the names it refuses before anything starts,
the models it serves, and the view of the record it serves them from. What it serves once up is
in tests/gateway/test_served_set.py."""

import contextlib
import logging
import time
from pathlib import Path

import pytest
from support import free_port, refused_start, wait_until

from service import served_view, serving_config, up


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


def test_the_spec_model_is_served_with_those_named_even_before_it_is_trained(repo_and_spec):
    repo, _ = repo_and_spec
    record = repo / "models.config"
    assert up._chosen(["beta"], "alpha", repo, record) == {"alpha", "beta"}
    assert up._chosen(["beta"], "untrained", repo, record) == {"untrained", "beta"}


def test_the_view_follows_the_record_keeps_the_last_good_one_and_is_removed(tmp_path, caplog):
    record, view = tmp_path / "models.config", tmp_path / "models.config.up-8500"
    for model in ("a", "b"):
        serving_config.promote(record, model, 1, tmp_path / model, None)

    def served() -> dict[str, dict[str, int]]:
        config = serving_config.read(view)
        return {item.name: dict(item.version_labels) for item in config.model_config_list.config}

    with served_view.mirrored(record, view, {"a"}) as path:
        assert path == view and served() == {"a": {"stable": 1}}
        serving_config.promote(record, "a", 2, tmp_path / "a", None)
        serving_config.promote(record, "b", 2, tmp_path / "b", None)
        promoted = {"a": {"stable": 2, "previous": 1}}
        wait_until(lambda: served() == promoted, 10, "the view to follow the record")
        with caplog.at_level(logging.WARNING, logger=served_view.__name__):
            broken = tmp_path / "broken"
            broken.write_text("model_config_list { nonsense }")
            broken.replace(record)  # whole, as every writer of the record replaces it
            wait_until(lambda: caplog.records, 10, "a warning that the record is unreadable")
            time.sleep(3 * served_view.POLL_SECONDS)  # more looks at the same broken record
        (warning,) = caplog.records
        assert warning.getMessage().startswith(f"{record} is not a ModelServerConfig")
        assert served() == promoted  # the last good view stays
        serving_config.write(record, serving_config.Config())
        wait_until(lambda: served() == {}, 10, "the view of the mended record")
    assert not view.exists()


def test_the_view_names_the_models_it_keeps_and_promotions_learn_which_it_leaves_out(tmp_path):
    record = tmp_path / "models.config"
    view = served_view.path_for(record, 8500)
    serving_config.promote(record, "a", 1, tmp_path / "a", None)
    odd = 'line\nbreak "quoted"'  # a folder name may hold anything but a slash
    with served_view.mirrored(record, view, {"a", odd}):
        assert served_view.chosen_models(view.read_text()) == {"a", odd}
        assert serving_config.read(view) == serving_config.read(record)  # the comment is no entry
        assert served_view.leaves_out(record, "localhost:8500", "a") is None
        assert served_view.leaves_out(record, "localhost:8500", "b") == (
            f"the model server at localhost:8500 serves only a, {odd} (`nnserve up --models`), "
            "not b"
        )
        assert served_view.leaves_out(record, "localhost:8501", "b") is None  # another server
    assert served_view.chosen_models(record.read_text()) is None  # the record is no view
    assert served_view.leaves_out(record, "localhost:8500", "b") is None  # up has stopped


def test_up_without_models_removes_a_view_a_killed_up_left_on_its_port(tmp_path):
    record = tmp_path / "models.config"
    serving_config.write(record, serving_config.Config())
    stale = served_view.path_for(record, 8500)
    with served_view.mirrored(record, stale, {"a"}):
        left_behind = stale.read_text()
    stale.write_text(left_behind)  # as an up killed with SIGKILL leaves it
    assert served_view.leaves_out(record, "localhost:8500", "b") is not None
    with contextlib.ExitStack() as cleanup:
        assert up._served_config(cleanup, record, 8500, chosen=None) == record
    assert not stale.exists()
    assert served_view.leaves_out(record, "localhost:8500", "b") is None


def test_a_view_that_is_not_text_leaves_nothing_out(tmp_path):
    record = tmp_path / "models.config"
    served_view.path_for(record, 8500).write_bytes(b"# nnserve up --models serves only: [\xff]\n")
    assert served_view.leaves_out(record, "localhost:8500", "b") is None
