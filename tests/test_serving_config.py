"""service/serving_config.py without a model server: the file, and the steps of a promotion and a
rollback as transformations of the config (the model server's side is in tests/serving/)."""

import os
import stat

import pytest
from google.protobuf import text_format
from support import free_port
from tensorflow_serving.config import model_server_config_pb2

from service import serving_config, wire
from service.model_status import ModelStatusClient
from service.serving_config import PREVIOUS, STABLE, ServingConfigError


def config_of(*models: tuple[str, list[int], dict[str, int]]) -> wire.ModelServerConfig:
    """A config with these (name, served versions, labels), base paths under /models."""
    config = wire.ModelServerConfig()
    config.model_config_list.SetInParent()
    for name, versions, labels in models:
        item = config.model_config_list.config.add(
            name=name, base_path=f"/models/{name}", model_platform="tensorflow"
        )
        item.model_version_policy.specific.versions.extend(versions)
        item.version_labels.update(labels)
    return config


def served(config: wire.ModelServerConfig, model: str) -> list[int]:
    return sorted(serving_config.entry(config, model).model_version_policy.specific.versions)


def state(config: wire.ModelServerConfig, model: str) -> tuple[list[int], dict[str, int]]:
    return served(config, model), serving_config.labels(config, model)


# The steps of a promotion


def test_stage_lists_a_new_model_with_its_first_version(tmp_path):
    staged = serving_config.stage(wire.ModelServerConfig(), "m", 1, tmp_path / "m")
    item = serving_config.entry(staged, "m")
    assert (item.base_path, item.model_platform) == (str(tmp_path / "m"), "tensorflow")
    assert state(staged, "m") == ([1], {})


def test_stage_adds_the_version_beside_those_served_and_changes_nothing_else():
    config = config_of(("m", [1, 2], {STABLE: 2, PREVIOUS: 1}), ("other", [5], {STABLE: 5}))
    staged = serving_config.stage(config, "m", 3, "/models/m")
    assert state(staged, "m") == ([1, 2, 3], {STABLE: 2, PREVIOUS: 1})
    assert state(staged, "other") == ([5], {STABLE: 5})
    assert state(config, "m") == ([1, 2], {STABLE: 2, PREVIOUS: 1})  # a copy was changed
    assert serving_config.stage(staged, "m", 3, "/models/m") == staged


def test_stage_turns_a_latest_policy_into_the_labelled_versions_and_the_new_one():
    config = config_of(("m", [], {STABLE: 4}))
    serving_config.entry(config, "m").model_version_policy.latest.num_versions = 2
    assert state(serving_config.stage(config, "m", 7, "/models/m"), "m") == ([4, 7], {STABLE: 4})


def test_stage_refuses_another_base_path_for_a_listed_model():
    with pytest.raises(ServingConfigError, match="served from /models/m, not from /elsewhere/m"):
        serving_config.stage(config_of(("m", [1], {})), "m", 2, "/elsewhere/m")


def test_label_stable_moves_stable_and_keeps_the_old_one_as_previous():
    first = serving_config.label_stable(config_of(("m", [1], {})), "m", 1)
    assert serving_config.labels(first, "m") == {STABLE: 1}
    second = serving_config.label_stable(config_of(("m", [1, 2], {STABLE: 1})), "m", 2)
    assert serving_config.labels(second, "m") == {STABLE: 2, PREVIOUS: 1}
    third = serving_config.label_stable(
        config_of(("m", [1, 2, 3], {STABLE: 2, PREVIOUS: 1})), "m", 3
    )
    assert state(third, "m") == ([1, 2, 3], {STABLE: 3, PREVIOUS: 2})
    again = serving_config.label_stable(third, "m", 3)
    assert serving_config.labels(again, "m") == {STABLE: 3, PREVIOUS: 2}


def test_label_stable_refuses_a_version_that_is_not_served():
    with pytest.raises(ServingConfigError, match="version 3 of model m is not among its served"):
        serving_config.label_stable(config_of(("m", [1, 2], {STABLE: 2})), "m", 3)
    with pytest.raises(ServingConfigError, match="model nope is not in the model config"):
        serving_config.label_stable(config_of(("m", [1], {})), "nope", 1)


def test_settle_serves_exactly_stable_and_previous():
    config = config_of(("m", [1, 2, 3], {STABLE: 3, PREVIOUS: 2}))
    assert state(serving_config.settle(config, "m"), "m") == ([2, 3], {STABLE: 3, PREVIOUS: 2})
    first = config_of(("m", [1], {STABLE: 1}))
    assert state(serving_config.settle(first, "m"), "m") == ([1], {STABLE: 1})
    with pytest.raises(ServingConfigError, match="model m has no stable version"):
        serving_config.settle(config_of(("m", [1], {})), "m")


def test_rolled_back_makes_previous_stable_and_stops_serving_the_old_stable():
    config = config_of(("m", [2, 3], {STABLE: 3, PREVIOUS: 2}))
    back = serving_config.rolled_back(config, "m")
    assert state(back, "m") == ([2], {STABLE: 2})
    with pytest.raises(ServingConfigError) as second:
        serving_config.rolled_back(back, "m")
    assert str(second.value) == (
        "model m has no previous version to roll back to (stable is version 2)"
    )


def test_promote_without_a_model_server_writes_the_three_steps_at_once(tmp_path):
    config_file = tmp_path / "models.config"
    for version in (1, 2, 3):
        promotion = serving_config.promote(config_file, "m", version, tmp_path / "m", None)
        assert (promotion.version, promotion.confirmed_available) == (version, False)
    assert promotion.previous == 2 and promotion.served == (2, 3)
    assert state(serving_config.read(config_file), "m") == ([2, 3], {STABLE: 3, PREVIOUS: 2})
    serving_config.promote(config_file, "m", 3, tmp_path / "m", None)  # already stable: as it was
    assert state(serving_config.read(config_file), "m") == ([2, 3], {STABLE: 3, PREVIOUS: 2})


def test_promote_without_a_model_server_at_the_address_writes_at_once(tmp_path):
    config_file = tmp_path / "models.config"
    with ModelStatusClient(f"127.0.0.1:{free_port()}", timeout_seconds=5) as nobody:
        promotion = serving_config.promote(config_file, "m", 1, tmp_path / "m", nobody)
    assert not promotion.confirmed_available
    assert state(serving_config.read(config_file), "m") == ([1], {STABLE: 1})


def test_only_models_keeps_the_named_entries_whole_and_nothing_else():
    config = config_of(
        ("a", [1, 2], {STABLE: 2, PREVIOUS: 1}), ("b", [5], {STABLE: 5}), ("c", [3], {STABLE: 3})
    )
    view = serving_config.only_models(config, {"c", "a", "absent"})
    assert [item.name for item in view.model_config_list.config] == ["a", "c"]
    assert serving_config.entry(view, "a") == serving_config.entry(config, "a")
    assert serving_config.entry(view, "c") == serving_config.entry(config, "c")
    assert [item.name for item in config.model_config_list.config] == ["a", "b", "c"]  # a copy
    assert list(serving_config.only_models(config, ()).model_config_list.config) == []


def test_add_missing_models_adds_only_those_asked_for(tmp_path):
    repo = tmp_path / "models"
    for model, version in (("a", 1), ("b", 2), ("b", 4)):
        (repo / model / str(version)).mkdir(parents=True)
        (repo / model / str(version) / "saved_model.pb").touch()
    config_file = repo / "models.config"
    added = serving_config.add_missing_models(config_file, repo, None, only={"b", "elsewhere"})
    assert [(promotion.model, promotion.version) for promotion in added] == [("b", 4)]
    config = serving_config.read(config_file)
    assert [item.name for item in config.model_config_list.config] == ["b"]
    assert state(config, "b") == ([4], {STABLE: 4})
    serving_config.add_missing_models(config_file, repo, None)
    assert state(serving_config.read(config_file), "a") == ([1], {STABLE: 1})


# The file


def test_the_written_file_is_parsed_by_tf_servings_own_proto_without_loss(tmp_path):
    config = config_of(("digits-cnn", [2, 3], {STABLE: 3, PREVIOUS: 2}), ('odd "name"', [1], {}))
    config_file = tmp_path / "models.config"
    serving_config.write(config_file, config)
    official = text_format.Parse(
        config_file.read_text(), model_server_config_pb2.ModelServerConfig()
    )
    # Same field numbers: the same bytes mean nothing was lost or renamed on the way.
    assert official.SerializeToString(deterministic=True) == config.SerializeToString(
        deterministic=True
    )
    item = official.model_config_list.config[0]
    assert list(item.model_version_policy.specific.versions) == [2, 3]
    assert dict(item.version_labels) == {STABLE: 3, PREVIOUS: 2}
    assert serving_config.read(config_file) == config


def test_writes_replace_the_file_whole_and_leave_only_it_and_its_lock(tmp_path):
    config_file = tmp_path / "models.config"
    serving_config.update(config_file, lambda c: serving_config.stage(c, "m", 1, tmp_path / "m"))
    inode = config_file.stat().st_ino
    serving_config.update(config_file, lambda c: serving_config.stage(c, "m", 2, tmp_path / "m"))
    assert config_file.stat().st_ino != inode  # renamed into place, not rewritten in place
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == [".models.config.lock", "models.config"]


def test_an_empty_config_is_written_with_its_model_list(tmp_path):
    config_file = tmp_path / "models.config"
    serving_config.update(config_file, lambda config: config)
    assert config_file.read_text() == "model_config_list {\n}\n"


def test_reading_errors_name_the_file(tmp_path):
    config_file = tmp_path / "models.config"
    with pytest.raises(ServingConfigError, match=f"there is no model config file at {config_file}"):
        serving_config.read(config_file)
    assert serving_config.read(config_file, missing_ok=True) == wire.ModelServerConfig()
    config_file.write_text("model_config_list { config { nme: 'm' } }")
    with pytest.raises(ServingConfigError, match=f"{config_file} is not a ModelServerConfig"):
        serving_config.read(config_file)


def test_a_file_that_is_not_text_is_no_model_config(tmp_path):
    config_file = tmp_path / "models.config"
    config_file.write_bytes(b"model_config_list { config { name: '\xff' } }")
    with pytest.raises(ServingConfigError, match=f"{config_file} is not a ModelServerConfig"):
        serving_config.read(config_file)


def test_served_versions_follow_the_policy(tmp_path):
    config = config_of(("m", [1, 3, 9], {STABLE: 3}), ("latest", [], {}))
    serving_config.entry(config, "latest").ClearField("model_version_policy")
    assert serving_config.served_versions(config, "m", [1, 2, 3, 4]) == {1, 3}
    assert serving_config.served_versions(config, "latest", [1, 2, 3, 4]) == {4}
    assert serving_config.served_versions(config, "absent", [1]) == set()
